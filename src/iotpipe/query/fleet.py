"""The fleet at a glance and a sensor's readings over a time range: the aggregates ``iotpipe console`` shows.

Built from the same reads as ``iotpipe devices list``, ``readings`` and ``anomalies`` (the things and their
certificates, the table's device partitions, the sparse anomaly index), so the console has no data path of its own.
"""

from __future__ import annotations

import heapq
import itertools
import math
import operator
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from iotpipe.aws import aws_call
from iotpipe.errors import ParameterError
from iotpipe.query.dynamodb import MAX_PACK_WINDOW_MS, Reading, _identified_readings, query_anomalies
from iotpipe.query.timespec import sort_key_from

HOUR_MS = 3_600_000
# A device is "stale" once silent this long (its last values are old), "offline" after OFFLINE_AFTER_S.
STALE_AFTER_S = 120
OFFLINE_AFTER_S = 3600
# Anomalies count as open for this long after they fired (the pipeline has no acknowledgement).
OPEN_ANOMALY_S = 86_400
# Readings one range read returns at most (90 days at 1 Hz is 7.8 million: such ranges are the archive's).
MAX_RANGE_READINGS = 1_000_000
FLEET_WORKERS = 16
STATES = ("online", "stale", "offline", "unknown")


@dataclass(frozen=True)
class DeviceSummary:
    """One device of the fleet view.

    ``state``: ``online`` (a reading within the stale time), ``stale`` (silent longer: its values are old),
    ``offline`` (silent past the offline time) or ``unknown`` (no reading in the table at all: never sent, or
    everything it sent has expired; nothing says whether it works).
    """

    device_id: str
    registered: bool
    certificate: str  # active | inactive | revoked | pending_transfer | none (registered, no certificate) | ""
    last_seen_ms: int | None
    readings_last_hour: int
    open_anomalies: int
    state: str

    def silent_for_s(self, now_ms: int) -> float | None:
        """Seconds since the last reading (None when there is none)."""
        return None if self.last_seen_ms is None else max(0.0, (now_ms - self.last_seen_ms) / 1000)

    def as_dict(self, now_ms: int | None = None) -> dict[str, Any]:
        """JSON object of the device's row (``silentFor`` as of ``now_ms``; null without it)."""
        return {"deviceId": self.device_id, "registered": self.registered, "certificate": self.certificate,
                "lastSeen": self.last_seen_ms,
                "silentFor": None if now_ms is None else self.silent_for_s(now_ms),
                "readingsLastHour": self.readings_last_hour, "openAnomalies": self.open_anomalies,
                "state": self.state}


def device_state(last_seen_ms: int | None, now_ms: int, stale_after_s: float = STALE_AFTER_S,
                 offline_after_s: float = OFFLINE_AFTER_S) -> str:
    """``online``, ``stale``, ``offline`` or ``unknown`` (no reading known) for a device last seen then."""
    if last_seen_ms is None:
        return "unknown"
    silent = (now_ms - last_seen_ms) / 1000
    if silent >= offline_after_s:
        return "offline"
    return "stale" if silent >= stale_after_s else "online"


def certificate_states(iot: Any) -> dict[str, str]:
    """Every certificate's status by certificate id (``ListCertificates``, one call per 250)."""
    found: dict[str, str] = {}
    with aws_call("iot", "list-certificates"):
        for page in iot.get_paginator("list_certificates").paginate(PaginationConfig={"MaxItems": 100_000}):
            for cert in page.get("certificates", []):
                found[cert["certificateId"]] = str(cert.get("status", "")).lower()
    return found


def thing_certificates(iot: Any, thing_names: Sequence[str], workers: int = FLEET_WORKERS) -> dict[str, list[str]]:
    """Each thing's certificate ids (``ListThingPrincipals``, one call per thing, ``workers`` at once)."""

    def principals(name: str) -> list[str]:
        with aws_call("iot", "list-thing-principals"):
            found = iot.list_thing_principals(thingName=name).get("principals", [])
        return [p.rsplit("/", 1)[-1] for p in found if ":cert/" in p]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(thing_names, pool.map(principals, thing_names), strict=True))


