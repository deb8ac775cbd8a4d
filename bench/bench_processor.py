"""Processor benchmark (``make bench``; not a test): readings/s and AWS API calls per 1,000 readings.

Starts a moto server on a free loopback port, creates the contract's table and bucket, and drives synthetic
Kinesis events of 100 and 1,000 readings through:

1. handler/python/index.py in-process, against moto;
2. the same under a latency model: a botocore ``before-send`` hook waits 10 ms and answers every call with a
   canned success, so the figure shows the design's round trips rather than moto's own speed. It keeps the
   detector state items written to it and answers their reads, as DynamoDB does; with detection on it starts
   from the items of 12,000 earlier readings, every series past its probation, so each timed reading is scored
   as a warm function's are (until this release the model answered every read with nothing, and each batch
   learned its series afresh, in probation, where no reading is scored);
3. the Node twin handler/node/index.js in bench/node_driver.js, against moto and under the same 10 ms model
   (needs node and the AWS SDK: ``make install`` runs npm install in handler/node);
4. with ``--seed-dir DIR`` (a folder holding the seed's TapStack.yml; optional, a clone has none), the seed's Node
   handler (its Code.ZipFile, unchanged) in the same driver against the same moto server, and the ratios
   python / seed and node twin / seed;
5. "moto alone": the same items written with BatchWriteItem and nothing else, the most any processor storing
   them can get from this moto server.

``--compare-detection`` adds each processor row with the learned detector on, the on/off ratio, and the detector's
memory: a series' state (stored and as a Python object), a device's state item, and the peak Python allocation of
one batch with detection off and on. Detection's budget (on / off >= 0.85) is judged on paired runs of the 10 ms
model's rows: ``--detection-pairs`` times (default 9) detection off and on run back to back, in alternating order,
and the verdict is the median of the pairs' ratios. Each paired run drives ``--pair-readings`` readings (10,000
by default: ten batches of 1,000), more than a table row's: a function runs batch after batch, and three batches
are dominated by what a short run adds (the Node twin's compiler and collector: its packed row measured 0.84 and
0.80 over three batches, 0.92 and 0.93 over ten). A row's readings/s moves by about 20 % between runs; two runs
side by side see the same machine, and the median drops the pairs a burst of other work split.

``--emulator`` adds the python and node twin rows (detection on too with ``--compare-detection``, with their on/off
ratios) against ``iotpipe local``'s emulator, started on its own free loopback port: moto with the same patches, but
served by waitress with HTTP keep-alive, as Lambda keeps its connections to DynamoDB and S3, where moto's own server
(Werkzeug) closes every connection after its response. A line per row gives the connections the emulator accepted
and the requests it answered, to show the clients reuse their connections. It is a flag of its own because it
starts a second server and adds two to four rows per layout: the default run stays as short as it was.

Calls are HTTP attempts (retries included) in every row; each run is warmed up on its first event first.
``--layouts`` picks the storage layouts (``STORAGE_LAYOUT``): rows 1 to 3 run once per layout, the packed ones
labelled ``packed``, and the targets are judged for each.

``--worst`` (``make bench-worst``) instead drives worst-case batches, one invocation each in a fresh process
with the configured timeout as its budget, and shows each processor's peak resident memory against the
configured memory size (iotpipe.toml, env dev): the largest batch Lambda delivers (6 MB of records) made of
70 KB messages of 5,000 unknown sensor types, of 125 KB messages of 9,000 readings, of messages of 100 readings
each (the most one message may hold), and 10,000 one-reading records.

Usage: python bench/bench_processor.py [--sizes 100 1000] [--readings-per-size 3000] [--repeat 5]
                                       [--seed-dir DIR] [--budget-s 900]
                                       [--layouts item-per-reading packed] [--compare-detection]
                                       [--detection-pairs 9] [--pair-readings 10000] [--emulator]
       python bench/bench_processor.py --worst [--cases NAME ...]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from bench_support import (  # noqa: E402
    clients,
    create_resources,
    kinesis_event,
    load_handler,
    make_runtime,
    settings_env,
)

from iotpipe.local.processes import accepts_connections, free_port, wait_ready  # noqa: E402
from iotpipe.metering import STATE_SORT_KEY  # noqa: E402

LATENCY_S = 0.010
SENSORS = (("temperature", 20.0, 95.0), ("pressure", 40.0, 160.0), ("vibration", 0.5, 6.0))
ENV = {"ENVIRONMENT": "bench", "UNKNOWN_SENSOR": "quarantine", "TTL_DAYS": 90,
       "THRESHOLDS": {"temperature": {"min": 10, "max": 80, "unit": "celsius"},
                      "pressure": {"min": 30, "max": 150, "unit": "psi"},
                      "vibration": {"min": None, "max": 5.0, "unit": "mm/s"}}}
PACKED_ENV = {**ENV, "STORAGE_LAYOUT": "packed", "PACK_WINDOW_SECONDS": "60"}
LAYOUTS = ("item-per-reading", "packed")
# ENV's THRESHOLDS name no detector, so the default rows run the static bounds only. --compare-detection adds each row
# with the learned detector on (the config's default, `onset`), state items read and written included.
DETECTION_ON = ", detection on"


def detection_on(env: dict[str, Any]) -> dict[str, Any]:
    """``env`` with every sensor type's learned detector on (the ``onset`` preset, as the config deploys it)."""
    return {**env, "THRESHOLDS": {name: {**spec, "detector": "onset"} for name, spec in env["THRESHOLDS"].items()}}
NODE_DRIVER = REPO / "bench" / "node_driver.js"
NODE_TWIN = REPO / "handler" / "node" / "index.js"
NODE_MODULES = REPO / "handler" / "node" / "node_modules"
NODE_TIMEOUT_S = 600
SEED_TABLE = "SensorData-bench"
SEED_BUCKET = "iot-raw-data-bench"


def synthetic_records(count: int, start_seq: int, start_ms: int) -> list[dict[str, Any]]:
    """``count`` single-form readings (the seed's payload form) over 20 devices, about 2% anomalous."""
    records = []
    for i in range(count):
        sensor, normal, high = SENSORS[i % len(SENSORS)]
        device = f"press-{i % 20:02d}"
        value = high if i % 50 == 49 else round(normal + (i % 17) * 0.37, 2)
        timestamp = start_ms + i
        payload = {"deviceId": device, "sensorType": sensor, "value": value, "timestamp": timestamp,
                   "receivedAt": timestamp + 40, "topicDeviceId": device}
        records.append({"sequenceNumber": str(start_seq + i), "partitionKey": device,
                        "arrivedAt": timestamp + 60, "payload": payload})
    return records


