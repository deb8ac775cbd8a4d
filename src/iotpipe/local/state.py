"""How commands find a running ``iotpipe local``: a state file in the project directory.

``iotpipe local up`` writes ``.iotpipe/local/state.json`` (or under ``$IOTPIPE_LOCAL_DIR``) once everything is
ready, and removes it when it stops. Every other command run with the same ``--env`` and no ``--endpoint-url``
reads it and sends its AWS calls to the emulator and its MQTT messages to the local broker, with the run's own
random credentials kept in that file (0600, in a 0700 directory). The directory is found like git finds its own:
from the working directory upwards (``$IOTPIPE_LOCAL_DIR`` wins). A supervisor holds ``lock`` in it for its
lifetime, so one folder runs one instance. A state file whose process is gone, or whose pid now belongs to another
program, is stale: it is reported and ignored, and no signal is ever sent to that pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import string
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from iotpipe.errors import LocalError

# The emulator's client factory and defaults, re-exported where the other rooms have always found them.
from iotpipe.local.emulator.clients import LOCAL_CREDENTIALS as LOCAL_CREDENTIALS
from iotpipe.local.emulator.clients import LOCAL_REGION as LOCAL_REGION
from iotpipe.local.emulator.clients import LocalClientFactory as LocalClientFactory
from iotpipe.local.processes import command_line, process_alive

STATE_DIR_VARIABLE = "IOTPIPE_LOCAL_DIR"
LOCK_FD_VARIABLE = "IOTPIPE_LOCAL_LOCK_FD"
DEFAULT_STATE_DIR = Path(".iotpipe") / "local"
STATE_FILE = "state.json"
LOCK_FILE = "lock"
KEEP_LOGS = 3
_KEY_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class LocalCredentials:
    """One run's credentials: the only access key the emulator accepts, and the broker's only user."""

    aws_access_key_id: str
    aws_secret_access_key: str
    mqtt_username: str
    mqtt_password: str


def new_credentials() -> LocalCredentials:
    """Fresh random credentials (an access key shaped like AWS's, 160-bit secrets)."""
    key = "AKIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
    return LocalCredentials(aws_access_key_id=key, aws_secret_access_key=secrets.token_urlsafe(30),
                            mqtt_username=f"iotpipe-{secrets.token_hex(4)}", mqtt_password=secrets.token_urlsafe(24))


@dataclass(frozen=True)
class LocalState:
    """Where a running ``iotpipe local`` is, and what it serves."""

    env: str
    stack_name: str
    region: str
    aws_endpoint: str
    mqtt: str
    broker: str
    pid: int
    child_pids: tuple[int, ...]
    started_at: str
    ready: bool
    log_file: str
    aws_access_key_id: str = LOCAL_CREDENTIALS[0]
    aws_secret_access_key: str = LOCAL_CREDENTIALS[1]
    mqtt_username: str = ""
    mqtt_password: str = ""
    command: str = ""  # the supervisor's command line, to tell it from a process that reused its pid
    console_url: str = ""  # the console's page with its token; "" when it is not served

    @property
    def credentials(self) -> LocalCredentials:
        """The run's credentials."""
        return LocalCredentials(self.aws_access_key_id, self.aws_secret_access_key, self.mqtt_username,
                                self.mqtt_password)

    def as_dict(self) -> dict[str, Any]:
        """The state as JSON-ready data (the keys ``iotpipe local up --output json`` prints)."""
        return {"env": self.env, "stackName": self.stack_name, "region": self.region,
                "awsEndpoint": self.aws_endpoint, "mqtt": self.mqtt, "broker": self.broker, "pid": self.pid,
                "childPids": list(self.child_pids), "startedAt": self.started_at, "ready": self.ready,
                "logFile": self.log_file, "awsAccessKeyId": self.aws_access_key_id,
                "awsSecretAccessKey": self.aws_secret_access_key, "mqttUsername": self.mqtt_username,
                "mqttPassword": self.mqtt_password, "consoleUrl": self.console_url}


def state_dir(start: Path | None = None) -> Path:
    """The directory of the state file, broker files, function code and logs: ``$IOTPIPE_LOCAL_DIR``, else the
    nearest ``.iotpipe/local`` of this user from ``start`` (the working directory) upwards, else the one in
    ``start``."""
    given = os.environ.get(STATE_DIR_VARIABLE)
    if given:
        return Path(given).absolute()
    here = (start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        candidate = folder / DEFAULT_STATE_DIR
        with contextlib.suppress(OSError):
            # another user's folder (say /tmp/.iotpipe/local) would hand us their endpoint: skip it
            if candidate.is_dir() and candidate.stat().st_uid == os.getuid():
                return candidate
    return here / DEFAULT_STATE_DIR


def ensure_private_dir(directory: Path) -> Path:
    """Create ``directory`` (and parents) readable by this user only (0700); an existing one is made 0700."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o077:
        directory.chmod(0o700)
    return directory


def rotate_log(path: Path, keep: int = KEEP_LOGS) -> None:
    """Keep the previous runs' logs as ``<name>.1<suffix>`` (the last run) .. ``<name>.<keep><suffix>``; the
    next run writes ``path`` afresh."""
    def numbered(index: int) -> Path:
        return path.with_name(f"{path.stem}.{index}{path.suffix}")

    numbered(keep).unlink(missing_ok=True)
    for index in range(keep - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            numbered(index).rename(numbered(index + 1))
    with contextlib.suppress(FileNotFoundError):
        path.rename(numbered(1))


def state_path(directory: Path | None = None) -> Path:
    """The state file's path."""
    return (directory or state_dir()) / STATE_FILE


def write_state(state: LocalState, directory: Path | None = None) -> None:
    """Write the state file atomically (a reader never sees half of it)."""
    path = state_path(directory)
    ensure_private_dir(path.parent)
    data = {field.name: getattr(state, field.name) for field in fields(state)}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".state-", suffix=".tmp")  # 0600: it has secrets
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump({**data, "child_pids": list(state.child_pids)}, stream, indent=2)
    os.replace(temporary, path)


def read_state(directory: Path | None = None) -> LocalState | None:
    """The state file's content; None when there is none; LocalError when it is not a state file."""
    path = state_path(directory)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return LocalState(**{**raw, "child_pids": tuple(raw.get("child_pids", ()))})
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise LocalError(f"{path} is not an iotpipe local state file ({exc}); delete it if no "
                         "`iotpipe local` runs") from None


def remove_state(directory: Path | None = None, pid: int | None = None) -> None:
    """Delete the state file (only if it belongs to ``pid`` when given)."""
    path = state_path(directory)
    try:
        if pid is not None:
            current = read_state(directory)
            if current is not None and current.pid != pid:
                return
        path.unlink()
    except (FileNotFoundError, LocalError):
        return


def supervisor_alive(state: LocalState) -> bool:
    """Whether the supervisor of ``state`` still runs: its pid is alive and runs the command it recorded (a
    state file without one: an iotpipe command), so a pid reused by another program does not count."""
    if not process_alive(state.pid):
        return False
    if not Path("/proc/self/cmdline").exists():  # no /proc (macOS): the pid is all there is to go by
        return True
    current = command_line(state.pid)
    return current == state.command if state.command else "iotpipe" in current


def running_state(directory: Path | None = None) -> LocalState | None:
    """The state of a live, ready ``iotpipe local``; None when none runs (a stale file is ignored)."""
    try:
        state = read_state(directory)
    except LocalError:
        return None
    if state is None or not state.ready or not supervisor_alive(state):
        return None
    return state


class DirectoryLock:
    """An exclusive ``flock`` on ``<directory>/lock``, held by one supervisor for its lifetime (the kernel
    drops it when the process dies, so a killed run never leaves it behind)."""

    def __init__(self, directory: Path, inherited_fd: int | None = None) -> None:
        import fcntl

        self.path = ensure_private_dir(directory) / LOCK_FILE
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if inherited_fd is not None and _same_file(inherited_fd, self.fd):
            # `local up --detach` took the lock and handed its open file to this child: the lock is ours
            os.close(self.fd)
            self.fd = inherited_fd
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise LocalError(_held_message(directory)) from None

    def release(self) -> None:
        """Close the lock file (the lock is gone once no process holds a copy of it); idempotent."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _same_file(first: int, second: int) -> bool:
    try:
        one, other = os.fstat(first), os.fstat(second)
    except OSError:
        return False
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)


def _held_message(directory: Path) -> str:
    try:
        found = read_state(directory)
    except LocalError:
        found = None
    if found is not None:
        return (f"iotpipe local already runs (pid {found.pid}, env {found.env}, AWS {found.aws_endpoint}, "
                f"MQTT {found.mqtt}); stop it with `iotpipe local down` first")
    return (f"iotpipe local is starting or running in {directory} (its lock is held); wait for it, or stop it "
            "with `iotpipe local down`")


def local_factory(state: LocalState) -> LocalClientFactory:
    """A client factory pointed at the emulator of ``state``, with its credentials."""
    return LocalClientFactory(region=state.region, endpoint_url=state.aws_endpoint,
                              access_key_id=state.aws_access_key_id, secret_access_key=state.aws_secret_access_key)

