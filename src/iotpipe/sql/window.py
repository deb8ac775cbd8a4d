"""The query window: times, hours and days of a window, and the hour of an archive key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

# The processor's rules a reading must pass (docs/contract.md section 3), mirrored where the quarantine cannot say
# which reading of a record it refused: the samples form holds one sensor type in several samples.
from iotpipe.errors import ConfigError, ParameterError

HOUR_MS = 3_600_000


_ARCHIVE_KEY = re.compile(r"^(raw|quarantine)/year=(\d{4})/month=(\d{2})/day=(\d{2})/hour=(\d{2})/([^/]+)/[^/]+$")


@dataclass(frozen=True)
class Window:
    """A time window of archive arrival times, epoch ms, ``start`` inclusive and ``end`` exclusive."""

    start_ms: int
    end_ms: int

    @property
    def start(self) -> datetime:
        """Start as a naive UTC datetime."""
        return _utc(self.start_ms)

    @property
    def end(self) -> datetime:
        """End as a naive UTC datetime."""
        return _utc(self.end_ms)


def _utc(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).replace(tzinfo=None)


def parse_time(text: str, parameter: str) -> int:
    """An ISO 8601 time (UTC when it has no offset) -> epoch ms, else ParameterError naming ``parameter``."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ParameterError(parameter, text, "is not an ISO 8601 time; use e.g. 2026-01-02T03:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def window_from(since: str | None, start: str | None, end: str | None, now_ms: int) -> Window:
    """``--since`` (a duration or ISO time, up to now) or ``--from``/``--to`` -> Window; ConfigError if bad."""
    from iotpipe.query import parse_since

    if since is not None and start is not None:
        raise ConfigError("--since and --from both given; use --since 24h, or --from T [--to T]")
    end_ms = parse_time(end, "end") if end is not None else now_ms
    start_ms = parse_time(start, "start") if start is not None else parse_since(since or "24h", now_ms)
    if start_ms >= end_ms:
        raise ConfigError(f"the window is empty: it starts at {_utc(start_ms)}Z and ends at {_utc(end_ms)}Z; "
                          "give a --from before --to")
    return Window(start_ms, end_ms)


def window_hours(window: Window) -> list[datetime]:
    """The UTC hours (naive datetimes) whose archive partitions can hold arrivals of ``window``."""
    hour = window.start.replace(minute=0, second=0, microsecond=0)
    hours = []
    while hour < window.end:
        hours.append(hour)
        hour += timedelta(hours=1)
    return hours


def window_days(window: Window) -> list[date]:
    """The UTC days the window touches, oldest first."""
    return sorted({hour.date() for hour in window_hours(window)})


def archive_key_hour(key: str) -> tuple[str, datetime, str] | None:
    """``(kind, hour, shard id)`` of an archive or quarantine object key, None for any other key."""
    match = _ARCHIVE_KEY.match(key)
    if match is None:
        return None
    kind, year, month, day, hour, shard = match.groups()
    try:
        return kind, datetime(int(year), int(month), int(day), int(hour)), shard
    except ValueError:
        return None