def registered_things(iot: Any, environment: str | None) -> list[str]:
    """The names of the things registered for ``environment`` (its ``environment`` attribute), sorted."""
    kwargs: dict[str, str] = {"attributeName": "environment", "attributeValue": environment} if environment else {}
    names: list[str] = []
    with aws_call("iot", "list-things"):
        for page in iot.get_paginator("list_things").paginate(**kwargs, PaginationConfig={"MaxItems": 100_000}):
            names.extend(thing["thingName"] for thing in page.get("things", []))
    return sorted(names)


def table_activity(dynamodb: Any, table: str, now_ms: int) -> dict[str, tuple[int | None, int]]:
    """Every device with an item in the table, each with :func:`device_activity`'s answer, from one Scan of the
    keys, times and packed readings: for ``iotpipe local``, whose simulated devices are no things (on AWS a Scan
    reads the whole table: the fleet there is the registered things, read device by device). The same items
    decide as in :func:`device_activity`: the last hour's keys (to a day ahead), else the newest older item."""
    since = now_ms - HOUR_MS
    low, high, older = sort_key_from(max(0, since - MAX_PACK_WINDOW_MS + 1)), sort_key_from(now_ms + 86_400_000), \
        sort_key_from(since)
    recent: dict[str, tuple[int | None, int]] = {}
    # the items before the hour's keys, read only for a device without a reading in the hour (its newest one)
    older_items: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    kwargs = {"TableName": table, "ProjectionExpression": "deviceId, sk, #t, readings",
              "ExpressionAttributeNames": {"#t": "timestamp"}}
    with aws_call("dynamodb", f"scan {table}"):
        for page in dynamodb.get_paginator("scan").paginate(**kwargs):
            for item in page.get("Items", []):
                device, sort_key = item["deviceId"]["S"], str(item.get("sk", {}).get("S", ""))
                last, count = recent.setdefault(device, (None, 0))
                if low <= sort_key <= high:
                    times = _item_times(item)
                    if times:
                        count += sum(1 for t in times if since <= t)
                        recent[device] = (max(last or 0, max(times)), count)
                elif sort_key < older:
                    older_items.setdefault(device, []).append((sort_key, item))
    return {device: found if found[0] is not None else _newest_older(older_items.get(device, []))
            for device, found in recent.items()}


def _newest_older(items: list[tuple[str, Mapping[str, Any]]]) -> tuple[int | None, int]:
    """The last reading time of the item with the greatest key that holds a reading, and no reading in the hour."""
    for _, item in sorted(items, key=lambda pair: pair[0], reverse=True):
        times = _item_times(item)
        if times:
            return max(times), 0
    return None, 0


def _is_reading_key(sort_key: str) -> bool:
    return sort_key[:13].isdigit()


def device_activity(dynamodb: Any, table: str, device_id: str, now_ms: int) -> tuple[int | None, int]:
    """A device's last reading time (None when the table has none) and its readings in the hour before ``now_ms``.

    One Query of the last hour's keys (packed items counted by their entries), and only when that finds nothing a
    second, newest-first Query that stops at the first reading item."""
    since = now_ms - HOUR_MS
    kwargs = {"TableName": table, "KeyConditionExpression": "deviceId = :d AND sk BETWEEN :from AND :to",
              "ExpressionAttributeValues": {":d": {"S": device_id},
                                            ":from": {"S": sort_key_from(max(0, since - MAX_PACK_WINDOW_MS + 1))},
                                            ":to": {"S": sort_key_from(now_ms + 86_400_000)}},
              "ProjectionExpression": "sk, #t, readings", "ExpressionAttributeNames": {"#t": "timestamp"}}
    count, last = 0, None
    with aws_call("dynamodb", f"query {table}"):
        for page in dynamodb.get_paginator("query").paginate(**kwargs):
            for item in page.get("Items", []):
                times = _item_times(item)
                count += sum(1 for t in times if since <= t)
                if times:
                    last = max(last or 0, max(times))
        if last is not None:
            return last, count
        older = {"TableName": table, "KeyConditionExpression": "deviceId = :d AND sk < :to",
                 "ExpressionAttributeValues": {":d": {"S": device_id}, ":to": {"S": sort_key_from(since)}},
                 "ScanIndexForward": False, "ProjectionExpression": "sk, #t, readings",
                 "ExpressionAttributeNames": {"#t": "timestamp"}}
        for page in dynamodb.get_paginator("query").paginate(**older, PaginationConfig={"PageSize": 50}):
            for item in page.get("Items", []):
                times = _item_times(item)
                if times:
                    return max(times), 0
    return None, 0