BASE_MS = int(time.time() * 1000) - 600_000  # the first timed reading's timestamp, in every row
FIRST_SEQUENCE = 49_000_000
# Before it, the readings the latency model's state items have learned: each of the 60 series (20 devices x 3 sensor
# types) past the detector's probation (150), as a warm function's devices are, so that its readings are scored.
HISTORY_READINGS = 12_000


def events_for(size: int, total: int, first_seq: int = FIRST_SEQUENCE, start_ms: int = BASE_MS
               ) -> list[dict[str, Any]]:
    """Enough events of ``size`` readings to make about ``total`` readings; distinct keys throughout."""
    batches = max(1, total // size)
    return [kinesis_event(synthetic_records(size, first_seq + b * size, start_ms + b * size)) for b in range(batches)]


class CallCounter:
    """Counts HTTP requests (retries included) through a botocore ``before-send`` hook."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, **_: Any) -> None:
        with self.lock:
            self.count += 1


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


_STATE_KEY_JSON = json.dumps(STATE_SORT_KEY).encode()


class LatencyModel:
    """A botocore ``before-send`` hook: waits ``latency_s``, then answers as AWS would on success, without reaching
    any server. It keeps the detector state items written to it and answers BatchGetItem with them, as DynamoDB
    does, so a device's next batch starts from what its last one learned; ``states`` (deviceId -> item) are
    the items it starts with."""

    def __init__(self, states: dict[str, dict[str, Any]] | None = None, latency_s: float = LATENCY_S) -> None:
        self.states = dict(states or {})
        self.latency_s = latency_s
        self.lock = threading.Lock()

    def __call__(self, request: Any, event_name: str, **_: Any) -> AWSResponse:
        time.sleep(self.latency_s)
        json_headers = {"Content-Type": "application/x-amz-json-1.0"}
        if event_name.endswith("dynamodb.BatchWriteItem"):
            body = request.body if isinstance(request.body, bytes) else str(request.body).encode()
            if _STATE_KEY_JSON in body:  # the processors write state items in calls of their own
                self.keep(json.loads(body)["RequestItems"])
            return AWSResponse(request.url, 200, json_headers, _Body(b'{"UnprocessedItems":{}}'))
        if event_name.endswith("dynamodb.BatchGetItem"):
            return AWSResponse(request.url, 200, json_headers, _Body(json.dumps(self.answer(json.loads(request.body)))
                                                                     .encode()))
        return AWSResponse(request.url, 200, {"ETag": '"bench"'}, _Body(b""))

    def keep(self, request_items: dict[str, list[dict[str, Any]]]) -> None:
        """Keep the state items of a BatchWriteItem's puts."""
        with self.lock:
            for requests in request_items.values():
                for put in (r["PutRequest"]["Item"] for r in requests if "PutRequest" in r):
                    if put["sk"]["S"] == STATE_SORT_KEY:
                        self.states[put["deviceId"]["S"]] = put

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """A BatchGetItem's response: the kept state items of its keys, none unprocessed."""
        with self.lock:
            found = {table: [self.states[key["deviceId"]["S"]] for key in spec["Keys"]
                             if key["sk"]["S"] == STATE_SORT_KEY and key["deviceId"]["S"] in self.states]
                     for table, spec in request["RequestItems"].items()}
        return {"Responses": found, "UnprocessedKeys": {}}


def learned_range(states: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The fewest and the most readings a series of the state items ``states`` has learned (a state's first number:
    docs/contract.md 12); none without items."""
    counts = [values[0] for item in states.values() for values in json.loads(item["statesV2"]["S"]).values()]
    return {"learned_min": min(counts), "learned_max": max(counts)} if counts else {}


def trained_states() -> dict[str, dict[str, Any]]:
    """The state items of the synthetic devices after HISTORY_READINGS readings (before the timed ones), learned by
    the Python processor with every detector on, with no latency: deviceId -> item. Both twins write the same
    items (docs/contract.md 12), so the Node twin starts from them too."""
    index = load_handler()
    model = LatencyModel(latency_s=0.0)
    s3, dynamodb = clients("http://127.0.0.1:9", pool=index.POOL_SIZE)
    for client in (s3, dynamodb):
        client.meta.events.register_last("before-send", model)
    runtime = make_runtime(index, detection_on(ENV), s3, dynamodb, emit=lambda _line: None)
    for event in events_for(1000, HISTORY_READINGS, FIRST_SEQUENCE - HISTORY_READINGS, BASE_MS - HISTORY_READINGS):
        index.process(event, None, runtime)
    runtime.pool.shutdown()
    return model.states


def run_python(endpoint: str, events: list[dict[str, Any]], hook: Callable[..., Any] | None,
               env: dict[str, Any] = ENV) -> dict[str, float]:
    """Drive the handler over ``events``; readings/s and calls per 1,000 readings."""
    index = load_handler()
    s3, dynamodb = clients(endpoint, pool=index.POOL_SIZE)
    counter = CallCounter()
    for client in (s3, dynamodb):
        client.meta.events.register("before-send", counter)
        if hook is not None:
            client.meta.events.register_last("before-send", hook)
    runtime = make_runtime(index, env, s3, dynamodb, emit=lambda _line: None)
    index.process(events[0], None, runtime)  # warm-up: connections and imports, as after a cold start
    counter.count = 0
    readings = sum(len(e["Records"]) for e in events)
    started = time.perf_counter()
    failures = sum(len(index.process(event, None, runtime)["batchItemFailures"]) for event in events)
    seconds = time.perf_counter() - started
    runtime.pool.shutdown()
    learned = learned_range(hook.states) if isinstance(hook, LatencyModel) else {}
    return {"readings": readings, "per_second": readings / seconds, "calls_per_1000": counter.count * 1000 / readings,
            "failures": failures, **learned}


def detection_memory(size: int, states: dict[str, dict[str, Any]]) -> list[str]:
    """Memory of the detector: a series' state (stored and as a Python object), a device's state item, and the
    peak Python allocation of one ``size``-reading batch with detection off and on (tracemalloc, 10 ms model, from
    the ``states`` LatencyModel starts with)."""
    import tracemalloc

    from iotpipe.cost import dynamodb_item_size

    index = load_handler()
    params = index.DETECTOR_PRESETS["onset"]
    _, state = index.detect_series([(1_767_225_600_000 + i * 1000, 20.0 + (i * 7 % 5) / 10) for i in range(500)],
                                   params)
    stored = len(index.states_text({"temperature": state})) - len('{"temperature":}')
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [index.DetectorState(*state.to_list()) for _ in range(1000)]
    per_object = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    tracemalloc.stop()
    names = [name for name, _, _ in SENSORS]
    item = index.state_item("press-00", "4" * 56, {n: state for n in names}, "4" * 56, {n: state for n in names},
                            {n: 1_767_225_600_000 for n in names})
    peaks = {}
    event = events_for(size, size)[0]
    for label, env in (("off", ENV), ("on", detection_on(ENV))):
        s3, dynamodb = clients("http://127.0.0.1:9", pool=index.POOL_SIZE)
        for client in (s3, dynamodb):
            client.meta.events.register_last("before-send", LatencyModel(states))
        runtime = make_runtime(index, env, s3, dynamodb, emit=lambda _line: None)
        index.process(event, None, runtime)  # warm-up: clients and imports
        tracemalloc.start()
        index.process(event, None, runtime)
        peaks[label] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        runtime.pool.shutdown()
    return [f"  detector memory: a series' state is {len(state.to_list())} numbers, {stored} B stored (JSON, long "
            "doubles as their bits), "
            f"{per_object:,.0f} B as a Python object; a device's state item of {len(names)} series "
            f"{dynamodb_item_size(item):,} B (open episodes included)",
            f"  batch memory (python, tracemalloc peak, one {size}-reading batch, 10 ms model): detection off "
            f"{peaks['off'] / 1024:,.0f} KB, on {peaks['on'] / 1024:,.0f} KB"]


def run_moto_alone(endpoint: str, events: list[dict[str, Any]]) -> dict[str, float]:
    """moto alone: the Python processor's own items for ``events``, written back to back with BatchWriteItem
    (25 per call, POOL_SIZE in flight) and nothing else: no archive, no validation. No processor that stores
    these items can beat this row against this moto server, so it shows how much of moto's speed each gets."""
    index = load_handler()
    settings = index.Settings.from_env(settings_env(ENV))
    items = [reading.item for event in events for record in event["Records"]
             for reading in index.interpret(index.decode_record(record, 0), settings).readings]
    chunks = [items[i:i + index.BATCH_WRITE_LIMIT] for i in range(0, len(items), index.BATCH_WRITE_LIMIT)]
    _, dynamodb = clients(endpoint, pool=index.POOL_SIZE)
    counter = CallCounter()
    dynamodb.meta.events.register("before-send", counter)

    def write(chunk: list[dict[str, Any]]) -> int:
        response = dynamodb.batch_write_item(RequestItems={settings.table: [{"PutRequest": {"Item": item}}
                                                                            for item in chunk]})
        return len(response.get("UnprocessedItems", {}).get(settings.table, []))

    with ThreadPoolExecutor(max_workers=index.POOL_SIZE) as pool:
        write(chunks[0])  # warm-up, as for the processors
        counter.count = 0
        started = time.perf_counter()
        unprocessed = sum(pool.map(write, chunks))
        seconds = time.perf_counter() - started
    return {"readings": len(items), "per_second": len(items) / seconds,
            "calls_per_1000": counter.count * 1000 / len(items), "failures": unprocessed}


def round_trip_ceiling(size: int, pool_size: int, per_call: int) -> float:
    """Readings/s of a ``size``-reading batch under the latency model at zero CPU: the archive PUT, then the
    BatchWriteItem calls (``per_call`` items each) ``pool_size`` at a time (archived first, so never overlapping)."""
    waves_of_writes = math.ceil(math.ceil(size / per_call) / pool_size)
    return size / ((1 + waves_of_writes) * LATENCY_S)


def seed_handler_source(seed_dir: Path) -> str:
    """The seed processor's JavaScript, cut from the Code.ZipFile block of TapStack.yml."""
    text = (seed_dir / "TapStack.yml").read_text()
    match = re.search(r"^( *)ZipFile: \|\n((?:\1  .*\n|\s*\n)+)", text, re.MULTILINE)
    if not match:
        raise SystemExit("no Code.ZipFile block in the seed template")
    indent = len(match.group(1)) + 2
    return "".join(line[indent:] + "\n" for line in match.group(2).splitlines())


def node_ready() -> bool:
    """Node and the AWS SDK dev dependencies (``make install``) are there to run a Node processor."""
    return shutil.which("node") is not None and (NODE_MODULES / "@aws-sdk" / "client-s3").is_dir()


def run_node(handler_path: Path, events: list[dict[str, Any]], env: dict[str, str],
             latency_ms: float | None = None, states: dict[str, dict[str, Any]] | None = None) -> dict[str, float]:
    """A Node processor over ``events`` in bench/node_driver.js, warmed up on the first event as run_python is;
    against AWS_ENDPOINT_URL of ``env``, or under the latency model when ``latency_ms`` is given, whose state items
    start as ``states`` (deviceId -> item) and keep what the processor writes, as LatencyModel's do."""
    job: dict[str, Any] = {"handlerPath": str(handler_path), "events": events, "env": env, "warmup": True}
    if latency_ms is not None:
        job["latencyMs"] = latency_ms
        job["stateItems"] = list((states or {}).values())
    process_env = {**os.environ, "NODE_NO_WARNINGS": "1", "AWS_REGION": "us-east-1",
                   "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    process_env.pop("AWS_PROFILE", None)
    done = subprocess.run(["node", str(NODE_DRIVER)], input=json.dumps(job), env=process_env, text=True,
                          capture_output=True, check=False, timeout=NODE_TIMEOUT_S)
    if done.returncode != 0:
        raise SystemExit(f"{NODE_DRIVER.name} failed on {handler_path}: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    readings = result["readings"]
    learned = dict(zip(("learned_min", "learned_max"), result.get("learned") or (), strict=False))
    return {"readings": readings, "per_second": readings / result["seconds"],
            "calls_per_1000": result["apiCalls"] * 1000 / readings, "failures": result["failures"], **learned}


def run_twin(endpoint: str, events: list[dict[str, Any]], latency_ms: float | None,
             env: dict[str, Any] = ENV, states: dict[str, dict[str, Any]] | None = None) -> dict[str, float]:
    """Our Node twin (handler/node/index.js) with the same settings, table and bucket as the Python rows; under
    the latency model, starting from ``states`` (LatencyModel's)."""
    return run_node(NODE_TWIN, events, {**settings_env(env), "AWS_ENDPOINT_URL": endpoint}, latency_ms, states)


def run_seed(endpoint: str, events: list[dict[str, Any]], seed_dir: Path) -> dict[str, float]:
    """The seed's Node handler (its Code.ZipFile, unchanged) over ``events`` against the same moto server."""
    with tempfile.TemporaryDirectory() as tmp:
        handler = Path(tmp) / "index.js"
        handler.write_text(seed_handler_source(seed_dir))
        # The seed logs the whole event and every payload; that is part of its cost (the driver discards it).
        result = run_node(handler, events, {
            "AWS_ENDPOINT_URL": endpoint, "DYNAMODB_TABLE": SEED_TABLE, "S3_BUCKET": SEED_BUCKET,
            "ENVIRONMENT": "bench", "TEMP_THRESHOLD_HIGH": "80", "TEMP_THRESHOLD_LOW": "10",
            "PRESSURE_THRESHOLD_HIGH": "150", "PRESSURE_THRESHOLD_LOW": "30", "VIBRATION_THRESHOLD": "5.0"})
    if result["failures"]:
        raise SystemExit(f"the seed handler failed {result['failures']:.0f} records; its figures would be wrong")
    return result


def create_seed_resources(s3: Any, dynamodb: Any) -> None:
    """The seed's table (deviceId + numeric timestamp) and bucket."""
    dynamodb.create_table(
        TableName=SEED_TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "deviceId", "AttributeType": "S"},
                              {"AttributeName": "timestamp", "AttributeType": "N"}],
        KeySchema=[{"AttributeName": "deviceId", "KeyType": "HASH"},
                   {"AttributeName": "timestamp", "KeyType": "RANGE"}])
    s3.create_bucket(Bucket=SEED_BUCKET)


# The server keeps every object and item of every row in one Python heap. Its full garbage collections grow
# with that heap (300 ms each by the sixth run) and land at random inside runs, which made rows vary 2x from run
# to run. With the cyclic collector off (reference counting still frees memory) rows repeat within about 10%;
# it is off for every row alike, and the seed's figure stayed within its usual 200-240/s.
MOTO_SERVER = """
import gc, logging, sys
gc.disable()
if sys.argv[1:] == ["patched"]:
    from iotpipe.local.emulator import moto_compat
    moto_compat.apply(moto_compat.ALL_KINDS)
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("http://%s:%s" % server.get_host_and_port(), flush=True)
sys.stdin.read()
server.stop()
"""


def start_moto_server(patched: bool = True) -> tuple[subprocess.Popen[str], str]:
    """A moto server on a free loopback port in its own process (its own interpreter lock, as the seed's
    Node process has its own); it stops when its stdin closes. Returns the process and the endpoint URL.

    ``patched``: with every iotpipe moto patch (``iotpipe.local.emulator.moto_compat``, all kinds), as
    ``iotpipe local`` runs it. Several fix moto's DynamoDB write path, whose per-attribute cost (a quadratic size
    check, generic parsing) weighed on items with more attributes than the seed's; every row, the seed's too,
    runs against the same server."""
    process = subprocess.Popen([sys.executable, "-c", MOTO_SERVER, *(["patched"] if patched else [])],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    endpoint = process.stdout.readline().strip()  # type: ignore[union-attr]
    if not endpoint.startswith("http://"):
        process.kill()
        raise SystemExit("the moto server did not start")
    return process, endpoint


# iotpipe local's emulator (iotpipe.local.emulator.server: moto's application with every moto patch, on waitress,
# HTTP/1.1 keep-alive), the cyclic collector off as in MOTO_SERVER so every server's rows are measured alike. It
# counts the connections it accepts and the requests it answers, and prints both for each line on its stdin; it
# stops when stdin closes. No IOTPIPE_MOTO_ACCESS_KEY: no access-key guard (iotpipe local's random key is not the
# bench's).
EMULATOR_SERVER = """
import gc, os, signal, sys, threading
gc.disable()
import waitress.channel
from iotpipe.local.emulator import server
counts = {"connections": 0, "requests": 0}
channel_init = waitress.channel.HTTPChannel.__init__
def counting_init(self, *args, **kwargs):
    counts["connections"] += 1
    channel_init(self, *args, **kwargs)
waitress.channel.HTTPChannel.__init__ = counting_init
moto_application = server.application
def counting_application():
    app = moto_application()
    def counted(environ, start_response):
        counts["requests"] += 1
        return app(environ, start_response)
    return counted
server.application = counting_application
def answer():
    for line in sys.stdin:
        print(counts["connections"], counts["requests"], flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=answer, daemon=True).start()
server.main(["--host", "127.0.0.1", "--port", sys.argv[1]])
"""
EMULATOR_START_S = 30.0


@dataclass(frozen=True)
class Emulator:
    """iotpipe local's emulator in its own process (EMULATOR_SERVER), at ``endpoint``."""

    process: subprocess.Popen[str]
    endpoint: str

    def counts(self) -> tuple[int, int]:
        """The TCP connections the emulator has accepted (its readiness probe included) and the requests it has
        answered so far."""
        self.process.stdin.write("counts\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        connections, requests = self.process.stdout.readline().split()  # type: ignore[union-attr]
        return int(connections), int(requests)


def start_emulator(timeout_s: float = EMULATOR_START_S) -> Emulator:
    """iotpipe local's emulator on a free loopback port, in its own process; returns once it accepts connections,
    SystemExit (with the end of its log) if it exits first, stays silent ``timeout_s`` or is not on waitress."""
    port = free_port()
    env = {**os.environ, "IOTPIPE_MOTO_QUIET": "1", "PYTHONPATH": str(REPO / "src")}
    for name in ("IOTPIPE_MOTO_ACCESS_KEY", "IOTPIPE_MOTO_API_TOKEN", "IOTPIPE_MOTO_WERKZEUG"):
        env.pop(name, None)
    with tempfile.TemporaryFile("w+") as log:  # the server's start-up log, for the error; it logs no requests
        process = subprocess.Popen([sys.executable, "-c", EMULATOR_SERVER, str(port)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        problem = wait_accepting(process, port, timeout_s)
        log.seek(0)
        started = log.read()
    if problem is None and "(waitress)" not in started:
        problem = "is not served by waitress (is waitress installed?)"
    if problem is not None:
        stop_server(process)
        raise SystemExit(f"iotpipe local's emulator {problem}; its log:\n{started[-2000:]}")
    return Emulator(process, f"http://127.0.0.1:{port}")


def wait_accepting(process: subprocess.Popen[str], port: int, timeout_s: float) -> str | None:
    """None once 127.0.0.1:``port`` accepts a connection; what went wrong if ``process`` exits first or
    ``timeout_s`` pass."""
    try:
        wait_ready(lambda: accepts_connections("127.0.0.1", port, timeout_s=1.0), process=process,
                   deadline=time.monotonic() + timeout_s,
                   exited=lambda: RuntimeError(f"exited with code {process.returncode}"),
                   timed_out=lambda: RuntimeError(f"did not accept connections on 127.0.0.1:{port} within "
                                                  f"{timeout_s:.0f} s"))
    except RuntimeError as problem:
        return str(problem)
    return None


def stop_server(process: subprocess.Popen[str]) -> None:
    """Stop a server started here (it stops when its stdin closes); kill it if it lingers."""
    with contextlib.suppress(OSError):
        process.stdin.close()  # type: ignore[union-attr]
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


LABEL_WIDTH = 46
PYTHON_MOTO = "python, moto server"
TWIN_MOTO = "node twin, moto server"
PYTHON_PACKED = "python, moto server, packed"
TWIN_PACKED = "node twin, moto server, packed"
SEED_MOTO = "seed node handler, moto server"
MOTO_ALONE = "moto alone: same items, BatchWriteItem"
PYTHON_EMULATOR = "python, local emulator (keep-alive)"
TWIN_EMULATOR = "node twin, local emulator (keep-alive)"


def _row(label: str, size: int, result: dict[str, float]) -> str:
    server_cpu = result.get("server_cpu_per_1000")
    return (f"{label:<{LABEL_WIDTH}} {size:>6} {int(result['readings']):>9} {result['per_second']:>12,.0f} "
            f"{result['calls_per_1000']:>14.1f} {int(result['failures']):>9} "
            f"{'-' if server_cpu is None else f'{server_cpu * 1000:,.0f}':>14}")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process ``pid`` has used (Linux /proc; None where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_server_cpu(run: Callable[[list[dict[str, Any]]], dict[str, float]], pid: int, size: int
                    ) -> Callable[[list[dict[str, Any]]], dict[str, float]]:
    """``run`` that also reports the moto server's CPU seconds per 1,000 readings it processed (``size`` more for
    the warm-up batch): what the server spends on a row's calls, which no overlap on the client's side hides."""
    def measured(events: list[dict[str, Any]]) -> dict[str, float]:
        before = process_cpu_seconds(pid)
        result = run(events)
        after = process_cpu_seconds(pid)
        if before is not None and after is not None:
            result["server_cpu_per_1000"] = (after - before) * 1000 / (result["readings"] + size)
        return result
    return measured


def with_connections(run: Callable[[list[dict[str, Any]]], dict[str, float]], emulator: Emulator
                     ) -> Callable[[list[dict[str, Any]]], dict[str, float]]:
    """``run`` that also reports the TCP connections the emulator accepted and the requests it answered during it
    (warm-up batch included): with keep-alive the connections are about as many as calls ever run at once, without
    it one per request."""
    def measured(events: list[dict[str, Any]]) -> dict[str, float]:
        connections, requests = emulator.counts()
        result = run(events)
        after = emulator.counts()
        result["connections"], result["requests"] = after[0] - connections, after[1] - requests
        return result
    return measured


MAX_CALLS_PER_1000 = 50
MIN_RATIO_TO_SEED = 20.0
MIN_LATENCY_MODEL_RATE = 5000.0
# Detection on may cost at most 15 % of the readings per second, judged on the 10 ms model's rows (the design's
# round trips and the processor's own CPU; the moto rows add the emulator's CPU on the same cores).
MIN_DETECTION_RATIO = 0.85
# At 100 per batch the archive PUT and the writes are two 10 ms round trips one after the other, so the latency
# target is out of reach before any CPU is spent; the issue's targets only hold together at 1,000 (README).
TARGET_BATCH = 1000


def paired_ratios(run_off: Callable[[], dict[str, float]], run_on: Callable[[], dict[str, float]],
                  pairs: int) -> list[float]:
    """Detection on / off readings/s of ``pairs`` runs side by side, off first in the even pairs and on first in
    the odd ones (so neither always runs on the warmer machine)."""
    ratios = []
    for pair in range(pairs):
        if pair % 2 == 0:
            off, on = run_off()["per_second"], run_on()["per_second"]
        else:
            on, off = run_on()["per_second"], run_off()["per_second"]
        ratios.append(on / off)
    return ratios


def target_verdicts(best: dict[str, dict[str, float]], latency_label: dict[str, str], size: int,
                    handler: Any, paired: dict[str, list[float]] | None = None) -> list[str]:
    """One line per processor: the issue's targets for this batch size (with --compare-detection, detection's
    budget too: the median of the ``paired`` ratios of its 10 ms model row), each met or not, with the figure;
    then what bounds them here: moto alone against the seed, and the archive-first round-trip ceiling."""
    lines = []
    for name, moto_label in (("python", PYTHON_MOTO), ("node twin", TWIN_MOTO), ("python packed", PYTHON_PACKED),
                             ("node twin packed", TWIN_PACKED)):
        if moto_label not in best or name not in latency_label:
            continue
        moto, modelled = best[moto_label], best[latency_label[name]]
        checks = [(f"calls/1000 <= {MAX_CALLS_PER_1000}", moto["calls_per_1000"] <= MAX_CALLS_PER_1000,
                   f"{moto['calls_per_1000']:.1f}"),
                  (f"10 ms model >= {MIN_LATENCY_MODEL_RATE:,.0f}/s",
                   modelled["per_second"] >= MIN_LATENCY_MODEL_RATE, f"{modelled['per_second']:,.0f}")]
        pairs = (paired or {}).get(latency_label[name])
        if pairs:
            ratio = statistics.median(pairs)
            # three decimals, rounded down: rounded to two, a median of 0.847 read "0.85x ... NOT met"
            shown = math.floor(ratio * 1000) / 1000
            checks.append((f"10 ms model detection on / off >= {MIN_DETECTION_RATIO:.2f}",
                           ratio >= MIN_DETECTION_RATIO, f"{shown:.3f}x, median of {len(pairs)} pairs"))
        if SEED_MOTO in best:
            ratio = moto["per_second"] / best[SEED_MOTO]["per_second"]
            checks.insert(1, (f"vs seed >= {MIN_RATIO_TO_SEED:.0f}x", ratio >= MIN_RATIO_TO_SEED, f"{ratio:.1f}x"))
        verdicts = "; ".join(f"{what} {'met' if ok else 'NOT met'} ({figure})" for what, ok, figure in checks)
        if size != TARGET_BATCH:
            label = f"same checks (targets are judged at {TARGET_BATCH:,})"
        else:
            label = ("targets" if name.startswith("python")
                     else "same checks (the targets are the python processor's)")
        lines.append(f"  {label}, {name}: {verdicts}")
    bounds = [f"10 ms model at zero CPU, archived first: at most "
              f"{round_trip_ceiling(size, handler.POOL_SIZE, handler.BATCH_WRITE_LIMIT):,.0f}/s"]
    if MOTO_ALONE in best and SEED_MOTO in best:
        bounds.insert(0, f"moto alone / seed {best[MOTO_ALONE]['per_second'] / best[SEED_MOTO]['per_second']:.1f}x")
    lines.append(f"  bounds: {'; '.join(bounds)}")
    return lines


LAMBDA_BATCH_BYTES = 6 * 1024 * 1024  # a Kinesis event source mapping delivers at most 6 MB per invocation
PYTHON_WORST = """
import json, resource, sys, time
job = json.loads(sys.stdin.read())
sys.path[:0] = job["path"]
from bench_support import clients, load_handler, make_runtime
index = load_handler()
event = json.load(open(job["eventPath"]))
s3, dynamodb = clients(job["endpoint"], pool=index.POOL_SIZE)
summary = {}
def emit(line):
    if '"batch processed"' in line:
        summary.update(json.loads(line))
runtime = make_runtime(index, job["env"], s3, dynamodb, emit=emit)
class Context:
    started = time.monotonic()
    def get_remaining_time_in_millis(self):
        return job["budgetMs"] - (time.monotonic() - self.started) * 1000
started = time.perf_counter()
try:
    failures = len(index.process(event, Context(), runtime)["batchItemFailures"])
except index.BatchFailed:
    failures = len(event["Records"])
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "failures": failures, "summary": summary,
                  "maxRssMb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _multi_payload(device: str, readings: dict[str, Any], at_ms: int) -> dict[str, Any]:
    return {"deviceId": device, "timestamp": at_ms, "receivedAt": at_ms + 40, "topicDeviceId": device,
            "readings": readings}


def worst_case_events() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (environment, Kinesis event) of each worst case, each as large as one Lambda batch may be."""
    base_ms = int(time.time() * 1000) - 600_000

    def batch(make: Callable[[int], dict[str, Any]], limit_records: int = 10_000) -> dict[str, Any]:
        records, size = [], 0
        while len(records) < limit_records:
            payload = make(len(records))
            size += len(json.dumps(payload)) * 4 // 3 + 200
            if size > LAMBDA_BATCH_BYTES:
                break
            records.append({"sequenceNumber": str(49_000_000 + len(records)), "partitionKey": payload["deviceId"],
                            "arrivedAt": base_ms + 60 + len(records), "payload": payload})
        return kinesis_event(records)

    store = {**ENV, "UNKNOWN_SENSOR": "store"}
    return {
        "5,000 unknown types per 70 KB message": (ENV, batch(lambda n: _multi_payload(
            f"press-{n % 20:02d}", {f"x{i:04d}": i for i in range(5_000)}, base_ms + n))),
        "9,000 readings per 125 KB message": (ENV, batch(lambda n: _multi_payload(
            f"press-{n % 20:02d}", {f"r{i:04d}": i for i in range(9_000)}, base_ms + n))),
        "100 readings per message (stored)": (store, batch(lambda n: _multi_payload(
            f"press-{n % 20:02d}", {f"s{i:03d}": n % 97 + i for i in range(100)}, base_ms + n))),
        "10,000 one-reading records": (ENV, batch(lambda n: synthetic_records(1, n, base_ms + n)[0]["payload"])),
        # The samples form's most a message may carry: 1,000 one-reading samples, a second apart.
        "1,000 samples per message (stored)": (ENV, batch(lambda n: _samples_payload(
            f"press-{n % 20:02d}", base_ms + n))),
        "1,000 samples per message (packed)": (PACKED_ENV, batch(lambda n: _samples_payload(
            f"press-{n % 20:02d}", base_ms + n))),
    }


def _samples_payload(device: str, at_ms: int) -> dict[str, Any]:
    sensors = ("temperature", "pressure", "vibration")
    samples = [{"timestamp": at_ms - 1_000_000 + i * 1_000, "sensorType": sensors[i % 3], "value": 20 + i % 7}
               for i in range(1_000)]
    return {"deviceId": device, "receivedAt": at_ms + 40, "topicDeviceId": device, "samples": samples}


def readings_in(event: dict[str, Any]) -> int:
    """The readings the event's payloads carry (a multi-reading message counts each)."""
    payloads = [json.loads(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]]
    return sum(_readings_of(payload) for payload in payloads)


def _readings_of(payload: dict[str, Any]) -> int:
    if isinstance(payload.get("samples"), list):
        return sum(_readings_of(sample) for sample in payload["samples"])
    return len(payload["readings"]) if isinstance(payload.get("readings"), dict) else 1


def configured_processor() -> tuple[int, int]:
    """The processor's memory size (MB) and timeout (s) of iotpipe.toml, env dev."""
    from iotpipe.config import load_config

    processor = load_config(REPO / "iotpipe.toml", env="dev").processor
    return processor.memory_mb, processor.timeout_seconds


def run_worst(endpoint: str, env: dict[str, Any], event: dict[str, Any], budget_ms: int, node: bool) -> dict[str, Any]:
    """One worst-case invocation in a fresh process (Python, or the Node twin through node_driver.js)."""
    if node:
        job = {"handlerPath": str(NODE_TWIN), "events": [event], "budgetMs": budget_ms,
               "env": {**settings_env(env), "AWS_ENDPOINT_URL": endpoint}}
        process_env = {**os.environ, "NODE_NO_WARNINGS": "1", "AWS_REGION": "us-east-1"}
        done = subprocess.run(["node", str(NODE_DRIVER)], input=json.dumps(job), env=process_env, text=True,
                              capture_output=True, check=False, timeout=NODE_TIMEOUT_S)
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
            json.dump(event, handle)
            handle.flush()
            job = {"path": [str(REPO / "bench"), str(REPO / "src")], "eventPath": handle.name, "env": env,
                   "endpoint": endpoint, "budgetMs": budget_ms}
            done = subprocess.run([sys.executable, "-c", PYTHON_WORST], input=json.dumps(job), text=True,
                                  capture_output=True, check=False, timeout=NODE_TIMEOUT_S)
    if done.returncode != 0:
        raise SystemExit(f"worst case failed ({'node' if node else 'python'}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main_worst(cases: list[str] | None) -> int:
    """The worst-case table: time, peak memory against the configured memory size, what was stored."""
    memory_mb, timeout_s = configured_processor()
    server, endpoint = start_moto_server(patched=False)  # plain moto, as the worst-case table was measured
    try:
        s3, dynamodb = clients(endpoint)
        create_resources(s3, dynamodb)
        print(f"worst-case batches, one invocation each in a fresh process, budget {timeout_s} s (the configured "
              f"timeout); peak RSS of the whole process against the configured {memory_mb} MB")
        print(f"{'case':<40} {'processor':<7} {'records':>7} {'readings':>8} {'seconds':>8} {'peak MB':>8} "
              f"{'stored':>7} {'quarant.':>8} {'failed':>6}")
        processors = [("python", False)] + ([("node", True)] if node_ready() else [])
        for name, (env, event) in worst_case_events().items():
            if cases and not any(c in name for c in cases):
                continue
            for processor, node in processors:
                result = run_worst(endpoint, env, event, timeout_s * 1000, node)
                summary = result.get("summary") or {}
                print(f"{name:<40} {processor:<7} {len(event['Records']):>7} {readings_in(event):>8} "
                      f"{result['seconds']:>8.1f} {result['maxRssMb']:>8.0f} {summary.get('stored', 0):>7} "
                      f"{summary.get('quarantined', 0):>8} {result['failures']:>6}"
                      f"{'' if result['maxRssMb'] <= memory_mb else '  OVER the memory size'}", flush=True)
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


EMULATOR_ROWS = (PYTHON_EMULATOR, TWIN_EMULATOR)


def emulator_modes(emulator: Emulator, env: dict[str, Any], suffix: str, detection: bool, with_node: bool
                   ) -> list[tuple[str, Callable[[list[dict[str, Any]]], dict[str, float]]]]:
    """The python (and node twin) rows of ``env`` against the emulator; with ``detection``, detection on too."""
    envs = [(env, "")] + ([(detection_on(env), DETECTION_ON)] if detection else [])
    modes: list[tuple[str, Callable[[list[dict[str, Any]]], dict[str, float]]]] = []
    for row_env, on in envs:
        modes.append((PYTHON_EMULATOR + suffix + on, partial(run_python, emulator.endpoint, hook=None, env=row_env)))
        if with_node:
            modes.append((TWIN_EMULATOR + suffix + on,
                          partial(run_twin, emulator.endpoint, latency_ms=None, env=row_env)))
    return modes


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000], help="readings per Kinesis event")
    parser.add_argument("--readings-per-size", type=int, default=3000, help="readings driven per size and mode")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs per row; the best is shown")
    parser.add_argument("--seed-dir", type=Path, default=None,
                        help="a folder with the seed's TapStack.yml: adds the seed handler's rows and the ratios")
    parser.add_argument("--budget-s", type=float, default=900,
                        help="no further interleaved round starts after this many seconds (each size runs once)")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS),
                        help="storage layouts of the processor rows (STORAGE_LAYOUT)")
    parser.add_argument("--plain-moto", action="store_true",
                        help="moto without iotpipe's fixes (the default server has them, as the tests' does)")
    parser.add_argument("--compare-detection", action="store_true",
                        help="add each processor row with the learned detector on, and the on/off ratio")
    parser.add_argument("--detection-pairs", type=int, default=9,
                        help="with --compare-detection: paired off/on runs of each 10 ms model row; detection's "
                             "budget is judged on the median of their ratios (0: not judged)")
    parser.add_argument("--pair-readings", type=int, default=10_000,
                        help="readings driven by each paired run (--detection-pairs)")
    parser.add_argument("--emulator", action="store_true",
                        help="add the python and node twin rows (with --compare-detection, detection on too) against "
                             "iotpipe local's emulator: waitress, HTTP keep-alive, as Lambda keeps its connections")
    parser.add_argument("--worst", action="store_true", help="run the worst-case batches instead (bench-worst)")
    parser.add_argument("--cases", nargs="+", help="with --worst: only the cases whose name contains one of these")
    args = parser.parse_args(argv)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    if args.worst:
        return main_worst(args.cases)

    server, endpoint = start_moto_server(patched=not args.plain_moto)
    print(f"moto server: {'plain' if args.plain_moto else 'with iotpipe moto fixes'}")
    emulator = None
    try:
        s3, dynamodb = clients(endpoint)
        create_resources(s3, dynamodb)
        if args.emulator:
            emulator = start_emulator()
            create_resources(*clients(emulator.endpoint))
            print(f"local emulator: iotpipe local's (waitress, keep-alive, iotpipe moto fixes) at {emulator.endpoint}")
        latency = f"{LATENCY_S * 1000:.0f} ms per call (no server)"
        modes: list[tuple[str, Callable[[list[dict[str, Any]]], dict[str, float]]]] = [
            (MOTO_ALONE, lambda events: run_moto_alone(endpoint, events))]
        latency_labels: dict[str, str] = {}
        with_node = node_ready()
        trained = trained_states() if args.compare_detection else {}
        for layout in args.layouts:
            env, suffix = (PACKED_ENV, ", packed") if layout == "packed" else (ENV, "")
            name_suffix = " packed" if suffix else ""
            modes += [
                (PYTHON_MOTO + suffix, lambda events, env=env: run_python(endpoint, events, None, env)),
                (f"python, {latency}{suffix}",
                 lambda events, env=env: run_python(endpoint, events, LatencyModel(), env)),
            ]
            latency_labels[f"python{name_suffix}"] = f"python, {latency}{suffix}"
            if with_node:
                modes += [
                    (TWIN_MOTO + suffix, lambda events, env=env: run_twin(endpoint, events, None, env)),
                    (f"node twin, {latency}{suffix}",
                     lambda events, env=env: run_twin(endpoint, events, LATENCY_S * 1000, env)),
                ]
                latency_labels[f"node twin{name_suffix}"] = f"node twin, {latency}{suffix}"
            if args.compare_detection:
                on = detection_on(env)
                modes += [
                    (PYTHON_MOTO + suffix + DETECTION_ON,
                     lambda events, on=on: run_python(endpoint, events, None, on)),
                    (f"python, {latency}{suffix}{DETECTION_ON}",
                     lambda events, on=on: run_python(endpoint, events, LatencyModel(trained), on)),
                ]
                if with_node:
                    modes += [
                        (TWIN_MOTO + suffix + DETECTION_ON,
                         lambda events, on=on: run_twin(endpoint, events, None, on)),
                        (f"node twin, {latency}{suffix}{DETECTION_ON}",
                         lambda events, on=on: run_twin(endpoint, events, LATENCY_S * 1000, on, trained)),
                    ]
            if emulator is not None:
                modes += emulator_modes(emulator, env, suffix, args.compare_detection, with_node)
        if not with_node:
            print("node or its AWS SDK (make install) is missing: no node twin or seed rows", file=sys.stderr)
        with_seed = with_node and args.seed_dir is not None and (args.seed_dir / "TapStack.yml").is_file()
        if args.seed_dir is None:
            print("no --seed-dir given: no seed rows, no ratio to the seed", file=sys.stderr)
        elif with_node and not with_seed:
            print(f"no TapStack.yml in --seed-dir {args.seed_dir}: no seed rows, no ratio to the seed",
                  file=sys.stderr)
        if with_seed:
            create_seed_resources(s3, dynamodb)
            modes.append((SEED_MOTO, lambda events: run_seed(endpoint, events, args.seed_dir)))
        print(f"best of {args.repeat} interleaved runs per row (other work on the machine only ever slows a run); "
              f"calls = HTTP attempts, retries included")
        print(f"{'run':<{LABEL_WIDTH}} {'batch':>6} {'readings':>9} {'readings/s':>12} {'calls/1000':>14} "
              f"{'failures':>9} {'server ms/1000':>14}")
        print("(server ms/1000: the moto server process's CPU per 1,000 readings, warm-up batch included; "
              "'-' for the rows that reach no server)")
        latency_rows = {label for label, _ in modes if latency in label}  # no server: nothing to measure there
        deadline = time.monotonic() + args.budget_s
        for size in args.sizes:
            events = events_for(size, args.readings_per_size)
            best: dict[str, dict[str, float]] = {}
            for round_ in range(args.repeat):
                if round_ and time.monotonic() > deadline:
                    print(f"time budget of {args.budget_s:.0f} s spent: batch {size} rows are the best of "
                          f"{round_} runs", file=sys.stderr)
                    break
                for label, run in modes:
                    if label in latency_rows:
                        result = run(events)
                    elif emulator is not None and label.startswith(EMULATOR_ROWS):
                        result = with_server_cpu(with_connections(run, emulator), emulator.process.pid, size)(events)
                    else:
                        result = with_server_cpu(run, server.pid, size)(events)
                    if label not in best or result["per_second"] > best[label]["per_second"]:
                        best[label] = result
            for label, result in best.items():
                print(_row(label, size, result), flush=True)
            if with_seed:
                for label, name in ((PYTHON_MOTO, "python"), (TWIN_MOTO, "node twin"), (PYTHON_PACKED, "python packed"),
                                    (TWIN_PACKED, "node twin packed")):
                    if label not in best:
                        continue
                    ratio = best[label]["per_second"] / best[SEED_MOTO]["per_second"]
                    print(f"{f'  {name} / seed on moto':<{LABEL_WIDTH}} {size:>6} {'':>9} {ratio:>11.1f}x",
                          flush=True)
            for label in [label for label in best if label + DETECTION_ON in best]:
                ratio = best[label + DETECTION_ON]["per_second"] / best[label]["per_second"]
                print(f"{f'  detection on / off: {label}':<{LABEL_WIDTH}} {size:>6} {'':>9} {ratio:>11.2f}x",
                      flush=True)
            probation = load_handler().DETECTOR_PRESETS["onset"].probation
            for label, result in best.items():
                if "learned_min" in result:
                    print(f"  state items after the run: {label}: each series has learned {result['learned_min']:,.0f} "
                          f"to {result['learned_max']:,.0f} readings (probation {probation})", flush=True)
            for label, result in best.items():
                if "connections" in result:
                    print(f"  keep-alive: {label}, {size}-reading batches: {result['connections']:.0f} connections "
                          f"for {result['requests']:,.0f} requests (warm-up batch included)", flush=True)
            paired: dict[str, list[float]] = {}
            if args.compare_detection and args.detection_pairs > 0:
                runs = dict(modes)
                pair_events = events_for(size, args.pair_readings)
                for label in latency_labels.values():
                    if label + DETECTION_ON in runs:
                        paired[label] = paired_ratios(partial(runs[label], pair_events),
                                                      partial(runs[label + DETECTION_ON], pair_events),
                                                      args.detection_pairs)
                        print(f"{f'  detection on / off, paired: {label}':<{LABEL_WIDTH}} {size:>6} {'':>9} "
                              f"{statistics.median(paired[label]):>11.2f}x  median of "
                              f"{' '.join(f'{r:.3f}' for r in paired[label])}", flush=True)
            for line in target_verdicts(best, latency_labels, size, load_handler(), paired):
                print(line, flush=True)
            if args.compare_detection:
                for line in detection_memory(size, trained):
                    print(line, flush=True)
    finally:
        stop_server(server)
        if emulator is not None:
            stop_server(emulator.process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
