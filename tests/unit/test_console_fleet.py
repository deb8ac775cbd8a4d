"""The fleet aggregate and range reads ``iotpipe console`` shows (iotpipe.query.fleet), against items the real
processor wrote into moto: last seen, readings in the last hour (both storage layouts), open anomalies, certificate
state, and online / stale / offline / unknown kept apart."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from test_query import BUCKET, DAY2, INDEX, TABLE, create_table, run_processor, single

from iotpipe.errors import ParameterError
from iotpipe.query import fleet

NOW = DAY2 + 60_000
PACKED = {"STORAGE_LAYOUT": "packed", "PACK_WINDOW_SECONDS": "60"}


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        create_table(dynamodb)
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield {"dynamodb": dynamodb, "iot": boto3.client("iot", region_name="us-east-1")}


def register(iot: Any, name: str, env: str = "test", status: str = "ACTIVE") -> None:
    iot.create_thing(thingName=name, attributePayload={"attributes": {"environment": env}})
    cert = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_thing_principal(thingName=name, principal=cert["certificateArn"])
    if status != "ACTIVE":
        iot.update_certificate(certificateId=cert["certificateId"], newStatus=status)


def test_fleet_rows_keep_online_stale_offline_and_unknown_apart(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run_processor([single("press-1", "temperature", 20.0, NOW - 30_000),
                   single("press-1", "temperature", 95.0, NOW - 20_000),  # an anomaly: above max 80
                   single("press-1", "pressure", 100.0, NOW - 20_000),
                   single("press-2", "temperature", 21.0, NOW - 600_000),
                   single("press-3", "temperature", 22.0, NOW - 7_200_000)], monkeypatch, capsys)
    register(aws["iot"], "press-1")
    register(aws["iot"], "press-4")  # registered, never sent anything
    register(aws["iot"], "press-3", status="REVOKED")
    register(aws["iot"], "other-env", env="prod")

    rows = fleet.fleet_summary(aws["iot"], aws["dynamodb"], table=TABLE, index=INDEX, environment="test",
                               now_ms=NOW, discover=True)

    by_id = {row.device_id: row for row in rows}
    assert list(by_id) == ["press-1", "press-2", "press-3", "press-4"]  # sorted; other env's thing left out
    assert {d: r.state for d, r in by_id.items()} == {"press-1": "online", "press-2": "stale",
                                                      "press-3": "offline", "press-4": "unknown"}
    assert (by_id["press-1"].last_seen_ms, by_id["press-1"].readings_last_hour) == (NOW - 20_000, 3)
    assert by_id["press-1"].open_anomalies == 1 and by_id["press-2"].open_anomalies == 0
    assert (by_id["press-3"].last_seen_ms, by_id["press-3"].readings_last_hour) == (NOW - 7_200_000, 0)
    assert (by_id["press-4"].last_seen_ms, by_id["press-4"].silent_for_s(NOW)) == (None, None)
    assert {d: (r.registered, r.certificate) for d, r in by_id.items()} == {
        "press-1": (True, "active"), "press-2": (False, ""), "press-3": (True, "revoked"), "press-4": (True, "active")}
    assert by_id["press-2"].as_dict(NOW)["silentFor"] == 600.0


def test_without_discovery_the_fleet_is_the_registered_things(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    run_processor([single("sim-001", "temperature", 20.0, NOW - 1000)], monkeypatch, capsys)
    register(aws["iot"], "press-1")
    rows = fleet.fleet_summary(aws["iot"], aws["dynamodb"], table=TABLE, index=INDEX, environment="test",
                               now_ms=NOW)
    assert [row.device_id for row in rows] == ["press-1"]


def test_packed_items_count_each_reading(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    run_processor([single("press-5", "temperature", 20.0 + i, NOW - 50_000 + i * 1000) for i in range(40)],
                  monkeypatch, capsys, env=PACKED)
    last, count = fleet.device_activity(aws["dynamodb"], TABLE, "press-5", NOW)
    assert (last, count) == (NOW - 50_000 + 39_000, 40)
    found = fleet.query_range(aws["dynamodb"], TABLE, "press-5", since_ms=NOW - 45_000, until_ms=NOW - 40_000,
                              sensor="temperature")
    assert [r.value for r in found.readings] == [25.0, 26.0, 27.0, 28.0, 29.0, 30.0]
    assert not found.truncated


def test_range_reads_one_sensor_oldest_first_and_says_when_it_stops(aws: dict[str, Any],
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run_processor([single("press-1", sensor, float(i), NOW - 10_000 + i * 1000)
                   for i in range(10) for sensor in ("temperature", "pressure")], monkeypatch, capsys)
    found = fleet.query_range(aws["dynamodb"], TABLE, "press-1", since_ms=NOW - 10_000, until_ms=NOW,
                              sensor="pressure")
    assert [(r.sensor_type, r.value) for r in found.readings] == [("pressure", float(i)) for i in range(10)]
    capped = fleet.query_range(aws["dynamodb"], TABLE, "press-1", since_ms=NOW - 10_000, until_ms=NOW,
                               max_readings=4)
    assert capped.truncated and len(capped.readings) == 4
    with pytest.raises(ParameterError, match="until_ms"):
        fleet.query_range(aws["dynamodb"], TABLE, "press-1", since_ms=NOW, until_ms=NOW - 1)


@pytest.mark.parametrize(("silent_s", "expected"), [(0, "online"), (119, "online"), (120, "stale"),
                                                     (3599, "stale"), (3600, "offline")])
def test_device_state_thresholds(silent_s: int, expected: str) -> None:
    assert fleet.device_state(NOW - silent_s * 1000, NOW) == expected
    assert fleet.device_state(None, NOW) == "unknown"


@pytest.mark.parametrize("env", [{}, PACKED], ids=["item-per-reading", "packed"])
def test_a_series_is_the_range_read_as_columns(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], env: dict[str, str]) -> None:
    sent = [single("press-6", "temperature", 20.0 + i % 7, NOW - 100_000 + i * 1000) for i in range(90)]
    sent += [single("press-6", "temperature", 95.0, NOW - 30_500),  # an anomaly (above max 80)
             single("press-6", "pressure", 100.0, NOW - 30_000), sent[10], sent[10]]  # another sensor, a repeat
    run_processor(sent, monkeypatch, capsys, env=env)
    for since, until, cap in ((NOW - 200_000, NOW, 1_000_000), (NOW - 75_000, NOW - 20_000, 1_000_000),
                              (NOW - 200_000, NOW, 5)):
        ranged = fleet.query_range(aws["dynamodb"], TABLE, "press-6", since_ms=since, until_ms=until,
                                   sensor="temperature", max_readings=cap)
        series = fleet.query_series(aws["dynamodb"], TABLE, "press-6", sensor="temperature", since_ms=since,
                                    until_ms=until, max_readings=cap)
        assert series.times == tuple(r.timestamp for r in ranged.readings)
        assert series.values == tuple(r.value for r in ranged.readings)
        assert series.anomalies == tuple(r for r in ranged.readings if r.anomaly)
        assert series.truncated == ranged.truncated
    assert [r.value for r in series.anomalies] == [] and len(series.times) == 5
    whole = fleet.query_series(aws["dynamodb"], TABLE, "press-6", sensor="temperature", since_ms=NOW - 200_000,
                               until_ms=NOW)
    assert [r.value for r in whole.anomalies] == [95.0] and len(whole.times) == 91  # the repeat read once
    every = fleet.query_device_series(aws["dynamodb"], TABLE, "press-6", since_ms=NOW - 200_000, until_ms=NOW)
    assert every == {sensor: fleet.query_series(aws["dynamodb"], TABLE, "press-6", sensor=sensor,
                                                since_ms=NOW - 200_000, until_ms=NOW)
                     for sensor in ("temperature", "pressure")}
    with pytest.raises(ParameterError, match="until_ms"):
        fleet.query_series(aws["dynamodb"], TABLE, "press-6", sensor="temperature", since_ms=NOW, until_ms=NOW - 1)


@pytest.mark.parametrize("env", [{}, PACKED], ids=["item-per-reading", "packed"])
def test_one_scan_finds_what_each_devices_queries_find(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str],
                                                       env: dict[str, str]) -> None:
    run_processor([single("press-1", "temperature", 20.0 + i, NOW - 90_000 + i * 7000) for i in range(12)]
                  + [single("press-2", "temperature", 21.0, NOW - 5_400_000 + i * 1000) for i in range(3)]
                  + [single("press-3", "pressure", 99.0, NOW - 3_590_000), single("press-3", "pressure", 98.0,
                                                                               NOW - 3_700_000)]
                  + [single("press-4", "temperature", 200.0, NOW + 3_600_000)], monkeypatch, capsys, env=env)
    scanned = fleet.table_activity(aws["dynamodb"], TABLE, NOW)
    assert sorted(scanned) == ["press-1", "press-2", "press-3", "press-4"]
    assert scanned == {device: fleet.device_activity(aws["dynamodb"], TABLE, device, NOW) for device in scanned}
    assert scanned["press-1"] == (NOW - 90_000 + 11 * 7000, 12) and scanned["press-2"] == (NOW - 5_398_000, 0)


def _messy_items(seed: int) -> list[dict[str, Any]]:
    """Items of both layouts as retries, late readings and arrival dates leave them: packed windows split over
    several items, a window packed again by a retry, equal entries in one item, entries out of time order, a NaN,
    readings of their own with and without an origin (some equal to a packed entry, some anomalies)."""
    import random

    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    for window in range(6):
        start = NOW - 400_000 + window * 60_000
        for sensor in ("temperature", "pressure"):
            entries = [(rng.randrange(0, 60) * 1000, rng.choice((20.5, 21.0, 22.25, 23.0))) for _ in range(12)]
            if rng.random() < 0.5:
                entries.sort()
            if rng.random() < 0.3:
                entries.append(entries[0])  # an equal entry: another reading dated by its arrival
            if window == 2:
                entries.append((5000, float("nan")))
            cut = rng.randrange(1, len(entries))
            for seq, part in enumerate((entries[:cut], entries[cut:], entries[: cut // 2 + 1])):  # the last: a retry
                text = ",".join(f"{offset}:{value:g}" for offset, value in part)
                items.append({"deviceId": {"S": "press-9"}, "sk": {"S": f"{start:013d}#{sensor}#packed#s#{seq}#0"},
                              "readings": {"S": text}, "sensorType": {"S": sensor}, "status": {"S": "NORMAL"}})
            for n in range(3):
                when = start + (entries[n][0] if n else rng.randrange(0, 60_000))
                value = entries[n][1] if n < 2 else 99.0
                origin = f"#s#{n}#1" if rng.random() < 0.5 else ""
                single_item = {"deviceId": {"S": "press-9"}, "sk": {"S": f"{when:013d}#{sensor}#{value:g}{origin}"},
                               "timestamp": {"N": str(when)}, "value": {"N": f"{value:g}"},
                               "sensorType": {"S": sensor}, "status": {"S": "NORMAL"}}
                if value == 99.0:
                    single_item.update(status={"S": "ANOMALY"}, anomalyDetected={"BOOL": True},
                                       reason={"S": "above max"}, rule={"S": "bound"})
                items.append(single_item)
    return items


@pytest.mark.parametrize("seed", range(4))
def test_a_series_reads_messy_items_as_the_range_read_does(aws: dict[str, Any], seed: int) -> None:
    for item in _messy_items(seed):
        aws["dynamodb"].put_item(TableName=TABLE, Item=item)
    for since, until, cap in ((NOW - 500_000, NOW, 1_000_000), (NOW - 330_000, NOW - 130_000, 1_000_000),
                              (NOW - 500_000, NOW, 40), (NOW - 500_000, NOW, 1)):
        ranged = fleet.query_range(aws["dynamodb"], TABLE, "press-9", since_ms=since, until_ms=until,
                                   max_readings=cap)
        every = fleet.query_device_series(aws["dynamodb"], TABLE, "press-9", since_ms=since, until_ms=until,
                                          max_readings=cap)
        whole = fleet.query_range(aws["dynamodb"], TABLE, "press-9", since_ms=since, until_ms=until)
        assert ranged.readings and set(every) == {r.sensor_type for r in ranged.readings}
        for sensor, series in every.items():
            mine = [r for r in ranged.readings if r.sensor_type == sensor]
            assert series.times == tuple(r.timestamp for r in mine)
            assert series.values == tuple(r.value for r in mine)
            # every anomaly up to the last reading kept (a cap can cut readings of that very millisecond)
            assert series.anomalies == tuple(r for r in whole.readings if r.anomaly and r.sensor_type == sensor
                                             and r.timestamp <= ranged.readings[-1].timestamp)
            assert series.truncated == ranged.truncated
        one = fleet.query_series(aws["dynamodb"], TABLE, "press-9", sensor="pressure", since_ms=since,
                                 until_ms=until, max_readings=cap)
        alone = fleet.query_range(aws["dynamodb"], TABLE, "press-9", since_ms=since, until_ms=until,
                                  sensor="pressure", max_readings=cap)
        assert one.times == tuple(r.timestamp for r in alone.readings)
        assert one.values == tuple(r.value for r in alone.readings)


def test_pages_fetched_ahead_come_in_order_with_their_errors_and_stop_one_ahead() -> None:
    asked: list[int] = []

    def pages(fail_at: int | None) -> Iterator[dict[str, Any]]:
        for number in range(5):
            asked.append(number)
            if number == fail_at:
                raise RuntimeError(f"page {number} failed")
            yield {"Items": [number]}

    assert [page["Items"] for page in fleet._fetched_ahead(pages(None))] == [[0], [1], [2], [3], [4]]
    asked.clear()
    read: list[Any] = []
    with pytest.raises(RuntimeError, match="page 2 failed"):
        for page in fleet._fetched_ahead(pages(2)):
            read.append(page["Items"])
    assert read == [[0], [1]]
    asked.clear()
    for page in fleet._fetched_ahead(pages(None)):
        if page["Items"] == [1]:
            break
    assert asked == [0, 1, 2]  # a reader that stops early: one page asked for ahead, no more