def _item_times(item: Mapping[str, Any]) -> list[int]:
    """The reading times of an item as projected (sort key, timestamp, packed readings); [] for other items."""
    sort_key = str(item.get("sk", {}).get("S", ""))
    if not _is_reading_key(sort_key):
        return []
    packed = item.get("readings", {}).get("S")
    if packed is not None and sort_key.split("#")[2:3] == ["packed"]:
        start = int(sort_key[:13])
        return [start + int(entry.partition(":")[0]) for entry in packed.split(",") if entry]
    stamp = item.get("timestamp", {}).get("N")
    return [int(float(stamp))] if stamp is not None else [int(sort_key[:13])]


def open_anomaly_counts(dynamodb: Any, table: str, index: str, now_ms: int,
                        open_s: float = OPEN_ANOMALY_S) -> Counter[str]:
    """Anomalies per device in the open window before ``now_ms`` (one read of the sparse index per day)."""
    found = query_anomalies(dynamodb, table, index, since_ms=now_ms - int(open_s * 1000), until_ms=now_ms,
                            limit=100_000)
    return Counter(reading.device_id for reading in found)


def fleet_summary(iot: Any, dynamodb: Any, *, table: str, index: str, environment: str | None, now_ms: int,
                  discover: bool = False, stale_after_s: float = STALE_AFTER_S,
                  offline_after_s: float = OFFLINE_AFTER_S, workers: int = FLEET_WORKERS) -> list[DeviceSummary]:
    """Every device: the env's registered things and (``discover``) every device with items in the table, each
    with its last reading, readings in the last hour, open anomalies, certificate state and online/stale/offline/
    unknown, sorted by device id. The per-device reads run ``workers`` at once."""
    if not 0 < stale_after_s <= offline_after_s:
        raise ParameterError("stale_after_s", stale_after_s, f"must be above 0 and at most the offline time "
                             f"({offline_after_s:g} s)")
    things = registered_things(iot, environment)
    certs_of = thing_certificates(iot, things, workers) if things else {}
    statuses = certificate_states(iot) if things else {}
    scanned = table_activity(dynamodb, table, now_ms) if discover else {}
    ids = sorted(set(things) | set(scanned))
    anomalies = open_anomaly_counts(dynamodb, table, index, now_ms)
    if discover:  # the Scan saw every item: a thing it did not see has none
        activity = [scanned.get(device_id, (None, 0)) for device_id in ids]
    else:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            activity = list(pool.map(lambda d: device_activity(dynamodb, table, d, now_ms), ids))
    rows = []
    for device_id, (last, count) in zip(ids, activity, strict=True):
        registered = device_id in certs_of
        rows.append(DeviceSummary(
            device_id=device_id, registered=registered,
            certificate=_certificate(certs_of.get(device_id, []), statuses) if registered else "",
            last_seen_ms=last, readings_last_hour=count, open_anomalies=anomalies.get(device_id, 0),
            state=device_state(last, now_ms, stale_after_s, offline_after_s)))
    return rows


def _certificate(cert_ids: Iterable[str], statuses: Mapping[str, str]) -> str:
    """One word for a thing's certificates: active if any is, else the first one's status, else none."""
    found = [statuses.get(cert, "unknown") for cert in cert_ids]
    if not found:
        return "none"
    return "active" if "active" in found else found[0]


