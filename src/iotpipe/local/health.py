"""The health of a running ``iotpipe local``: what its supervisor found in each part, and what ``local status``
concludes from that and from its own look at the processes.

The supervisor (:meth:`iotpipe.local.supervisor.LocalPipeline.serve_forever`) checks every part each
:data:`CHECK_INTERVAL_S` and writes the result to ``health.json`` next to the state file: one
:class:`PartHealth` per part, the time of the check (the supervisor's heartbeat), the restarts it made, and
the failure that made it give up, if any. ``local status`` reads that record but does not trust it alone: it
checks the supervisor's and the child processes' pids itself, and a heartbeat older than
:data:`HEARTBEAT_STALE_S` means the supervisor itself stopped answering. A failure record outlives the
supervisor, so ``local status`` keeps naming the failed part until ``local down`` or the next ``local up``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from iotpipe.local.processes import process_state
from iotpipe.local.state import LocalState, read_state, remove_state, state_dir, supervisor_alive

HEALTH_FILE = "health.json"
CHECK_INTERVAL_S = 1.0
# A check takes at most a few seconds (the emulator's probe times out after EMULATOR_PROBE_TIMEOUT_S): a record
# older than this was written by a supervisor that no longer checks anything.
HEARTBEAT_STALE_S = 10.0
EMULATOR_PROBE_TIMEOUT_S = 2.0
# Consecutive failed probes before a live emulator counts as not answering (one slow answer under a deploy's
# load is not a failure; three in a row, about 3-9 s, are).
EMULATOR_MISSES = 3
MAX_EVENTS = 20

OK = "ok"
DEAD = "dead"
STOPPED = "stopped"
NOT_ANSWERING = "not answering"


@dataclass(frozen=True)
class PartHealth:
    """One part of the pipeline as last checked: ``state`` is ok, dead, stopped or not answering."""

    part: str  # emulator, broker, rule engine, stack watcher, mapping <function>, worker <function>, supervisor
    state: str = OK
    pid: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the part works."""
        return self.state == OK

    def describe(self) -> str:
        """``broker (pid 42): dead: exited with code -9``."""
        pid = f" (pid {self.pid})" if self.pid else ""
        return f"{self.part}{pid}: {self.state}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class HealthRecord:
    """What the supervisor wrote at its last check."""

    pid: int  # the supervisor's
    checked_at: float  # epoch seconds: the heartbeat
    parts: tuple[PartHealth, ...] = ()
    failure: str | None = None  # why the supervisor gave up; set once
    events: tuple[str, ...] = ()  # the last MAX_EVENTS restarts and discards, oldest first

    def with_event(self, event: str) -> HealthRecord:
        """This record with ``event`` appended (the oldest dropped past MAX_EVENTS)."""
        return replace(self, events=(*self.events, event)[-MAX_EVENTS:])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data, as written to the file and printed by ``local status --output json``."""
        return {"pid": self.pid, "checkedAt": self.checked_at, "failure": self.failure,
                "parts": [asdict(part) for part in self.parts], "events": list(self.events)}


def health_path(directory: Path | None = None) -> Path:
    """The health record's path."""
    return (directory or state_dir()) / HEALTH_FILE


def write_health(record: HealthRecord, directory: Path | None = None) -> None:
    """Write the record atomically (a reader never sees half of it)."""
    path = health_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".health-", suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(record.as_dict(), stream, indent=2)
    os.replace(temporary, path)


