"""The whole pipeline on a moto server: deploy the real template, simulate telemetry, run the processor with the
deployed function's own environment, read back readings and anomalies, destroy. Template, processor, simulator and
query commands must agree on the data contract for this to pass."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result

from iotpipe.cli import main
from iotpipe.config import build_config

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tests" / "handler") not in sys.path:  # the processor tests' helpers
    sys.path.insert(0, str(ROOT / "tests" / "handler"))

from processor_support import kinesis_event, load_handler, rule_records  # noqa: E402

REGION = "us-east-1"


def cli(endpoint: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--env", "dev", "--endpoint-url", endpoint, "--region", REGION])


def out_of_range(payload: dict[str, Any]) -> bool:
    threshold = build_config({}, "dev", {}).threshold_map[payload["sensorType"]]
    value = payload["value"]
    return (threshold.min is not None and value < threshold.min) or (
        threshold.max is not None and value > threshold.max)


def test_deploy_simulate_process_query_destroy(moto_endpoint: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # built-in defaults: the seed's thresholds
    deployed = cli(moto_endpoint, "deploy", "--yes")
    assert deployed.exit_code == 0, deployed.stderr
    outputs = json.loads(cli(moto_endpoint, "outputs", "--output", "json").stdout)

    simulated = CliRunner().invoke(main, ["simulate", "--dry-run", "--devices", "2", "--count", "30",
                                          "--anomaly-rate", "0.3", "--seed", "11"])
    assert simulated.exit_code == 0, simulated.stderr
    payloads = [json.loads(line) for line in simulated.stdout.splitlines()]
    arrived_at = max(p["timestamp"] for p in payloads) + 50

    function = boto3.client("lambda", endpoint_url=moto_endpoint, region_name=REGION).get_function_configuration(
        FunctionName=outputs["DataProcessorFunctionName"])
    for name, value in function["Environment"]["Variables"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    assert load_handler().handler(kinesis_event(rule_records(payloads, arrived_at)), None) == {
        "batchItemFailures": []}

    for device in sorted({p["deviceId"] for p in payloads}):
        found = cli(moto_endpoint, "readings", device, "--since", "1h", "--limit", "100", "--output", "json")
        assert found.exit_code == 0, found.stderr
        mine = [p for p in payloads if p["deviceId"] == device]
        assert sorted((r["sensorType"], r["value"]) for r in json.loads(found.stdout)) == sorted(
            (p["sensorType"], p["value"]) for p in mine)
    anomalies = cli(moto_endpoint, "anomalies", "--since", "1h", "--output", "json")
    assert anomalies.exit_code == 0, anomalies.stderr
    expected = sorted((p["deviceId"], p["sensorType"], p["value"]) for p in payloads if out_of_range(p))
    assert expected, "the seed should inject anomalies"
    assert sorted((r["deviceId"], r["sensorType"], r["value"]) for r in json.loads(anomalies.stdout)) == expected

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    archived = s3.list_objects_v2(Bucket=outputs["RawDataBucketName"], Prefix="raw/")["KeyCount"]
    assert archived == 1  # one object per batch

    destroyed = cli(moto_endpoint, "destroy", "--yes")
    assert destroyed.exit_code == 0, destroyed.stderr
    assert "does not exist" in cli(moto_endpoint, "outputs").stderr