@dataclass(frozen=True)
class SensorRange:
    """One sensor's readings over a range, oldest first, and whether the read stopped at its bound."""

    readings: tuple[Reading, ...]
    truncated: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly data."""
        return {"readings": [reading.as_dict() for reading in self.readings], "truncated": self.truncated}


def _range_query(table: str, device_id: str, since_ms: int, until_ms: int, sensor: str | None,
                 max_readings: int) -> dict[str, Any]:
    """The Query of a device's items from ``since_ms`` to ``until_ms`` (from the longest pack window before, where a
    packed item holding ``since_ms`` can start), of ``sensor`` only when given; ParameterError on a bad range."""
    if until_ms < since_ms:
        raise ParameterError("until_ms", until_ms, "is before since_ms; give a range that starts first")
    if not 1 <= max_readings <= MAX_RANGE_READINGS:
        raise ParameterError("max_readings", max_readings, f"is out of range; use 1 to {MAX_RANGE_READINGS}")
    values: dict[str, Any] = {":d": {"S": device_id},
                              ":from": {"S": sort_key_from(max(0, since_ms - MAX_PACK_WINDOW_MS + 1))},
                              ":to": {"S": sort_key_from(until_ms + 1)}}
    kwargs: dict[str, Any] = {"TableName": table, "ExpressionAttributeValues": values,
                              "KeyConditionExpression": "deviceId = :d AND sk BETWEEN :from AND :to"}
    if sensor is not None:
        kwargs["FilterExpression"] = "sensorType = :s"
        values[":s"] = {"S": sensor}
    return kwargs


def query_range(dynamodb: Any, table: str, device_id: str, *, since_ms: int, until_ms: int,
                sensor: str | None = None, max_readings: int = MAX_RANGE_READINGS) -> SensorRange:
    """A device's readings (of ``sensor``) from ``since_ms`` to ``until_ms`` inclusive, oldest first, both storage
    layouts (a packed item can start up to the longest pack window before ``since_ms``), each reading once, at
    most ``max_readings`` (``truncated`` then says so)."""
    kwargs = _range_query(table, device_id, since_ms, until_ms, sensor or None, max_readings)
    found: dict[tuple[Any, ...], Reading] = {}
    truncated = False
    with aws_call("dynamodb", f"query {table}"):
        for page in dynamodb.get_paginator("query").paginate(**kwargs):
            for item in page.get("Items", []):
                if not _is_reading_key(str(item.get("sk", {}).get("S", ""))):
                    continue
                for reading, identity in _identified_readings(item):
                    if since_ms <= reading.timestamp <= until_ms and not math.isnan(reading.value):
                        found.setdefault(identity, reading)
            if len(found) >= max_readings:
                truncated = True
                break
    ordered = sorted(found.values(), key=lambda r: (r.timestamp, r.sensor_type))[:max_readings]
    return SensorRange(tuple(ordered), truncated)


@dataclass(frozen=True)
class SensorSeries:
    """One sensor's line over a range as columns (epoch ms, values), oldest first, the anomalous readings among
    them in full, and whether the read stopped at its bound: what a chart needs, without a Reading per point."""

    times: tuple[int, ...]
    values: tuple[float, ...]
    anomalies: tuple[Reading, ...]
    truncated: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly data (the columns as lists)."""
        return {"times": list(self.times), "values": list(self.values),
                "anomalies": [reading.as_dict() for reading in self.anomalies], "truncated": self.truncated}


def query_series(dynamodb: Any, table: str, device_id: str, *, sensor: str, since_ms: int, until_ms: int,
                 max_readings: int = MAX_RANGE_READINGS) -> SensorSeries:
    """``sensor``'s readings of a device from ``since_ms`` to ``until_ms`` inclusive: the same reads, readings and
    deduplication as :func:`query_range`, as columns. A packed item's entries are parsed straight into the columns
    (a day at 1 Hz is 86,400 of them); an item of its own is made a full Reading only when it is an anomaly."""
    found = _read_series(dynamodb, table, device_id, sensor, since_ms, until_ms, max_readings)
    return found.get(sensor, SensorSeries((), (), (), False))


def query_device_series(dynamodb: Any, table: str, device_id: str, *, since_ms: int, until_ms: int,
                        max_readings: int = MAX_RANGE_READINGS) -> dict[str, SensorSeries]:
    """Every sensor's :func:`query_series` of a device in one read of its partition (the sensor type follows the
    time in the sort key, so one sensor's Query reads every sensor's items anyway): at most ``max_readings`` in
    all (each sensor's ``truncated`` then says so)."""
    return _read_series(dynamodb, table, device_id, None, since_ms, until_ms, max_readings)


