"""The processor's log lines from CloudWatch Logs, their JSON summarised."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from iotpipe import contract
from iotpipe.aws import aws_call
from iotpipe.config import PipelineConfig
from iotpipe.errors import AwsError
from iotpipe.query.outputs import ClientSource, required_output, stack_names
from iotpipe.query.timespec import iso_ms, now_ms, parse_since


@dataclass(frozen=True)
class LogLine:
    """A processor log event, its JSON summarised."""

    timestamp: int
    stream: str
    level: str
    message: str
    fields: tuple[tuple[str, str], ...]
    event_id: str

    def as_dict(self) -> dict[str, Any]:
        """JSON object: the time as ISO 8601 and epoch ms, the summarised fields as an object."""
        return {
            "time": iso_ms(self.timestamp),
            "timestamp": self.timestamp,
            "stream": self.stream,
            "level": self.level,
            "message": self.message,
            "fields": dict(self.fields),
            "eventId": self.event_id,
        }


_LEVEL_KEYS = ("level", "levelname", "log_level", "severity")
_MESSAGE_KEYS = ("message", "msg", "event")
_SKIP_KEYS = ("timestamp", "time", "ts", "_aws")


def summarise_log(event: Mapping[str, Any]) -> LogLine:
    """A CloudWatch Logs event -> LogLine; JSON objects are summarised, EMF lines show their metric values."""
    text = str(event.get("message", "")).rstrip("\n")
    level, message = "", text.strip()
    fields: tuple[tuple[str, str], ...] = ()
    parsed: Any = None
    if text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
    if isinstance(parsed, dict):
        level = next((str(parsed[k]) for k in _LEVEL_KEYS if k in parsed), "").upper()
        message = next((str(parsed[k]) for k in _MESSAGE_KEYS if k in parsed), "")
        if "_aws" in parsed:
            metrics = [
                m.get("Name")
                for d in parsed["_aws"].get("CloudWatchMetrics", [])
                for m in d.get("Metrics", [])
            ]
            message = message or "metrics"
            fields = tuple((str(name), _short(parsed.get(name))) for name in metrics if name in parsed)
        else:
            used = {*_LEVEL_KEYS, *_MESSAGE_KEYS, *_SKIP_KEYS}
            fields = tuple((key, _short(value)) for key, value in parsed.items() if key not in used)
    return LogLine(
        timestamp=int(event.get("timestamp", 0)),
        stream=str(event.get("logStreamName", "")),
        level=level,
        message=message,
        fields=fields,
        event_id=str(event.get("eventId", "")),
    )


def _short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


# Words that name a kind of processor log line: each batch line carries a "quarantined" count, so the plain
# phrase would match every batch; the processor logs each quarantined record as "record quarantined".
NAMED_FILTERS = {"quarantined": '"record quarantined"'}


def filter_pattern(text: str | None) -> str | None:
    """``--filter`` -> a CloudWatch Logs filter pattern; patterns pass through, a name of :data:`NAMED_FILTERS`
    is its pattern, other plain text is a phrase."""
    if not text:
        return None
    stripped = text.strip()
    if stripped in NAMED_FILTERS:
        return NAMED_FILTERS[stripped]
    if stripped.startswith(("{", '"', "[", "?", "%")):
        return stripped
    return '"' + stripped.replace('"', '\\"') + '"'


def fetch_logs(
    logs: Any, group: str, *, start_ms: int, pattern: str | None = None, limit: int = 1000
) -> list[LogLine]:
    """Events of ``group`` since ``start_ms``, oldest first, at most ``limit`` (paginated)."""
    kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start_ms, "interleaved": True}
    if pattern:
        kwargs["filterPattern"] = pattern
    lines: list[LogLine] = []
    try:
        with aws_call("logs", "filter-log-events"):
            for page in logs.get_paginator("filter_log_events").paginate(
                **kwargs, PaginationConfig={"MaxItems": limit}
            ):
                lines.extend(summarise_log(event) for event in page.get("events", []))
    except AwsError as exc:
        if exc.code == "ResourceNotFoundException":
            raise AwsError(
                f"log group {group} does not exist yet; it appears once the processor has run"
            ) from None
        raise
    return sorted(lines[:limit], key=lambda line: (line.timestamp, line.event_id))


def follow_logs(
    logs: Any,
    group: str,
    *,
    start_ms: int,
    pattern: str | None = None,
    poll_s: float = 2.0,
    max_wait_s: float = 600.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[LogLine]:
    """Yield new events as they arrive, polling every ``poll_s`` for at most ``max_wait_s`` seconds."""
    seen: set[str] = set()
    cursor = start_ms
    deadline = clock() + max_wait_s
    polls = int(max_wait_s / max(poll_s, 0.1)) + 1
    for poll in range(polls):
        for line in fetch_logs(logs, group, start_ms=cursor, pattern=pattern):
            if line.event_id in seen:
                continue
            seen.add(line.event_id)
            cursor = max(cursor, line.timestamp)
            yield line
        if poll == polls - 1 or clock() + poll_s > deadline:
            return
        sleep(poll_s)


def log_group(clients: ClientSource, cfg: PipelineConfig) -> str:
    """The processor's log group name (output DataProcessorLogGroupName)."""
    return required_output(stack_names(clients, cfg), contract.OUT_LOG_GROUP_NAME, cfg)


def processor_logs(
    clients: ClientSource,
    cfg: PipelineConfig,
    *,
    since: str = "10m",
    text: str | None = None,
    follow: bool = False,
    max_wait_s: float = 600.0,
    limit: int = 1000,
    now: int | None = None,
) -> Iterator[LogLine]:
    """``iotpipe logs``: the processor's log lines since ``since``; with ``follow`` keep polling (bounded)."""
    start = parse_since(since, now if now is not None else now_ms())
    group = log_group(clients, cfg)
    client = clients.client("logs")
    pattern = filter_pattern(text)
    if follow:
        return follow_logs(client, group, start_ms=start, pattern=pattern, max_wait_s=max_wait_s)
    return iter(fetch_logs(client, group, start_ms=start, pattern=pattern, limit=limit))