def read_health(directory: Path | None = None) -> HealthRecord | None:
    """The record; None when there is none or it cannot be read (a record is advice, never required)."""
    try:
        raw = json.loads(health_path(directory).read_text(encoding="utf-8"))
        return HealthRecord(pid=int(raw["pid"]), checked_at=float(raw["checkedAt"]), failure=raw.get("failure"),
                            parts=tuple(PartHealth(**part) for part in raw.get("parts", ())),
                            events=tuple(raw.get("events", ())))
    except (OSError, ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None


def remove_health(directory: Path | None = None) -> None:
    """Delete the record (``local down``, and a new ``local up``)."""
    health_path(directory).unlink(missing_ok=True)


def assess(state: LocalState | None, record: HealthRecord | None, now: float) -> tuple[PartHealth, ...]:
    """The failed parts of the ``iotpipe local`` described by ``state`` (None: no state file) and ``record``, as
    seen now (epoch seconds): the supervisor's own findings, checked against the processes themselves. Empty
    when everything works, and when nothing runs and nothing failed."""
    if record is not None and record.failure:
        return tuple(part for part in record.parts if not part.ok) or (
            PartHealth("supervisor", DEAD, record.pid, record.failure),)
    if state is None:
        return ()
    supervisor = process_state(state.pid)
    if supervisor != DEAD and not supervisor_alive(state):  # the pid now runs another program
        supervisor = DEAD
    if supervisor == DEAD:
        orphans = [pid for pid in state.child_pids if process_state(pid) != DEAD]
        if not orphans:
            return ()  # killed, and its children with it: nothing runs, which status says
        return (PartHealth("supervisor", DEAD, state.pid, "killed; its children still run "
                           f"(pids {', '.join(map(str, orphans))}): stop them with `iotpipe local down`"),)
    if supervisor == STOPPED:
        return (PartHealth("supervisor", STOPPED, state.pid, "it checks and serves nothing until resumed "
                           f"(kill -CONT {state.pid}) or stopped (`iotpipe local down`)"),)
    if record is None or record.pid != state.pid:
        return ()  # still starting: the first check has not been written yet
    failed = []
    if now - record.checked_at > HEARTBEAT_STALE_S:
        failed.append(PartHealth("supervisor", NOT_ANSWERING, state.pid,
                                 f"its last check was {now - record.checked_at:.0f} s ago"))
    for part in record.parts:
        # the emulator's and the broker's pids are checked again here (a worker's pid may be rightly gone: killed
        # at its deadline and replaced)
        seen = process_state(part.pid) if part.pid and part.part in ("emulator", "broker") else "running"
        if seen in (DEAD, STOPPED):
            failed.append(replace(part, state=seen, detail=part.detail or "found by local status"))
        elif not part.ok:
            failed.append(part)
    return tuple(failed)


@dataclass(frozen=True)
class LocalStatus:
    """What ``iotpipe local status`` found: the run (None when none runs), its failed parts, its last record."""

    state: LocalState | None
    failed: tuple[PartHealth, ...]
    record: HealthRecord | None
    stale_pid: int | None = None  # a state file of a killed run, removed
    failure: str | None = None  # why the supervisor gave up, when it did

    @property
    def running(self) -> bool:
        """True while the supervisor's process lives."""
        return self.state is not None and process_state(self.state.pid) != DEAD

    @property
    def healthy(self) -> bool:
        """True when nothing failed (whether or not anything runs)."""
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data (``local status --output json``)."""
        data: dict[str, Any] = {"running": self.running}
        if self.state is not None:
            data.update(self.state.as_dict())
        if self.record is not None or self.failed:
            data["healthy"] = self.healthy
            data["failed"] = [asdict(part) for part in self.failed]
        if self.failure:
            data["failure"] = self.failure
        if self.record is not None:
            data["parts"] = [asdict(part) for part in self.record.parts]
            data["events"] = list(self.record.events)
        return data


def local_status(directory: Path | None = None, now: float | None = None) -> LocalStatus:
    """The status of the ``iotpipe local`` of ``directory``: its state file and health record, checked against
    the processes. A state file of a killed run whose children are gone too is removed (``stale_pid``); a
    failure record is kept (``local down`` or the next ``local up`` clears it). LocalError when the state file
    is not one."""
    directory = directory or state_dir()
    state = read_state(directory)
    record = read_health(directory)
    failed = assess(state, record, time.time() if now is None else now)
    stale = None
    if state is not None and not supervisor_alive(state) and not failed:
        stale = state.pid
        remove_state(directory)
        remove_health(directory)
        state, record = None, None
    return LocalStatus(state=state, failed=failed, record=record, stale_pid=stale,
                       failure=record.failure if record is not None else None)