def _read_series(dynamodb: Any, table: str, device_id: str, sensor: str | None, since_ms: int, until_ms: int,
                 max_readings: int) -> dict[str, SensorSeries]:
    kwargs = _range_query(table, device_id, since_ms, until_ms, sensor, max_readings)
    runs: dict[str, list[_Run]] = {}
    count = 0
    truncated = False
    with aws_call("dynamodb", f"query {table}"):
        for page in _fetched_ahead(dynamodb.get_paginator("query").paginate(**kwargs)):
            for item in page.get("Items", []):
                count += _add_item(item, since_ms, until_ms, runs)
            # count holds every repeat too: the distinct readings are counted only near the bound
            if count >= max_readings and sum(len(_merged(r)[0]) for r in runs.values()) >= max_readings:
                truncated = True
                break
    merged = {name: _merged(sensor_runs) for name, sensor_runs in runs.items()}
    kept = _kept_counts({name: times for name, (times, _, _) in merged.items()}, max_readings)
    last = max((merged[name][0][kept[name] - 1] for name in merged if kept[name]), default=None)
    marked = sorted((r for _, _, found in merged.values() for r in found if last is not None and r.timestamp <= last),
                    key=lambda reading: reading.timestamp)
    shown = sorted((name for name in merged if kept[name]), key=lambda name: (merged[name][0][0], name))
    return {name: SensorSeries(tuple(merged[name][0][:kept[name]]), tuple(merged[name][1][:kept[name]]),
                               tuple(r for r in marked if r.sensor_type == name), truncated) for name in shown}


def _fetched_ahead(pages: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """``pages`` in order, each next one asked for while the caller reads the one before (a thread of its own
    waits for the answer): a day of readings is a page or two of 1 MB, and reading one takes about as long as
    fetching the next. Errors come where the page would have; a caller that stops early waits for the one page
    already asked for."""
    found = iter(pages)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, found, None)
        while (page := pending.result()) is not None:
            pending = pool.submit(next, found, None)
            yield page


class _Run:
    """Readings of one sensor from consecutive items of a Query (in its order), oldest first, each with its
    identity's tag (docs/contract.md, section 6): a packed entry's rank among the equal entries of its item, an item
    of its own's origin (0 without one). ``ordered``: its times never go back and no two identities in it are equal,
    so it needs no deduplication unless another run overlaps its times. ``readings``: the full readings of an
    item read the general way (an anomaly, say), else None."""

    __slots__ = ("hi", "lo", "ordered", "readings", "tags", "times", "values")

    def __init__(self, times: list[int], values: list[float], tags: list[Any], ordered: bool,
                 readings: list[Reading] | None = None) -> None:
        self.times, self.values, self.tags, self.ordered, self.readings = times, values, tags, ordered, readings
        self.lo, self.hi = min(times), max(times)


# every byte but a packed readings text's separators ("<offset>:<value>,<offset>:<value>...")
_MARKS = bytes(b for b in range(256) if b not in b":,")


def _add_item(item: Mapping[str, Any], since_ms: int, until_ms: int, runs: dict[str, list[_Run]]) -> int:
    """An item's readings in the range (NaN left out) onto its sensor's runs; how many there were."""
    sort_key = str(item.get("sk", {}).get("S", ""))
    if not _is_reading_key(sort_key):
        return 0
    packed = item.get("readings", {}).get("S")
    anomalous = bool(item.get("anomalyDetected", {}).get("BOOL", False))
    sensor = str(item.get("sensorType", {}).get("S", ""))
    if packed is None and not anomalous and "N" in item.get("value", {}) and "N" in item.get("timestamp", {}):
        # a plain reading of its own, as to_reading reads it, without a Reading
        when, value = _integer(item["timestamp"]["N"]), float(item["value"]["N"])
        if not (since_ms <= when <= until_ms and value == value):  # value == value: not NaN
            return 0
        origin = sort_key.split("#", 3)[3:]
        _append(runs.setdefault(sensor, []), [when], [value], [origin[0] if origin else 0], True)
        return 1
    if packed is None or sort_key.split("#")[2:3] != ["packed"] or anomalous:
        # an item of its own (or a rare anomalous pack), read the general way
        found = [(reading, identity) for reading, identity in _identified_readings(item)
                 if since_ms <= reading.timestamp <= until_ms and not math.isnan(reading.value)]
        for reading, identity in found:
            runs.setdefault(reading.sensor_type, []).append(
                _Run([reading.timestamp], [reading.value], [identity[3]], True, [reading]))
        return len(found)
    times, values = _packed_columns(int(sort_key[:13]), packed)
    tags: list[Any] = [0] * len(times)
    if len(set(times)) != len(times):  # equal entries: each its rank among them
        seen: dict[tuple[int, float], int] = {}
        for index, key in enumerate(zip(times, values, strict=True)):
            tags[index] = seen[key] = seen.get(key, -1) + 1
    total = sum(values)
    if times and not (since_ms <= min(times) and max(times) <= until_ms and total == total):  # NaN sums to NaN
        kept = [i for i, (when, value) in enumerate(zip(times, values, strict=True))
                if since_ms <= when <= until_ms and value == value]  # value == value: not NaN
        times, values, tags = [times[i] for i in kept], [values[i] for i in kept], [tags[i] for i in kept]
    if not times:
        return 0
    ordered = all(map(operator.le, times, times[1:]))
    _append(runs.setdefault(sensor, []), times, values, tags, ordered)
    return len(times)


