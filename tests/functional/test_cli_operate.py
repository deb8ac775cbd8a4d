"""The operating commands end to end against a moto server: a small stack with the contract's outputs,
items written by the real processor (handler/python/index.py), its log lines and its EMF metrics."""

from __future__ import annotations

import csv
import io
import json
import stat
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result

import iotpipe.cli.output as cli_output
from iotpipe.cli import main

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tests" / "handler") not in sys.path:  # the processor tests' helpers
    sys.path.insert(0, str(ROOT / "tests" / "handler"))

from processor_support import kinesis_event, load_handler, rule_records  # noqa: E402

STACK = "iotpipe-dev"
THRESHOLDS = {"temperature": {"min": 10, "max": 80, "unit": "celsius"},
              "pressure": {"min": 30, "max": 150, "unit": "psi"},
              "vibration": {"min": None, "max": 5, "unit": "mm/s"}}

# The resources the operating commands read, with the output keys of the real template.
STACK_TEMPLATE = {
    "Resources": {
        "SensorDataTable": {"Type": "AWS::DynamoDB::Table", "Properties": {
            "TableName": "SensorReadings-dev", "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": n, "AttributeType": "S"}
                                     for n in ("deviceId", "sk", "anomalyDay", "anomalySk")],
            "KeySchema": [{"AttributeName": "deviceId", "KeyType": "HASH"},
                          {"AttributeName": "sk", "KeyType": "RANGE"}],
            "GlobalSecondaryIndexes": [{
                "IndexName": "AnomaliesByDay", "Projection": {"ProjectionType": "ALL"},
                "KeySchema": [{"AttributeName": "anomalyDay", "KeyType": "HASH"},
                              {"AttributeName": "anomalySk", "KeyType": "RANGE"}]}]}},
        "RawDataBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "iot-raw-data-dev-test"}},
        "DataProcessorLogGroup": {"Type": "AWS::Logs::LogGroup",
                                  "Properties": {"LogGroupName": "/aws/lambda/iot-data-processor-dev"}},
        "SensorDevicePolicy": {"Type": "AWS::IoT::Policy", "Properties": {
            "PolicyName": "SensorDevicePolicy-dev",
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect",
                 "Resource": "arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"}]}}},
    },
    "Outputs": {
        "SensorDataTableName": {"Value": {"Ref": "SensorDataTable"}},
        "RawDataBucketName": {"Value": {"Ref": "RawDataBucket"}},
        "DataProcessorLogGroupName": {"Value": {"Ref": "DataProcessorLogGroup"}},
        "SensorDevicePolicyName": {"Value": "SensorDevicePolicy-dev"},
        "AnomalyIndexName": {"Value": "AnomaliesByDay"},
        "EnvironmentSuffix": {"Value": "dev"},
    },
}


