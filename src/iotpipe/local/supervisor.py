"""``iotpipe local up``: start the emulator and the broker, deploy the env's stack, run the rule and the mapping.

The composition root of ``iotpipe local``: the only module that imports across its rooms (``broker``, ``rules``,
``esm``, ``functions``, the emulator) and wires them together; every process it starts goes through
:mod:`iotpipe.local.processes`.

One supervisor process owns everything it starts: a moto server (``python -m iotpipe.local.moto_server``, with
iotpipe's fixes) and the MQTT broker as child processes that die with it, and in its own threads the topic rule
engine, the event source mapping runners and the function runners' worker processes. It checks every part each
second (:meth:`LocalPipeline.supervise_once`) and writes what it found to the health record
(:mod:`iotpipe.local.health`): a broker that dies is restarted on its port, a mapping whose thread died restarts
from its checkpoints, an idle worker that died or was stopped is discarded; when the emulator or the rule engine
is gone it stops the broker first, so that devices see their publishes fail instead of being acknowledged and
lost, and gives up with a LocalError naming the part. It deploys through the
same code path as ``iotpipe deploy`` (render, lint, change set), then watches the stack: a later ``iotpipe deploy``
into the emulator is picked up (rule, mapping and function are rebuilt from the deployed template), and after
``iotpipe destroy`` nothing runs until the next deploy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from iotpipe.console.serve import DEFAULT_PORT as DEFAULT_CONSOLE_PORT
from iotpipe.errors import LocalError
from iotpipe.local import health as local_health
from iotpipe.local import state as local_state
from iotpipe.local.clients import Clients
from iotpipe.local.health import DEAD, NOT_ANSWERING, OK, STOPPED, HealthRecord, PartHealth
from iotpipe.local.moto_server import ACCESS_KEY_VARIABLE, API_TOKEN_HEADER, API_TOKEN_VARIABLE, QUIET_VARIABLE
from iotpipe.local.processes import (
    bind_error,
    command_line,
    free_port,
    process_alive,
    process_state,
    spawn,
    stop_pid,
    stop_process,
    wait_ready,
)
from iotpipe.local.stack import DeployedStack, load_deployed_stack

if TYPE_CHECKING:
    from botocore.client import BaseClient

    from iotpipe.local.broker import RunningBroker
    from iotpipe.local.esm import MappingRunner, MappingSpec
    from iotpipe.local.functions.follower import HandlerFollower
    from iotpipe.local.functions.runner import FunctionRunner
    from iotpipe.local.functions.telemetry import TelemetrySink

_log = logging.getLogger(__name__)

Progress = Callable[[str], None]
READY_TIMEOUT_S = 30.0
WATCH_INTERVAL_S = 1.0


@dataclass(frozen=True)
class LocalOptions:
    """What ``iotpipe local up`` was asked for."""

    env: str = "local"
    config_path: str | None = None
    aws_port: int = 0
    mqtt_port: int = 0
    broker: str = "auto"
    directory: Path | None = None
    lock_fd: int | None = None  # the directory's lock, already taken by `local up --detach` for this child
    console_port: int | None = DEFAULT_CONSOLE_PORT  # preferred (taken: a free one); None: no console


def _quiet(_: str) -> None:
    """A progress callback that says nothing."""


def check_port_free(port: int, option: str) -> None:
    """LocalError naming ``option`` when ``port`` is taken on 127.0.0.1."""
    if bind_error("127.0.0.1", port) is not None:
        raise LocalError(f"port {port} on 127.0.0.1 is in use; pick another with {option} N, or {option} 0 "
                         "for a free one")


class MotoServer:
    """``python -m iotpipe.local.moto_server`` as a child process that dies with this one."""

    def __init__(self, port: int, log_path: Path, credentials: local_state.LocalCredentials | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", QUIET_VARIABLE: "1"}
        self._token = credentials.aws_secret_access_key if credentials else ""
        if credentials is not None:
            env.update({ACCESS_KEY_VARIABLE: credentials.aws_access_key_id, API_TOKEN_VARIABLE: self._token})
        self.process = spawn([sys.executable, "-m", "iotpipe.local.moto_server", "-H", "127.0.0.1", "-p", str(port)],
                             env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float) -> None:
        """Return once the server answers; LocalError (with its log) if it exits or stays silent."""
        wait_ready(lambda: self.answers(1.0, "data.json"), process=self.process,
                   deadline=time.monotonic() + timeout_s,
                   exited=lambda: LocalError(f"the AWS emulator exited at start (code {self.process.returncode}); "
                                             f"its log: {self._log.name}"),
                   timed_out=lambda: LocalError(f"the AWS emulator did not answer on {self.url} within "
                                                f"{timeout_s:.0f} s; its log: {self._log.name}"))

    def answers(self, timeout_s: float, path: str = "config") -> bool:
        """True when the server answers a cheap request (``/moto-api/<path>``) within ``timeout_s``."""
        try:
            request = urllib.request.Request(f"{self.url}/moto-api/{path}", headers={API_TOKEN_HEADER: self._token})
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                response.read()
            return True
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout_s: float = 3.0) -> None:
        """Terminate the server (kill it if it lingers); idempotent."""
        stop_process(self.process, timeout_s)
        self._log.close()


class ClientCache:
    """One boto3 client per service, made once and shared by the runners' threads (boto3 clients are
    thread-safe; making one loads its service model, which costs tens of milliseconds)."""

    def __init__(self, factory: Clients) -> None:
        self._factory = factory
        self._clients: dict[str, BaseClient] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> BaseClient:
        """The shared client for ``service``."""
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._factory.client(service)
            return self._clients[service]


@dataclass
class _Wiring:
    """What runs for one deployed version of the stack."""

    stack: DeployedStack
    engine: Any  # iotpipe.local.rules.RuleEngine
    runners: list[MappingRunner]
    functions: list[FunctionRunner]
    sinks: list[TelemetrySink]
    provisioning: Any = None  # fleet provisioning by claim (iotpipe.local.provisioning), when the stack has it

    def stop(self) -> None:
        if self.provisioning is not None:
            self.provisioning.stop()
        for runner in self.runners:
            runner.stop()
        self.engine.close()
        for function in self.functions:
            function.close()
        for sink in self.sinks:
            sink.close()


class LocalPipeline:
    """Everything ``iotpipe local up`` starts, in the order it starts it; :meth:`stop` undoes all of it."""

    def __init__(self, options: LocalOptions, progress: Progress = _quiet) -> None:
        self.options = options
        self.progress = progress
        self.directory = options.directory or local_state.state_dir()
        self.moto: MotoServer | None = None
        self.broker: RunningBroker | None = None
        self.state: local_state.LocalState | None = None
        self._wiring: _Wiring | None = None
        self._wiring_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._wake = threading.Event()  # a check is due now: the emulator exited, or stop was asked
        self._watcher: threading.Thread | None = None
        self._console: Any = None  # iotpipe.console.serve.ServedConsole while the console is served
        self._clients: ClientCache | None = None
        self.rewires = 0
        self.unrouted = 0  # messages received while no stack was wired
        self.problems: list[str] = []
        self.credentials = local_state.new_credentials()
        self._lock: local_state.DirectoryLock | None = None
        self.health: HealthRecord | None = None
        self._emulator_misses = 0
        self._failed = False

    # ------------------------------------------------------------------ start

    def start(self) -> local_state.LocalState:
        """Start everything and deploy; the state file is written once all is ready. Stops what it started
        on any failure (or Ctrl-C) before re-raising."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> local_state.LocalState:
        from iotpipe.config import load_config
        from iotpipe.local.emulator.moto_compat.versions import check_tested

        check_tested()
        started = time.monotonic()
        self._lock = local_state.DirectoryLock(self.directory, self.options.lock_fd)
        refuse_if_running(self.directory)
        local_health.remove_health(self.directory)  # a failure a previous run recorded is over
        config = load_config(self.options.config_path, self.options.env)
        for port, option in ((self.options.aws_port, "--aws-port"), (self.options.mqtt_port, "--mqtt-port")):
            if port:
                check_port_free(port, option)
        local_state.ensure_private_dir(self.directory)
        aws_port = self.options.aws_port or free_port()
        local_state.rotate_log(self.directory / "aws.log")
        self.moto = MotoServer(aws_port, self.directory / "aws.log", self.credentials)
        self.progress(f"starting the AWS emulator on {self.moto.url}")
        self.broker = self._start_broker()
        self.progress(f"MQTT broker ({self.broker.kind}) on {self.broker.url}")
        template = self._render(config)  # while the emulator boots: both take seconds
        self.moto.wait_ready(READY_TIMEOUT_S)
        factory = self._clients = ClientCache(self._client_factory(local_state.LOCAL_REGION))
        self._deploy(config, template, factory)
        stack = load_deployed_stack(factory, config.resolved_stack_name)
        if stack is None:
            raise LocalError(f"stack {config.resolved_stack_name} is not in the emulator after the deploy")
        self._wire(stack)
        console_url = self._start_console(config)
        self.state = local_state.LocalState(
            env=config.env, stack_name=config.resolved_stack_name, region=local_state.LOCAL_REGION,
            aws_endpoint=self.moto.url, mqtt=self.broker.url, broker=self.broker.kind, pid=os.getpid(),
            child_pids=self._child_pids(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"), ready=True,
            log_file=str(self.directory / "local.log"), aws_access_key_id=self.credentials.aws_access_key_id,
            aws_secret_access_key=self.credentials.aws_secret_access_key,
            mqtt_username=self.credentials.mqtt_username, mqtt_password=self.credentials.mqtt_password,
            command=command_line(os.getpid()), console_url=console_url)
        self._watcher = threading.Thread(target=self._watch, args=(factory,), name="stack-watch", daemon=True)
        self._watcher.start()
        self.health = HealthRecord(pid=os.getpid(), checked_at=time.time(), parts=self.check_parts())
        local_health.write_health(self.health, self.directory)
        local_state.write_state(self.state, self.directory)
        self.progress(f"ready in {time.monotonic() - started:.1f} s")
        return self.state

    def _start_console(self, config: Any) -> str:
        """Serve ``iotpipe console`` for this env in a thread (its own clients: the pipeline's stay as they are) and
        return its URL with the token; "" when the console is off or its packages are not installed."""
        if self.options.console_port is None:
            return ""
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401

            from iotpipe.console.data import ConsoleData
            from iotpipe.console.serve import bind_preferred, serve_in_thread
        except ImportError:
            self.progress("the console is not served: it needs pip install 'iotpipe[console]'")
            return ""
        data = ConsoleData(config, self._client_factory(local_state.LOCAL_REGION), local=True,
                           cache_dir=self.directory / "console-sql")
        self._console = serve_in_thread(data, bind_preferred("127.0.0.1", self.options.console_port))
        self.progress(f"console on {self._console.url.split('?')[0]}")
        return str(self._console.url)

    def _start_broker(self) -> RunningBroker:
        from iotpipe.local.broker import BrokerSpec, start_broker

        return start_broker(BrokerSpec(kind=self.options.broker, port=self.options.mqtt_port,
                                       username=self.credentials.mqtt_username,
                                       password=self.credentials.mqtt_password),
                            self.directory / "broker", self._on_message)

    def _client_factory(self, region: str) -> local_state.LocalClientFactory:
        """Clients for the emulator with this run's access key."""
        assert self.moto is not None
        return local_state.LocalClientFactory(region=region, endpoint_url=self.moto.url,
                                              access_key_id=self.credentials.aws_access_key_id,
                                              secret_access_key=self.credentials.aws_secret_access_key)

    def _on_message(self, topic: str, payload: bytes, client_id: str | None) -> None:
        wiring = self._wiring
        if wiring is not None:
            wiring.engine.on_message(topic, payload, client_id)
            return
        # No stack is wired (destroyed, or being replaced): as on AWS IoT, a message no rule matches is not
        # routed anywhere; say so for every one, since the device's publish was acknowledged.
        self.unrouted += 1
        _log.warning("no topic rule is deployed: the message on %s (%d bytes) matched no rule and was not routed",
                     topic, len(payload))

    def _render(self, config: Any) -> str:
        """The env's template, rendered and linted as ``iotpipe deploy`` does (lint errors refuse it)."""
        from iotpipe.deploy.plan import prepare_template

        self.progress(f"rendering and linting the {config.env} template")
        template, _ = prepare_template(config, region=local_state.LOCAL_REGION)
        return template

    def _deploy(self, config: Any, template: str, factory: Any) -> None:
        """Deploy ``template`` into the emulator through ``iotpipe deploy``'s own plan and execution."""
        from iotpipe.deploy.client import DeployClient
        from iotpipe.deploy.execute import execute_plan
        from iotpipe.deploy.plan import plan_deploy
        from iotpipe.deploy.planner import deploy_request

        client = DeployClient.from_factory(factory)
        plan = plan_deploy(client, deploy_request(config, template), self.progress)
        execute_plan(client, plan, self.progress)

    # ------------------------------------------------------------------ wiring

    def _wire(self, stack: DeployedStack) -> None:
        """Build and start the rule engine, mapping runners and functions of ``stack``; a previous wiring is
        replaced (its mappings stop first, and the new ones resume where they stopped)."""
        from iotpipe.local.functions.runner import FunctionRunner
        from iotpipe.local.functions.spec import function_from_stack
        from iotpipe.local.functions.telemetry import TelemetrySink
        from iotpipe.local.rules import RuleEngine, rule_from_properties

        assert self.moto is not None and self._clients is not None
        rules = [rule_from_properties(stack.properties(logical_id))
                 for logical_id in stack.resources_of_type("AWS::IoT::TopicRule")]
        functions: dict[str, FunctionRunner] = {}
        sinks: list[TelemetrySink] = []
        for logical_id in stack.resources_of_type("AWS::Lambda::Function"):
            spec = function_from_stack(stack, logical_id, self._read_object)
            sink = TelemetrySink(self._clients, spec.log_group)
            sinks.append(sink)
            functions[spec.arn] = FunctionRunner(spec, aws_endpoint=self.moto.url, region=stack.region,
                                                 credentials=(self.credentials.aws_access_key_id,
                                                              self.credentials.aws_secret_access_key),
                                                 workdir=self.directory / "functions" / stack.digest[:12],
                                                 on_output=sink)
        mappings = self._mappings(stack, functions)
        previous = self._wiring
        checkpoints: dict[str, dict[str, str | None]] = {}
        if previous is not None:  # a redeploy keeps each mapping's place in its shards, as Lambda does
            for runner in previous.runners:
                runner.stop()
                checkpoints[runner.spec.stream_arn] = runner.checkpoints()
        runners = [self._runner(mapping, functions[mapping.function_arn], checkpoints.get(mapping.stream_arn))
                   for mapping in mappings]
        wiring = _Wiring(stack, RuleEngine(rules, self._clients), runners, list(functions.values()), sinks,
                         self._provisioning(stack))
        for runner in runners:
            runner.start()
        with self._wiring_lock:
            self._wiring = wiring
        if previous is not None:
            previous.stop()
        self.progress(f"running {len(rules)} topic rule(s), {len(runners)} event source mapping(s), "
                      f"{len(functions)} function(s) of stack {stack.name} (version {stack.digest[:12]})")

    def _provisioning(self, stack: DeployedStack) -> Any:
        """The fleet provisioning emulator of ``stack``'s provisioning template, serving the broker (or None)."""
        from urllib.parse import urlsplit

        from iotpipe.local.provisioning import ProvisioningEmulator, Responder, template_from_stack

        template = template_from_stack(stack)
        if template is None or self.broker is None:
            return None
        address = urlsplit(self.broker.url)
        responder = Responder(ProvisioningEmulator(template, self._clients), address.hostname or "127.0.0.1",
                              address.port or 1883, self.credentials.mqtt_username, self.credentials.mqtt_password)
        self.progress(f"answering fleet provisioning by claim for template {template.name}")
        return responder

    def _read_object(self, bucket: str, key: str) -> bytes:
        """An object of the emulator's S3 (a function's zip that deploy uploaded)."""
        assert self._clients is not None
        body: bytes = self._clients.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def _mappings(self, stack: DeployedStack, functions: dict[str, FunctionRunner]) -> list[MappingSpec]:
        from iotpipe.local.esm import mapping_from_properties

        mappings = []
        for logical_id in stack.resources_of_type("AWS::Lambda::EventSourceMapping"):
            properties = stack.properties(logical_id)
            function_arn = _function_arn(stack, properties.get("FunctionName", ""))
            if function_arn not in functions:
                raise LocalError(f"event source mapping {logical_id}: function {function_arn} is not in the stack")
            mappings.append(mapping_from_properties(properties, function_arn=function_arn,
                                                    invoke_identity_arn=functions[function_arn].spec.role_arn))
        return mappings

    def _runner(self, mapping: MappingSpec, function: FunctionRunner,
                resume_from: dict[str, str | None] | None) -> MappingRunner:
        from iotpipe.local.esm import MappingRunner

        assert self.moto is not None
        # Its own client factory, not the shared cache: the runner then parses GetRecords cheaply.
        clients = self._client_factory(mapping.region)
        from iotpipe.local.emulator.clients import raw_kinesis_client

        return MappingRunner(mapping, clients, function, resume_from=resume_from, reader=raw_kinesis_client)

    def _unwire(self) -> None:
        with self._wiring_lock:
            previous, self._wiring = self._wiring, None
        if previous is not None:
            previous.stop()

    def _watch(self, factory: Clients) -> None:
        """Follow deploys and destroys of the stack until stopped."""
        from iotpipe.local.functions.follower import HandlerFollower

        assert self.state is not None
        follower = HandlerFollower.for_packaged_handlers()
        while not self._stop_event.wait(WATCH_INTERVAL_S):
            self._follow_edits(follower)
            current = self._wiring
            try:
                stack = load_deployed_stack(factory, self.state.stack_name, current.stack if current else None)
            except Exception as exc:  # the emulator may be busy; try again at the next tick
                self.problems.append(f"watching the stack: {exc}")
                continue
            self._follow(factory, stack)

    def _follow_edits(self, follower: HandlerFollower) -> None:
        """A saved edit of the processor's source runs from the next invocation on (no deploy needed)."""
        wiring = self._wiring
        for name in follower.poll(wiring.functions) if wiring is not None else ():
            self.progress(f"function {name}: picked up the saved edit of its handler source")

    def _follow(self, factory: Clients, stack: DeployedStack | None) -> None:
        """Unwire after a destroy; rewire after a deploy that changed the stack and has settled."""
        assert self.state is not None
        current = self._wiring
        if stack is None:
            if current is not None:
                self.progress(f"stack {self.state.stack_name} is gone: the rule and the mapping stopped")
                self._unwire()
            return
        # moto leaves LastUpdatedTime alone on updates: compare what was deployed
        if current is not None and current.stack is stack:
            return
        if not _settled(factory, self.state.stack_name):
            return
        self.progress(f"stack {stack.name} changed: rewiring")
        try:
            self._wire(stack)
            self.rewires += 1
        except Exception as exc:  # keep serving; the next deploy may fix it
            self.problems.append(f"rewiring: {exc}")
            self.progress(f"could not rewire stack {stack.name}: {exc}")

    # ------------------------------------------------------------------ run and stop

    def serve_forever(self) -> None:
        """Supervise every part until :meth:`stop` is called from another thread or a signal handler; LocalError
        naming the part when one is gone that cannot be restarted without losing what it holds."""
        if self.moto is not None:  # its exit wakes the check at once: every message acknowledged after it is lost
            threading.Thread(target=self._wake_on_exit, args=(self.moto.process,), name="emulator-exit",
                             daemon=True).start()
        while not self._stop_event.is_set():
            self._wake.wait(local_health.CHECK_INTERVAL_S)
            self._wake.clear()
            if self._stop_event.is_set():
                return
            self.supervise_once()

    def _wake_on_exit(self, process: subprocess.Popen[bytes]) -> None:
        process.wait()
        self._wake.set()

    # ------------------------------------------------------------------ supervision

    def check_parts(self) -> tuple[PartHealth, ...]:
        """Look at every part once, changing nothing: the emulator (its process, and a cheap request), the broker
        (its process, its feed to the rule engine), the stack watcher, and what the deployed stack runs: the rule
        engine's thread, each mapping's polling threads and each function's worker processes."""
        parts = [self._emulator_health(), self._broker_health()]
        if self._watcher is not None and not self._stop_event.is_set():
            parts.append(PartHealth("stack watcher", OK if self._watcher.is_alive() else DEAD))
        wiring = self._wiring
        if wiring is not None:
            parts.append(PartHealth("rule engine", OK if wiring.engine.alive else DEAD,
                                    detail="" if wiring.engine.alive else "its thread ended"))
            for runner in wiring.runners:
                dead = runner.dead_threads()
                function_name = runner.spec.function_arn.rpartition(":")[2]
                parts.append(PartHealth(f"mapping {function_name}", DEAD if dead else OK,
                                        detail=f"thread(s) {', '.join(dead)} ended" if dead else ""))
            for function in wiring.functions:
                for pid, state, busy in function.worker_states():
                    parts.append(PartHealth(f"worker {function.spec.name}", OK if state == "running" else state,
                                            pid, "busy" if busy else "idle"))
        return tuple(parts)

    def _emulator_health(self) -> PartHealth:
        moto = self.moto
        if moto is None:
            return PartHealth("emulator", DEAD, detail="stopped")
        pid = moto.process.pid
        if moto.process.poll() is not None:
            return PartHealth("emulator", DEAD, pid, f"exited with code {moto.process.returncode}; its log: "
                                                     f"{self.directory / 'aws.log'}")
        state = process_state(pid)
        if state == "running" and moto.answers(local_health.EMULATOR_PROBE_TIMEOUT_S):
            self._emulator_misses = 0
            return PartHealth("emulator", OK, pid)
        self._emulator_misses += 1
        if self._emulator_misses < local_health.EMULATOR_MISSES:
            return PartHealth("emulator", OK, pid, f"{self._emulator_misses} probe(s) unanswered")
        return PartHealth("emulator", STOPPED if state == STOPPED else NOT_ANSWERING, pid,
                          f"{self._emulator_misses} probes unanswered")

    def _broker_health(self) -> PartHealth:
        broker = self.broker
        if broker is None:
            return PartHealth("broker", DEAD, detail="stopped")
        pid = broker.pid
        if pid is not None and (state := process_state(pid)) != "running":
            return PartHealth("broker", DEAD if state == DEAD else STOPPED, pid,
                              f"mosquitto {state}; its log: {self.directory / 'broker'}")
        stats = broker.stats
        if not stats.broker_running:
            return PartHealth("broker", DEAD, pid, f"{broker.kind} no longer serves")
        if not stats.feed_connected:  # it reconnects by itself, and mosquitto keeps what it queued meanwhile
            return PartHealth("broker", NOT_ANSWERING, pid, f"the rule engine's feed lost it: {stats.last_feed_error}")
        return PartHealth("broker", OK, pid)

    def supervise_once(self) -> HealthRecord:
        """Check every part and act on what is wrong, then write the health record.

        Restarted, since that loses nothing: a dead or stopped broker (on its port; its in-flight messages are
        the devices' to resend), a mapping whose thread died (from its checkpoints), the stack watcher; an idle
        worker that died or was stopped is discarded (a busy one meets its invocation's deadline). Not
        restarted, since that would lose what it holds: the emulator (all AWS state is in its memory) and the
        rule engine (its queue): the broker is stopped first, so that devices see their publishes fail, and
        LocalError names the part."""
        parts = self.check_parts()
        for part in parts:
            if not part.ok and part.part in ("emulator", "rule engine"):
                self._give_up(part, parts)
        events = [event for part in parts if not part.ok and (event := self._repair(part))]
        if events:
            parts = self.check_parts()
        record = self.health or HealthRecord(pid=os.getpid(), checked_at=time.time())
        for event in events:
            self.progress(event)
            record = record.with_event(f"{datetime.now(UTC).isoformat(timespec='seconds')} {event}")
        self.health = replace(record, checked_at=time.time(), parts=parts)
        local_health.write_health(self.health, self.directory)
        return self.health

    def _repair(self, part: PartHealth) -> str | None:
        """Restart or discard what ``part`` names when that loses nothing; what was done, or None."""
        wiring = self._wiring
        if part.part == "broker" and part.state in (DEAD, STOPPED):
            return self._restart_broker(part)
        if part.part == "stack watcher" and self.state is not None:
            self._watcher = threading.Thread(target=self._watch, args=(self._clients,), name="stack-watch",
                                             daemon=True)
            self._watcher.start()
            return "the stack watcher's thread had ended: restarted"
        if wiring is None:
            return None
        if part.part.startswith("mapping "):
            return self._restart_runners(wiring, part)
        if part.part.startswith("worker ") and part.detail != "busy":
            discarded = [pid for function in wiring.functions for pid in function.discard_idle_unhealthy()]
            if discarded:
                return f"{part.describe()}: discarded; the next invocation starts a new worker"
        return None

    def _restart_broker(self, part: PartHealth) -> str:
        from iotpipe.local.broker import BrokerSpec, start_broker

        old = self.broker
        assert old is not None
        with contextlib.suppress(Exception):
            old.stop(timeout_s=1)
        try:  # on its port: devices and the state file keep its address
            self.broker = start_broker(
                BrokerSpec(kind=old.kind, port=old.port, username=self.credentials.mqtt_username,
                           password=self.credentials.mqtt_password), self.directory / "broker", self._on_message)
        except LocalError as exc:
            self.broker = None
            self._give_up(replace(part, detail=f"{part.detail}; restarting it failed: {exc}"), self.check_parts())
        if self.state is not None:
            self.state = replace(self.state, child_pids=self._child_pids())
            local_state.write_state(self.state, self.directory)
        return f"{part.describe()}: restarted on {self.broker.url}"

    def _restart_runners(self, wiring: _Wiring, part: PartHealth) -> str | None:
        restarted = []
        with self._wiring_lock:
            if self._wiring is not wiring:
                return None  # rewired meanwhile: the new runners are checked next time
            for index, runner in enumerate(wiring.runners):
                if not runner.dead_threads():
                    continue
                checkpoints = runner.checkpoints()
                runner.stop(timeout_s=1)
                function = next(f for f in wiring.functions if f.spec.arn == runner.spec.function_arn)
                wiring.runners[index] = fresh = self._runner(runner.spec, function, checkpoints)
                fresh.start()
                restarted.append(runner.spec.function_name)
        return f"{part.describe()}: restarted from its checkpoints" if restarted else None

    def _child_pids(self) -> tuple[int, ...]:
        pids = (self.moto.process.pid if self.moto else None, getattr(self.broker, "pid", None))
        return tuple(pid for pid in pids if pid)

    def _give_up(self, failed: PartHealth, parts: tuple[PartHealth, ...]) -> NoReturn:
        """Stop the broker (devices then see failed publishes, not acknowledged ones that are lost), record the
        failure for ``local status`` and raise LocalError naming the part."""
        if self.broker is not None:
            with contextlib.suppress(Exception):
                self.broker.stop(timeout_s=1)
            self.broker = None
        message = (f"{failed.describe()}; the MQTT broker was stopped so that devices see their publishes fail "
                   "instead of being acknowledged and lost. Start again with `iotpipe local up` (the emulator's "
                   "data does not survive it)")
        parts = (*(part for part in parts if part.part != "broker"),
                 PartHealth("broker", DEAD, detail="stopped by the supervisor"))
        self._failed = True
        record = self.health or HealthRecord(pid=os.getpid(), checked_at=time.time())
        self.health = replace(record, checked_at=time.time(), parts=parts, failure=message)
        local_health.write_health(self.health, self.directory)
        raise LocalError(message)

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to return."""
        self._stop_event.set()
        self._wake.set()

    def stop(self) -> None:
        """Stop everything this pipeline started; idempotent, and leaves no process behind.

        The broker stops first and hands what it acknowledged to the rule engine, which flushes into the
        emulator before it stops; the emulator stops last."""
        started = time.monotonic()
        stopping = self.broker is not None or self.moto is not None
        self._stop_event.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(timeout=2)
        # The broker first: what it acknowledged reaches the rule engine before the engine flushes and closes,
        # and nothing is acknowledged after that.
        if self._console is not None:
            with contextlib.suppress(Exception):
                self._console.stop()
            self._console = None
        if self.broker is not None:
            with contextlib.suppress(Exception):
                self.broker.stop()
        with contextlib.suppress(Exception):
            self._unwire()
        if self.moto is not None:
            self.moto.stop()
        self.broker = self.moto = None
        if self.state is not None:
            local_state.remove_state(self.directory, pid=os.getpid())
            self.state = None
            if not self._failed:  # a failure stays on record for `local status` until down or the next up
                local_health.remove_health(self.directory)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if stopping:
            self.progress(f"stopped in {time.monotonic() - started:.1f} s")

    @property
    def wiring(self) -> _Wiring | None:
        """What runs now (rule engine, runners, functions), or None between a destroy and a deploy."""
        return self._wiring


def _function_arn(stack: DeployedStack, name_or_arn: str) -> str:
    if name_or_arn.startswith("arn:"):
        return name_or_arn
    return f"arn:aws:lambda:{stack.region}:{stack.account_id}:function:{name_or_arn}"


def _settled(factory: Clients, stack_name: str) -> bool:
    status = factory.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]["StackStatus"]
    return bool(status.endswith("_COMPLETE"))


def refuse_if_running(directory: Path) -> None:
    """LocalError when a live ``iotpipe local`` owns ``directory``; a stale state file is removed."""
    found = local_state.read_state(directory)
    if found is None:
        return
    if local_state.supervisor_alive(found):
        raise LocalError(f"iotpipe local already runs (pid {found.pid}, env {found.env}, AWS {found.aws_endpoint}, "
                         f"MQTT {found.mqtt}); stop it with `iotpipe local down` first")
    local_state.remove_state(directory)


def stop_running(directory: Path, timeout_s: float = 5.0) -> local_state.LocalState | None:
    """Stop the ``iotpipe local`` recorded in ``directory``; None when none runs (a stale file is removed, and a
    pid that another program reused is never signalled)."""
    found = local_state.read_state(directory)
    if found is None:
        return None
    if not local_state.supervisor_alive(found):
        local_state.remove_state(directory)
        return None
    stop_pid(found.pid, timeout_s)
    for pid in found.child_pids:  # normally gone with their parent; a SIGKILLed parent may leave them briefly
        if process_alive(pid) and any(name in command_line(pid) for name in ("moto_server", "mosquitto")):
            stop_pid(pid, kill=True)
    local_state.remove_state(directory)
    return replace(found, ready=False)