def _packed_columns(start: int, text: str) -> tuple[list[int], list[float]]:
    """A packed item's ``readings`` text as its times (the window ``start`` plus each offset) and values; an entry
    that is not ``<offset>:<value>`` raises ValueError, as reading it one by one does."""
    parts = text.replace(",", ":").split(":")
    pairs = len(parts) // 2
    if text.encode().translate(None, _MARKS) != b":," * (pairs - 1) + b":" or len(parts) % 2:
        entries = [entry.partition(":") for entry in text.split(",")]  # the slow way, and its error
        return [start + int(offset) for offset, _, _ in entries], [float(value) for _, _, value in entries]
    return [start + offset for offset in map(int, parts[0::2])], list(map(float, parts[1::2]))


def _integer(text: str) -> int:
    """A number attribute as ``int(Decimal(text))`` gives it (an integer's text is read without a Decimal)."""
    try:
        return int(text)
    except ValueError:
        return int(Decimal(text))


def _append(sensor_runs: list[_Run], times: list[int], values: list[float], tags: list[Any], ordered: bool) -> None:
    """Readings onto a sensor's last run when they follow it (all later, themselves in order), else a new run."""
    last = sensor_runs[-1] if sensor_runs else None
    if ordered and last is not None and last.ordered and last.readings is None and times[0] > last.hi:
        last.times += times
        last.values += values
        last.tags += tags
        last.hi = times[-1]
        return
    sensor_runs.append(_Run(times, values, tags, ordered))


def _merged(sensor_runs: list[_Run]) -> tuple[list[int], list[float], list[Reading]]:
    """A sensor's runs as one line, oldest first (equal times in the order read), each reading once, and the
    anomalies among them (an anomaly read after an equal reading is that reading, as in :func:`query_range`).
    Runs whose times overlap are deduplicated by identity; the rest (nearly all) are taken as they are."""
    times: list[int] = []
    values: list[float] = []
    anomalies: list[Reading] = []
    for group in _overlapping(sensor_runs):
        if len(group) == 1 and group[0].ordered:
            run = group[0]
            times += run.times
            values += run.values
            anomalies += [r for r in run.readings or () if r.anomaly]
            continue
        found: dict[tuple[int, float, Any], int] = {}
        for run in group:  # in the order read
            for index, identity in enumerate(zip(run.times, run.values, run.tags, strict=True)):
                if identity not in found:
                    found[identity] = identity[0]
                    if run.readings is not None and run.readings[index].anomaly:
                        anomalies.append(run.readings[index])
        line = sorted(found, key=found.__getitem__)  # stable: equal times in the order read
        times += [when for when, _, _ in line]
        values += [value for _, value, _ in line]
    return times, values, anomalies


def _overlapping(sensor_runs: list[_Run]) -> list[list[_Run]]:
    """The runs grouped so that no two groups' times overlap, oldest group first, each group's runs in the order
    read."""
    order = sorted(range(len(sensor_runs)), key=lambda i: sensor_runs[i].lo)
    groups: list[list[int]] = []
    hi = None
    for index in order:
        run = sensor_runs[index]
        if hi is not None and run.lo <= hi:
            groups[-1].append(index)
            hi = max(hi, run.hi)
        else:
            groups.append([index])
            hi = run.hi
    return [[sensor_runs[i] for i in sorted(group)] for group in groups]


def _kept_counts(lines: dict[str, list[int]], max_readings: int) -> dict[str, int]:
    """How many of each sensor's readings (oldest first) are among the first ``max_readings`` of the device,
    in the order :func:`query_range` gives (time, then sensor type)."""
    if sum(len(times) for times in lines.values()) <= max_readings:
        return {name: len(times) for name, times in lines.items()}
    names = sorted(lines)
    kept = dict.fromkeys(names, 0)
    merged = heapq.merge(*([(when, name) for when in lines[name]] for name in names))
    for _, name in itertools.islice(merged, max_readings):
        kept[name] += 1
    return kept
