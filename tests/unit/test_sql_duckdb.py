"""DuckDB engine end to end: an archive written with the processor's own archive code (handler/python/index.py,
through iotpipe.archive) into the moto server, fetched for a window through boto3, cached by ETag, and queried
through the relations."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from iotpipe import archive
from iotpipe.config import build_config
from iotpipe.errors import ParameterError
from iotpipe.sql import (
    NAMED_QUERIES,
    Window,
    convert_archive,
    fetch_archive,
    list_archive,
    parsed_dir,
    query_duckdb,
    require_duckdb,
    run_duckdb,
)
from iotpipe.sql.cache import ENTRIES_KIND, CacheLimits

REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "handler" / "python" / "index.py"
BUCKET = "iot-raw-data-sqltest"
CFG = build_config({}, "dev", {})
SHARD0 = "shardId-000000000000"
SHARD1 = "shardId-000000000001"


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def rule(payload: dict[str, Any], arrived: int, topic_device: str | None = None) -> bytes:
    """The bytes the topic rule puts on the stream: the payload plus receivedAt and topicDeviceId."""
    device = topic_device or payload["deviceId"]
    return json.dumps({**payload, "receivedAt": arrived - 40, "topicDeviceId": device}).encode()


A_ARRIVED = ms("2026-03-01T10:15:00")
B_ARRIVED = ms("2026-03-02T04:59:00")
C_ARRIVED = ms("2026-03-05T08:00:00")


def batches(index: Any) -> list[tuple[list[Any], bool]]:
    """(records, with quarantine object) per batch, as the processor would archive them."""
    rec = archive.record
    a = [
        rec(index, SHARD0, 100, A_ARRIVED, rule({"deviceId": "press-01", "sensorType": "temperature", "value": 25.0,
                                                 "unit": "C", "timestamp": A_ARRIVED - 1000}, A_ARRIVED), "press-01"),
        rec(index, SHARD0, 101, A_ARRIVED, rule({"deviceId": "press-02", "timestamp": "2026-03-01T11:14:59+01:00",
                                                 "readings": {"temperature": 90.0, "pressure": 100.0}}, A_ARRIVED),
            "press-02"),
        rec(index, SHARD0, 102, A_ARRIVED, b"\xff\xfe not utf-8", "press-04"),
        rec(index, SHARD0, 103, A_ARRIVED, b"{oops", "press-04"),
        rec(index, SHARD0, 104, A_ARRIVED, rule({"deviceId": "press-03", "readings": {"temperature": 30.0,
                                                                                     "humidity": 5.0}}, A_ARRIVED),
            "press-03"),
        rec(index, SHARD0, 105, A_ARRIVED, rule({"deviceId": "press-09", "sensorType": "pressure", "value": 50.0},
                                                A_ARRIVED, topic_device="press-01"), "press-01"),
    ]
    retried = a[:2]  # a bisected retry archived the first two records again under another key
    b = [rec(index, SHARD1, 200, B_ARRIVED, rule({"deviceId": "press-01", "sensorType": "pressure", "value": 40.0},
                                                 B_ARRIVED), "press-01")]
    c = [rec(index, SHARD1, 300, C_ARRIVED, rule({"deviceId": "press-01", "sensorType": "pressure", "value": 41.0},
                                                 C_ARRIVED), "press-01")]
    return [(a, True), (retried, False), (b, False), (c, False)]


def put_known_archive(s3: Any) -> None:
    """The batches above as the processor archives them (with their quarantine objects), and one stray key."""
    index = archive.load_processor(HANDLER)
    for records, with_quarantine in batches(index):
        quarantine = archive.quarantine_lines(index, records, CFG.thresholds_json) if with_quarantine else []
        archive.put_objects(s3, BUCKET, archive.batch_objects(index, records, quarantine))
    s3.put_object(Bucket=BUCKET, Key="raw/README.txt", Body=b"not an archive object")


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    put_known_archive(client)
    return client


WINDOW = Window(ms("2026-03-01T00:00:00"), ms("2026-03-03T00:00:00"))


def query(s3: Any, sql: str, tmp_path: Path, window: Window = WINDOW) -> list[tuple[Any, ...]]:
    archive = fetch_archive(s3, BUCKET, window, tmp_path / "cache")
    return list(run_duckdb(sql, archive, window, CFG.thresholds, CFG.storage.ttl_days).rows)


def test_readings_expand_both_forms_dedupe_and_exclude_quarantined(s3: Any, tmp_path: Path) -> None:
    rows = query(s3, "SELECT device_id, sensor_type, value, unit, reading_time, shard_id, sequence_number "
                     "FROM readings ORDER BY device_id, sensor_type", tmp_path)
    assert rows == [
        ("press-01", "pressure", 40.0, "psi", datetime(2026, 3, 2, 4, 58, 59, 960000), SHARD1, "200"),
        ("press-01", "temperature", 25.0, "C", datetime(2026, 3, 1, 10, 14, 59), SHARD0, "100"),
        ("press-02", "pressure", 100.0, "psi", datetime(2026, 3, 1, 10, 14, 59), SHARD0, "101"),
        ("press-02", "temperature", 90.0, "celsius", datetime(2026, 3, 1, 10, 14, 59), SHARD0, "101"),
        ("press-03", "temperature", 30.0, "celsius", datetime(2026, 3, 1, 10, 14, 59, 960000), SHARD0, "104"),
    ]


def test_raw_records_keep_every_record_once_and_non_utf8_as_base64(s3: Any, tmp_path: Path) -> None:
    rows = query(s3, "SELECT shard_id, sequence_number, data IS NULL, data_base64, arrived_at FROM raw_records "
                     "ORDER BY 1, 2", tmp_path)
    assert [(r[0], r[1]) for r in rows] == [(SHARD0, str(n)) for n in range(100, 106)] + [(SHARD1, "200")]
    non_utf8 = rows[2]
    assert non_utf8[2] is True and non_utf8[3] == "//4gbm90IHV0Zi04"
    assert rows[0][4] == datetime(2026, 3, 1, 10, 15)


def test_quarantined_relation_has_reasons_and_rejected_sensor_types(s3: Any, tmp_path: Path) -> None:
    rows = query(s3, "SELECT sequence_number, reason, rejected_sensor_types, archive_hour FROM quarantined "
                     "ORDER BY 1", tmp_path)
    assert rows == [
        ("102", "data is not UTF-8", None, datetime(2026, 3, 1, 10)),
        ("103", "data is not JSON", None, datetime(2026, 3, 1, 10)),
        ("104", "unknown sensorType", ["humidity"], datetime(2026, 3, 1, 10)),
        ("105", "deviceId differs from topic", None, datetime(2026, 3, 1, 10)),
    ]


def test_only_the_window_objects_are_fetched_and_the_cache_is_keyed_by_etag(s3: Any, tmp_path: Path) -> None:
    one_hour = Window(ms("2026-03-02T04:00:00"), ms("2026-03-02T05:00:00"))
    keys = [o.key for o in list_archive(s3, BUCKET, one_hour)]
    assert keys == [f"raw/year=2026/month=03/day=02/hour=04/{SHARD1}/200-200.jsonl.gz"]
    first = fetch_archive(s3, BUCKET, WINDOW, tmp_path / "cache")
    assert (len(first.raw), len(first.quarantine), first.downloaded) == (3, 1, 4)
    again = fetch_archive(s3, BUCKET, WINDOW, tmp_path / "cache")
    assert again.downloaded == 0 and again.raw == first.raw
    connection = require_duckdb().connect()
    assert convert_archive(connection, first).parsed == 3
    assert convert_archive(connection, again).parsed == 0
    # A retried batch overwrote an object: a new ETag, so that one object is fetched again.
    index = archive.load_processor(HANDLER)
    b_records = batches(index)[2][0]
    changed = [archive.record(index, SHARD1, 200, B_ARRIVED,
                                     rule({"deviceId": "press-01", "sensorType": "pressure", "value": 40.0,
                                           "unit": "bar"}, B_ARRIVED), "press-01")]
    assert changed[0].sequence_number == b_records[0].sequence_number
    archive.put_objects(s3, BUCKET, archive.batch_objects(index, changed))
    third = fetch_archive(s3, BUCKET, WINDOW, tmp_path / "cache")
    assert third.downloaded == 1
    # Each object is parsed once: the earlier objects' Parquet is reused, the new ETag's object is parsed.
    assert convert_archive(connection, third).parsed == 1
    assert all(parsed_dir(path, ENTRIES_KIND).is_dir() for path in third.raw)
    assert run_duckdb("SELECT unit FROM readings WHERE sequence_number = '200'", third, WINDOW, CFG.thresholds,
                      CFG.storage.ttl_days).rows == (("bar",),)


def test_an_empty_window_gives_empty_relations(s3: Any, tmp_path: Path) -> None:
    empty = Window(ms("2026-04-01T00:00:00"), ms("2026-04-02T00:00:00"))
    assert query(s3, "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM quarantined), "
                     "(SELECT count(*) FROM raw_records)", tmp_path, empty) == [(0, 0, 0)]


def test_named_queries_give_known_answers(s3: Any, tmp_path: Path) -> None:
    hourly = query(s3, NAMED_QUERIES["hourly-stats"].sql, tmp_path)
    assert ("press-02", "temperature", datetime(2026, 3, 1, 10), 1, 90.0, 90.0, 90.0) in hourly
    assert len(hourly) == 5
    assert query(s3, NAMED_QUERIES["anomalies-per-day"].sql, tmp_path) == [
        (datetime(2026, 3, 1).date(), "press-02", "temperature", 1)]
    silent_window = Window(ms("2026-03-01T00:00:00"), ms("2026-03-02T05:30:00"))
    silent = query(s3, NAMED_QUERIES["silent-devices"].sql, tmp_path, silent_window)
    assert [(r[0], r[2]) for r in silent] == [("press-02", 2), ("press-03", 1)]
    assert query(s3, NAMED_QUERIES["quarantine-reasons"].sql, tmp_path) == [
        ("data is not JSON", 1), ("data is not UTF-8", 1), ("deviceId differs from topic", 1),
        ("unknown sensorType", 1)]


def odd_bodies(arrived: int) -> list[bytes]:
    """Payloads at the edges, as the rule delivers them: not a map, not JSON, implausible times, a nested value."""
    return [
        rule({"deviceId": "d1", "readings": 5}, arrived),
        rule({"deviceId": "d1", "readings": "{bad"}, arrived),
        b"[1, 2]",
        b'"just a string"',
        rule({"deviceId": "d1", "sensorType": "temperature", "value": 20, "timestamp": 1e300}, arrived),
        rule({"deviceId": "d1", "sensorType": "pressure", "value": 50, "timestamp": "not a time"}, arrived),
        rule({"deviceId": "d1", "readings": {"temperature": {"nested": 1}, "vibration": 2}}, arrived),
    ]


def test_odd_payloads_never_fail_the_query_and_implausible_times_fall_back(moto_endpoint: str,
                                                                            tmp_path: Path) -> None:
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    index = archive.load_processor(HANDLER)
    arrived = ms("2026-03-04T00:10:00")
    bodies = [
        *odd_bodies(arrived),
        # a duplicate key (JSON allows it; a map does not): no rows, and no failed query
        b'{"deviceId": "d1", "readings": {"pressure": 40, "pressure": 41}, "topicDeviceId": "d1"}',
    ]
    records = [archive.record(index, SHARD0, 500 + n, arrived, body, "d1") for n, body in enumerate(bodies)]
    archive.put_objects(client, BUCKET, archive.batch_objects(
        index, records, archive.quarantine_lines(index, records, CFG.thresholds_json)))
    window = Window(ms("2026-03-04T00:00:00"), ms("2026-03-04T01:00:00"))
    rows = query(client, "SELECT sensor_type, value, device_time, reading_time = received_at, sequence_number "
                         "FROM readings ORDER BY sequence_number", tmp_path, window)
    assert rows == [("temperature", 20.0, None, True, "504"), ("pressure", 50.0, None, True, "505"),
                    ("vibration", 2.0, None, True, "506")]
    assert query(client, "SELECT count(*) FROM quarantined", tmp_path, window) == [(5,)]


def test_a_rewritten_object_supersedes_its_cached_version_after_the_query(s3: Any, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = query_duckdb(s3, BUCKET, "SELECT count(*) FROM readings", WINDOW, CFG.thresholds, CFG.storage.ttl_days,
                         cache)
    assert first.result.rows == ((5,),) and (first.cache.removed, first.cache.kept) == (0, 4)
    [old] = cache.rglob("200-200.*.jsonl.gz")
    index = archive.load_processor(HANDLER)
    changed = [archive.record(index, SHARD1, 200, B_ARRIVED, rule({"deviceId": "press-01", "sensorType": "pressure",
                                                                   "value": 40.0, "unit": "bar"}, B_ARRIVED),
                              "press-01")]
    archive.put_objects(s3, BUCKET, archive.batch_objects(index, changed))

    shown: list[tuple[Any, bool]] = []
    second = query_duckdb(s3, BUCKET, "SELECT unit FROM readings WHERE sequence_number = '200'", WINDOW,
                          CFG.thresholds, CFG.storage.ttl_days, cache,
                          on_result=lambda result: shown.append((result.rows, old.exists())))

    assert shown == [((("bar",),), True)]  # the rows are handed over before the cache is pruned
    assert second.result.rows == (("bar",),)
    assert (second.cache.removed, second.cache.superseded, second.cache.kept) == (1, 1, 4)
    [new] = cache.rglob("200-200.*.jsonl.gz")
    assert new != old and not old.exists()
    assert sorted(p.name for p in new.parent.iterdir()) == [new.name, f"{new.name}.{ENTRIES_KIND}",
                                                            f"{new.name}.records"]


def test_a_query_beyond_the_age_bound_evicts_other_windows_but_never_its_own(s3: Any, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    one_day = Window(ms("2026-03-01T00:00:00"), ms("2026-03-02T00:00:00"))
    query_duckdb(s3, BUCKET, "SELECT 1", WINDOW, CFG.thresholds, CFG.storage.ttl_days, cache)
    long_ago = ms("2026-01-01T00:00:00") / 1000
    for path in cache.rglob("*.jsonl.gz"):
        os.utime(path, (long_ago, long_ago))

    run = query_duckdb(s3, BUCKET, "SELECT count(*) FROM raw_records", one_day, CFG.thresholds,
                       CFG.storage.ttl_days, cache, CacheLimits(max_age_days=1))

    assert run.result.rows == ((6,),)
    assert (run.cache.removed, run.cache.kept) == (1, 3)  # day 2's object; day 1's two raw and one quarantine stay
    assert sorted(p.relative_to(cache / BUCKET).parts[0:4] for p in cache.rglob("*.jsonl.gz")) == [
        ("quarantine", "year=2026", "month=03", "day=01"), ("raw", "year=2026", "month=03", "day=01"),
        ("raw", "year=2026", "month=03", "day=01")]


def test_a_parsed_form_made_meanwhile_by_another_query_is_kept_not_replaced(s3: Any, tmp_path: Path) -> None:
    local = fetch_archive(s3, BUCKET, WINDOW, tmp_path / "cache")
    connection = require_duckdb().connect()
    convert_archive(connection, local)
    path = local.raw[0]
    records = parsed_dir(path, "records")
    inode = records.stat().st_ino
    # another query's conversion of the same object is half way: its records are in place, its entries not yet
    shutil.rmtree(parsed_dir(path, ENTRIES_KIND))

    assert convert_archive(connection, local).parsed == 1

    assert records.stat().st_ino == inode  # a reader of that folder is not pulled from under
    assert parsed_dir(path, ENTRIES_KIND).is_dir()


def _line(sequence: str, arrived: Any, data: Any = '{"deviceId": "press-07", "sensorType": "pressure", "value": 7}',
          **fields: Any) -> bytes:
    return json.dumps({"sequenceNumber": sequence, "partitionKey": "press-07", "arrivedAt": arrived, "data": data,
                       **fields}).encode() + b"\n"


GOOD_LINE = _line("900", A_ARRIVED)
MALFORMED = {  # what a hand-made, damaged or foreign object in the archive's folders may hold
    "truncated": gzip.compress(GOOD_LINE * 40)[:-30],
    "not-gzip": GOOD_LINE,
    "bad-line": gzip.compress(GOOD_LINE + b'{"sequenceNumber": "901", oops\n'),
    "not-utf8": gzip.compress(GOOD_LINE + b'{"sequenceNumber": "902", "partitionKey": "\xff\xfe"}\n'),
    "wrong-types": gzip.compress(GOOD_LINE + _line("903", "soon")),
    "not-an-object": gzip.compress(GOOD_LINE + b"[1, 2]\n"),
    "huge-arrival": gzip.compress(GOOD_LINE + _line("904", 2**62)),
}
HOUR_A = "year=2026/month=03/day=01/hour=10"


@pytest.mark.parametrize("kind", ["raw", "quarantine"])
def test_a_malformed_object_is_skipped_named_and_kept_out_of_the_cache(s3: Any, tmp_path: Path, kind: str) -> None:
    for n, body in enumerate(MALFORMED.values()):
        s3.put_object(Bucket=BUCKET, Key=f"{kind}/{HOUR_A}/{SHARD1}/{n}-{n}.jsonl.gz", Body=body)
    # A quarantine line has no arrivedAt: the arrival's type and range do not make it malformed.
    bad = [n for n, name in enumerate(MALFORMED) if kind == "raw" or name not in ("wrong-types", "huge-arrival")]
    local = fetch_archive(s3, BUCKET, WINDOW, tmp_path / "cache")
    for attempt in range(2):  # a rerun meets the same objects and skips them again
        result = run_duckdb("SELECT count(*) FROM readings", local, WINDOW, CFG.thresholds, CFG.storage.ttl_days)
        assert result.rows == ((5,),)  # the readings of the good objects of that hour and window, all there
        assert sorted(s.key for s in result.skipped) == sorted(
            f"s3://{BUCKET}/{kind}/{HOUR_A}/{SHARD1}/{n}-{n}.jsonl.gz" for n in bad), attempt
        assert all(s.reason for s in result.skipped)
        cached = {p.name.split(".")[0] for p in (tmp_path / "cache" / BUCKET / kind / HOUR_A / SHARD1).glob("*")}
        assert cached.isdisjoint(f"{n}-{n}" for n in bad)
        local = fetch_archive(s3, BUCKET, WINDOW, tmp_path / "cache")


def test_a_record_of_more_samples_than_a_record_may_hold_is_not_expanded(s3: Any, tmp_path: Path) -> None:
    """The processor refuses more than 1,000 readings in a record: its samples are never all held in memory."""
    index = archive.load_processor(HANDLER)

    def samples(count: int, sequence: int) -> Any:
        payload = {"deviceId": f"kiln-{count}", "receivedAt": A_ARRIVED, "topicDeviceId": f"kiln-{count}",
                   "samples": [{"timestamp": A_ARRIVED - n, "sensorType": "temperature", "value": 20 + n % 9}
                               for n in range(count)]}
        return archive.record(index, SHARD1, sequence, A_ARRIVED, json.dumps(payload).encode(), f"kiln-{count}")

    archive.put_objects(s3, BUCKET, archive.batch_objects(index, [samples(1000, 950), samples(1001, 951)]))
    rows = query(s3, "SELECT device_id, count(*) FROM readings WHERE device_id LIKE 'kiln-%' GROUP BY 1", tmp_path)
    assert rows == [("kiln-1000", 1000)]


def test_a_small_memory_bound_spills_and_answers_the_same(s3: Any, tmp_path: Path) -> None:
    local = fetch_archive(s3, BUCKET, WINDOW, tmp_path / "cache")
    sql = "SELECT device_id, sensor_type, value FROM readings ORDER BY 1, 2"
    small = run_duckdb(sql, local, WINDOW, CFG.thresholds, CFG.storage.ttl_days, memory_mb=128)
    assert small.rows == run_duckdb(sql, local, WINDOW, CFG.thresholds, CFG.storage.ttl_days).rows
    assert not list((tmp_path / "cache").glob(".iotpipe-parse-*"))  # the spill folder goes with the query
    with pytest.raises(ParameterError, match="memory_mb=64 is too little"):
        run_duckdb(sql, local, WINDOW, CFG.thresholds, CFG.storage.ttl_days, memory_mb=64)


class _ChunksOnly:
    """An S3 body that may be read in chunks only: reading it whole fails the test."""

    def __init__(self, body: Any, sizes: list[int]) -> None:
        self.body, self.sizes = body, sizes

    def read(self, *_: Any) -> bytes:
        raise AssertionError("an archive object was read whole into memory")

    def iter_chunks(self, chunk_size: int) -> Any:
        self.sizes.append(chunk_size)
        return self.body.iter_chunks(chunk_size)

    def close(self) -> None:
        self.body.close()


def test_objects_are_downloaded_in_bounded_chunks(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_get, sizes = s3.get_object, []

    def get_object(**kwargs: Any) -> dict[str, Any]:
        answer = real_get(**kwargs)
        return {**answer, "Body": _ChunksOnly(answer["Body"], sizes)}

    monkeypatch.setattr(s3, "get_object", get_object)
    rows = query(s3, "SELECT count(*) FROM readings", tmp_path)
    assert rows == [(5,)] and sizes and max(sizes) <= 1024 * 1024
    assert not list((tmp_path / "cache").rglob("*.part*"))
