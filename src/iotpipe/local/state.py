"""How commands find a running ``iotpipe local``: a state file in the project directory.

``iotpipe local up`` writes ``.iotpipe/local/state.json`` (or under ``$IOTPIPE_LOCAL_DIR``) once everything is
ready, and removes it when it stops. Every other command run with the same ``--env`` and no ``--endpoint-url``
reads it and sends its AWS calls to the emulator (with placeholder credentials) and its MQTT messages to the local
broker. A state file whose process is gone is stale: it is reported and ignored.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from iotpipe.aws import ClientFactory
from iotpipe.errors import LocalError
from iotpipe.local.processes import process_alive

STATE_DIR_VARIABLE = "IOTPIPE_LOCAL_DIR"
DEFAULT_STATE_DIR = Path(".iotpipe") / "local"
STATE_FILE = "state.json"
LOCAL_REGION = "us-east-1"
LOCAL_CREDENTIALS = ("local", "local")


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

    def as_dict(self) -> dict[str, Any]:
        """The state as JSON-ready data (the keys ``iotpipe local up --output json`` prints)."""
        return {"env": self.env, "stackName": self.stack_name, "region": self.region,
                "awsEndpoint": self.aws_endpoint, "mqtt": self.mqtt, "broker": self.broker, "pid": self.pid,
                "childPids": list(self.child_pids), "startedAt": self.started_at, "ready": self.ready,
                "logFile": self.log_file}


def state_dir() -> Path:
    """The directory of the state file, broker files, function code and logs."""
    return Path(os.environ.get(STATE_DIR_VARIABLE) or DEFAULT_STATE_DIR).absolute()


def state_path(directory: Path | None = None) -> Path:
    """The state file's path."""
    return (directory or state_dir()) / STATE_FILE


def write_state(state: LocalState, directory: Path | None = None) -> None:
    """Write the state file atomically (a reader never sees half of it)."""
    path = state_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {field.name: getattr(state, field.name) for field in fields(state)}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".state-", suffix=".tmp")
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


def running_state(directory: Path | None = None) -> LocalState | None:
    """The state of a live, ready ``iotpipe local``; None when none runs (a stale file is ignored)."""
    try:
        state = read_state(directory)
    except LocalError:
        return None
    if state is None or not state.ready or not process_alive(state.pid):
        return None
    return state


@dataclass(frozen=True)
class LocalClientFactory(ClientFactory):
    """Clients for the emulator: its endpoint, its region and placeholder credentials (it checks none)."""

    def session(self) -> Any:
        """A boto3 session with the emulator's placeholder credentials."""
        import boto3

        key, secret = LOCAL_CREDENTIALS
        return boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                                     region_name=self.region or LOCAL_REGION)


def local_factory(state: LocalState) -> LocalClientFactory:
    """A client factory pointed at the emulator of ``state``."""
    return LocalClientFactory(region=state.region, endpoint_url=state.aws_endpoint)