@pytest.fixture
def stack(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The stack in moto, a clean working directory, and the stack's outputs."""
    monkeypatch.chdir(tmp_path)
    cloudformation = boto3.client("cloudformation", endpoint_url=moto_endpoint, region_name="us-east-1")
    cloudformation.create_stack(StackName=STACK, TemplateBody=json.dumps(STACK_TEMPLATE))
    outputs = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
    return {"endpoint": moto_endpoint, **{o["OutputKey"]: o["OutputValue"] for o in outputs}}


def cli(stack: Mapping[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, [*args, "--env", "dev", "--endpoint-url", stack["endpoint"]], input=stdin)


def client(stack: Mapping[str, str], service: str) -> Any:
    return boto3.client(service, endpoint_url=stack["endpoint"], region_name="us-east-1")


# --- the real processor -------------------------------------------------------------------------------


def run_processor(stack: Mapping[str, str], payloads: Sequence[Mapping[str, Any]], now: int,
                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                  storage: Mapping[str, str] | None = None) -> list[str]:
    """Feed payloads, as the IoT rule forwards them, through handler/python/index.py (``storage``: its
    STORAGE_LAYOUT and PACK_WINDOW_SECONDS, when not the defaults); its printed lines."""
    env = {"DYNAMODB_TABLE": stack["SensorDataTableName"], "S3_BUCKET": stack["RawDataBucketName"],
           "ENVIRONMENT": "dev", "THRESHOLDS": json.dumps(THRESHOLDS), "UNKNOWN_SENSOR": "quarantine",
           "TTL_DAYS": "90", "METRIC_NAMESPACE": "IoT/Manufacturing", "AWS_ENDPOINT_URL": stack["endpoint"],
           **(storage or {})}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    event = kinesis_event(rule_records(payloads, now, first_sequence=49_600_000_000))
    capsys.readouterr()
    assert load_handler().handler(event, None) == {"batchItemFailures": []}
    return [line for line in capsys.readouterr().out.splitlines() if line.strip()]


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def reading(device: str, sensor: str, value: float, timestamp: int) -> dict[str, Any]:
    return {"deviceId": device, "sensorType": sensor, "value": value, "timestamp": timestamp}


# --- device -------------------------------------------------------------------------------------------


def test_device_register_list_revoke(stack: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli(stack, "device", "register", "press-07", "--out-dir", "certs", "--location", "line-2",
                 "--equipment-type", "press")
    assert result.exit_code == 0, result.output
    assert "registered press-07" in result.stdout
    assert "topic       sensor/press-07/data" in result.stdout
    certs = tmp_path / "certs"
    assert sorted(p.name for p in certs.iterdir()) == ["press-07.cert.pem", "press-07.json", "press-07.private.key"]
    assert stat.S_IMODE((certs / "press-07.private.key").stat().st_mode) == 0o600
    connection = json.loads((certs / "press-07.json").read_text())
    assert (connection["clientId"], connection["topic"], connection["port"]) == ("press-07", "sensor/press-07/data",
                                                                                 8883)
    assert connection["endpoint"].endswith("-ats.iot.us-east-1.amazonaws.com")
    iot = client(stack, "iot")
    cert_arn = iot.list_thing_principals(thingName="press-07")["principals"][0]
    assert [p["policyName"] for p in iot.list_attached_policies(target=cert_arn)["policies"]] == \
        ["SensorDevicePolicy-dev"]

    listed = cli(stack, "device", "list")
    assert listed.exit_code == 0
    assert listed.stdout.splitlines()[0].split() == ["DEVICE", "CERTS", "ATTRIBUTES"]
    assert "press-07" in listed.stdout and "location=line-2" in listed.stdout
    as_json = json.loads(cli(stack, "device", "list", "--output", "json").stdout)
    assert [d["thingName"] for d in as_json] == ["press-07"]
    assert as_json[0]["attributes"]["equipmentType"] == "press"

    again = cli(stack, "device", "register", "press-07", "--out-dir", "certs")
    assert again.exit_code == 2
    assert "refusing to overwrite" in again.stderr

    refused = cli(stack, "device", "revoke", "press-07")  # not a terminal, no --yes
    assert refused.exit_code == 2
    assert "--yes" in refused.stderr
    monkeypatch.setattr(cli_output, "is_interactive", lambda: True)
    declined = cli(stack, "device", "revoke", "press-07", stdin="n\n")  # a terminal, answered no
    assert declined.exit_code == 1 and "cancelled" in declined.stderr
    assert [thing["thingName"] for thing in iot.list_things()["things"]] == ["press-07"]
    revoked = cli(stack, "device", "revoke", "press-07", "--yes")
    assert revoked.exit_code == 0, revoked.output
    assert "revoked press-07: deleted 1 certificate(s)" in revoked.stdout
    assert iot.list_things()["things"] == []
    assert iot.list_certificates()["certificates"] == []
    # Its files are gone with it, so the id can be registered again.
    assert "removed     certs/press-07.private.key" in revoked.stdout and list(certs.iterdir()) == []
    assert cli(stack, "device", "register", "press-07", "--out-dir", "certs").exit_code == 0


def test_device_register_in_iotpipe_local_points_at_its_broker(stack: dict[str, str], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from iotpipe.local.state import LocalState

    local = LocalState(env="dev", stack_name=STACK, region="us-east-1", aws_endpoint=stack["endpoint"],
                       mqtt="mqtt://127.0.0.1:18831", broker="mosquitto", pid=1, child_pids=(), started_at="",
                       ready=True, log_file="")
    # A running `iotpipe local` serves env dev (no --endpoint-url: the CLI finds it from its state file).
    monkeypatch.setattr("iotpipe.cli.common.running_state", lambda: local)
    monkeypatch.setattr("iotpipe.cli.devices.running_state", lambda: local)
    result = CliRunner().invoke(main, ["device", "register", "press-07", "--env", "dev", "--out-dir", "certs"])
    assert result.exit_code == 0, result.output
    connection = json.loads((tmp_path / "certs" / "press-07.json").read_text())
    assert (connection["endpoint"], connection["port"]) == ("127.0.0.1", 18831)
    assert connection["broker"] == {"url": "mqtt://127.0.0.1:18831", "tls": False}


@pytest.mark.parametrize("name", ["bad/name", "has space", "x" * 129])
def test_device_register_rejects_invalid_ids(stack: dict[str, str], tmp_path: Path, name: str) -> None:
    result = cli(stack, "device", "register", name, "--out-dir", "certs")
    assert result.exit_code == 2
    assert "is not valid" in result.stderr
    assert not (tmp_path / "certs").exists()
    assert client(stack, "iot").list_things()["things"] == []


def test_commands_say_when_the_stack_is_missing(moto_endpoint: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["readings", "press-1"], ["anomalies"], ["logs"], ["metrics"], ["device", "register", "d1"]):
        result = CliRunner().invoke(main, [*args, "--env", "dev", "--endpoint-url", moto_endpoint])
        assert result.exit_code == 1, args
        assert "stack iotpipe-dev does not exist; deploy it first" in result.stderr


# --- readings and anomalies -----------------------------------------------------------------------------


def test_readings_from_processor_items(stack: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    now = now_ms()
    run_processor(stack, [reading("press-1", "temperature", 21.5, now - 7200_000),  # outside --since 1h
                          reading("press-1", "temperature", 85.0, now - 3000),
                          {"deviceId": "press-1", "timestamp": now - 2000,
                           "readings": {"pressure": 100.0, "vibration": 6.5}},
                          reading("press-2", "temperature", 99.0, now - 1000)], now, monkeypatch, capsys)

    table = cli(stack, "readings", "press-1", "--since", "1h")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    # an anomaly says which rule fired, with the score and the learned band where the detector has them
    assert lines[0].split() == ["TIME", "SENSOR", "VALUE", "UNIT", "STATUS", "REASON", "RULE", "SCORE", "EXPECTED"]
    assert [line.split()[1] for line in lines[1:]] == ["vibration", "pressure", "temperature"]  # newest first
    assert "85  " in lines[3] and "ANOMALY" in lines[3] and "above max 80" in lines[3]
    assert lines[3].split()[-1] == "bound"  # a static bound fired (still in its probation: no score or band)

    as_json = json.loads(cli(stack, "readings", "press-1", "--since", "3h", "--output", "json").stdout)
    assert [(r["sensorType"], r["value"], r["status"]) for r in as_json] == [
        ("vibration", 6.5, "ANOMALY"), ("pressure", 100.0, "NORMAL"), ("temperature", 85.0, "ANOMALY"),
        ("temperature", 21.5, "NORMAL")]
    assert as_json[0]["reason"] == "above max 5" and as_json[0]["unit"] == "mm/s"

    rows = list(csv.DictReader(io.StringIO(cli(stack, "readings", "press-1", "--anomalies-only",
                                               "--sensor", "temperature", "--output", "csv").stdout)))
    assert [(r["sensorType"], r["value"], r["reason"]) for r in rows] == [("temperature", "85.0", "above max 80")]
    assert rows[0]["anomaly"] == "true"  # issue 12: CSV wrote Python's True

    limited = json.loads(cli(stack, "readings", "press-1", "--since", "3h", "--limit", "2", "--output",
                             "json").stdout)
    assert [r["sensorType"] for r in limited] == ["vibration", "pressure"]

    bad = cli(stack, "readings", "press-1", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.stderr


def test_readings_found_whatever_layout_and_window_they_were_written_with(
        stack: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    now = now_ms()
    hour = now - now % 3600_000 - 2 * 3600_000  # a window start two hours back: --since starts well after it
    sent = [reading("press-1", "temperature", 20.0 + n, hour + 3000_000 + n * 1000) for n in range(30)]
    run_processor(stack, [{"deviceId": "press-1", "samples": [{k: v for k, v in r.items() if k != "deviceId"}
                                                               for r in sent]}],
                  now, monkeypatch, capsys, storage={"STORAGE_LAYOUT": "packed", "PACK_WINDOW_SECONDS": "3600"})
    # readings of a clockless device, one message: dated by their arrival, equal values are distinct readings
    run_processor(stack, [{"deviceId": "press-1", "samples": [{"sensorType": "pressure", "value": 100.0}] * 20}],
                  now, monkeypatch, capsys)
    since = datetime.fromtimestamp((hour + 2990_000) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    for storage in ('layout = "packed"\npack_window_seconds = 3600', 'layout = "packed"\npack_window_seconds = 60',
                    'layout = "item-per-reading"'):  # the configuration changed after the items were written
        (tmp_path / "iotpipe.toml").write_text(f"[defaults.storage]\n{storage}\n")
        result = cli(stack, "readings", "press-1", "--since", since, "--output", "json")
        assert result.exit_code == 0, result.output
        found = json.loads(result.stdout)
        assert sorted(r["value"] for r in found if r["sensorType"] == "temperature") == [20.0 + n for n in range(30)]
        assert [r["value"] for r in found if r["sensorType"] == "pressure"] == [100.0] * 20, storage


def test_anomalies_across_devices(stack: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    now = now_ms()
    run_processor(stack, [reading("press-1", "temperature", 85.0, now - 3000),
                          reading("oven-2", "pressure", 10.0, now - 2000),
                          reading("oven-2", "temperature", 50.0, now - 1000),  # normal: not listed
                          reading("mill-3", "vibration", 9.0, now - 40 * 3600_000)],  # older than 24h
                  now, monkeypatch, capsys)

    result = cli(stack, "anomalies", "--since", "24h")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["DEVICE", "TIME", "SENSOR"]
    assert [line.split()[0] for line in lines[1:]] == ["oven-2", "press-1"]
    assert "below min 30" in lines[1] and lines[1].split()[-1] == "bound"

    week = json.loads(cli(stack, "anomalies", "--since", "7d", "--output", "json").stdout)
    assert [(a["deviceId"], a["sensorType"]) for a in week] == [
        ("oven-2", "pressure"), ("press-1", "temperature"), ("mill-3", "vibration")]
    only_vibration = json.loads(cli(stack, "anomalies", "--since", "7d", "--sensor", "vibration",
                                    "--output", "json").stdout)
    assert [a["deviceId"] for a in only_vibration] == ["mill-3"]


# --- logs and metrics -----------------------------------------------------------------------------------


def test_logs_show_the_processors_lines_summarised(stack: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    now = now_ms()
    printed = run_processor(stack, [reading("press-1", "temperature", 85.0, now - 1000),
                                    {"deviceId": "press-1", "sensorType": "temperature", "value": "hot"}],
                            now, monkeypatch, capsys)
    logs = client(stack, "logs")
    group = stack["DataProcessorLogGroupName"]
    logs.create_log_stream(logGroupName=group, logStreamName="s1")
    logs.put_log_events(logGroupName=group, logStreamName="s1", logEvents=[
        {"timestamp": now - 500 + i, "message": line} for i, line in enumerate(printed)])

    result = cli(stack, "logs", "--since", "10m")
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert len(out) == len(printed)
    assert not any(line.split(" ", 1)[1].lstrip().startswith("{") for line in out)  # summarised, not raw JSON
    assert any(" metrics " in line and "SensorReadingsProcessed=1" in line for line in out)
    messages = [json.loads(line).get("message") for line in printed if "_aws" not in json.loads(line)]
    for message in messages:
        assert any(message in line for line in out)

    as_json = json.loads(cli(stack, "logs", "--since", "10m", "--output", "json").stdout)
    assert len(as_json) == len(printed)
    assert all(item["time"].endswith("Z") for item in as_json)


def test_metrics_table_and_sparkline(stack: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    now = now_ms()
    printed = run_processor(stack, [reading("press-1", "temperature", 85.0, now - 1000),
                                    reading("press-1", "pressure", 100.0, now - 900),
                                    {"deviceId": "press-1", "sensorType": "torque", "value": 1.0}],
                            now, monkeypatch, capsys)
    cloudwatch = client(stack, "cloudwatch")
    for text in printed:  # what CloudWatch does with the EMF lines in the function's log
        document = json.loads(text)
        if "_aws" not in document:
            continue
        stamp = datetime.fromtimestamp(document["_aws"]["Timestamp"] / 1000, tz=UTC)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimensions in directive["Dimensions"]:
                cloudwatch.put_metric_data(Namespace=directive["Namespace"], MetricData=[
                    {"MetricName": m["Name"], "Timestamp": stamp, "Value": float(document[m["Name"]]),
                     "Dimensions": [{"Name": d, "Value": str(document[d])} for d in dimensions]}
                    for m in directive["Metrics"]])

    result = cli(stack, "metrics", "--since", "30m", "--period", "300")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split("  ")[0].strip() == "PERIOD START (UTC)"
    assert "SensorReadingsProcessed" in lines[0]
    totals = {line.split()[0]: line for line in lines if " total " in line}
    assert totals["SensorReadingsProcessed"].split()[2] == "2"
    assert totals["AnomaliesDetected"].split()[2] == "1"
    assert totals["RecordsQuarantined"].split()[2] == "1"
    # the newest period with data is the peak (a period boundary may pass between processing and the query)
    assert totals["SensorReadingsProcessed"].split()[-1].rstrip("▁").endswith("█")
    assert set(totals["SensorReadingsProcessed"].split()[-1]) <= set("▁▂▃▄▅▆▇█")

    as_json = json.loads(cli(stack, "metrics", "--since", "30m", "--period", "300", "--output", "json").stdout)
    assert as_json["totals"] == {"SensorReadingsProcessed": 2.0, "AnomaliesDetected": 1.0,
                                 "RecordsQuarantined": 1.0}
    assert as_json["periodSeconds"] == 300


def test_logs_follow_is_bounded_and_filter_applies(stack: dict[str, str]) -> None:
    logs = client(stack, "logs")
    group = stack["DataProcessorLogGroupName"]
    now = now_ms()
    logs.create_log_stream(logGroupName=group, logStreamName="s1")
    logs.put_log_events(logGroupName=group, logStreamName="s1", logEvents=[
        {"timestamp": now - 2000, "message": '{"level":"INFO","message":"batch processed","records":3,'
                                             '"quarantined":1}'},
        {"timestamp": now - 1000, "message": '{"level":"WARN","message":"record quarantined","reason":"bad"}'}])

    followed = cli(stack, "logs", "--follow", "--max-wait", "1")
    assert followed.exit_code == 0, followed.output
    assert [line.split(None, 2)[2] for line in followed.stdout.splitlines()] == [
        "batch processed records=3 quarantined=1", "record quarantined reason=bad"]
    assert followed.stdout.splitlines()[1].split()[1] == "WARN"

    # Every batch line counts "quarantined" records: the filter matches the quarantined records only.
    filtered = cli(stack, "logs", "--filter", "quarantined")
    assert filtered.exit_code == 0
    assert [line.split(None, 2)[2] for line in filtered.stdout.splitlines()] == ["record quarantined reason=bad"]

    # --output json is one document; jsonl is a line per event; --follow streams, so json with it is refused.
    document = json.loads(cli(stack, "logs", "--output", "json").stdout)
    assert [item["message"] for item in document] == ["batch processed", "record quarantined"]
    lines = cli(stack, "logs", "--output", "jsonl").stdout.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["batch processed", "record quarantined"]
    refused = cli(stack, "logs", "--follow", "--output", "json")
    assert refused.exit_code == 2 and "--output jsonl" in refused.output
