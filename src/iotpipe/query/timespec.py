"""Time arguments of the read commands: ``--since`` parsing, ISO 8601 output, sort keys and UTC days."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from iotpipe.errors import ParameterError

MAX_SINCE_DAYS = 3650
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return int(time.time() * 1000)


def iso_ms(epoch_ms: int) -> str:
    """Epoch ms -> ``2026-01-02T03:04:05.678Z``."""
    return (
        datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def parse_since(text: str, now: int) -> int:
    """``--since`` (``30s``, ``10m``, ``1h``, ``7d``, ``2w`` or an ISO 8601 time) -> epoch ms."""
    value = (text or "").strip()
    match = _DURATION.fullmatch(value)
    if match:
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if seconds > MAX_SINCE_DAYS * 86400:
            raise ParameterError("since", text, f"is too far back: at most {MAX_SINCE_DAYS} days")
        return now - seconds * 1000
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ParameterError(
            "since", text, "is not valid; use a duration like 30s, 10m, 1h, 7d or an ISO 8601 "
            "time like 2026-01-02T03:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    since = int(moment.timestamp() * 1000)
    if since > now:
        raise ParameterError("since", text, "is in the future")
    return since


def sort_key_from(epoch_ms: int) -> str:
    """The smallest ``sk`` at or after ``epoch_ms`` (sk = ``<13-digit ms>#<sensorType>#<value>``)."""
    return f"{max(epoch_ms, 0):013d}"


def days_between(since_ms: int, until_ms: int) -> list[str]:
    """The UTC days ``YYYY-MM-DD`` from ``until_ms`` back to ``since_ms`` (newest first)."""
    first = datetime.fromtimestamp(since_ms / 1000, tz=UTC).date()
    day = datetime.fromtimestamp(until_ms / 1000, tz=UTC).date()
    days: list[str] = []
    while day >= first and len(days) <= MAX_SINCE_DAYS:
        days.append(day.isoformat())
        day -= timedelta(days=1)
    return days
