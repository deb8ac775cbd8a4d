"""``iotpipe device register --from``, ``device rotate`` and ``device audit`` end to end against a moto server."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result

from iotpipe.cli import main

STACK = "iotpipe-dev"
TEMPLATE = {
    "Resources": {
        "SensorDataTable": {"Type": "AWS::DynamoDB::Table", "Properties": {
            "TableName": "SensorReadings-dev", "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": n, "AttributeType": "S"} for n in ("deviceId", "sk")],
            "KeySchema": [{"AttributeName": "deviceId", "KeyType": "HASH"},
                          {"AttributeName": "sk", "KeyType": "RANGE"}]}},
        "SensorDevicePolicy": {"Type": "AWS::IoT::Policy", "Properties": {
            "PolicyName": "SensorDevicePolicy-dev",
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}}},
    },
    "Outputs": {
        "SensorDataTableName": {"Value": {"Ref": "SensorDataTable"}},
        "SensorDevicePolicyName": {"Value": "SensorDevicePolicy-dev"},
    },
}


@pytest.fixture
def endpoint(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    boto3.client("cloudformation", endpoint_url=moto_endpoint, region_name="us-east-1").create_stack(
        StackName=STACK, TemplateBody=json.dumps(TEMPLATE))
    return moto_endpoint


def cli(endpoint: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--env", "dev", "--endpoint-url", endpoint])


def aws(endpoint: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def test_register_from_csv_then_again_skips_what_is_done(endpoint: str, tmp_path: Path) -> None:
    (tmp_path / "devices.csv").write_text("id,location\nd-1,line-1\nd-2,line-2\n")
    first = cli(endpoint, "device", "register", "--from", "devices.csv", "--per-second", "0")
    assert first.exit_code == 0, first.output
    assert "registered 2, skipped 0 (registered before), failed 0" in first.stdout
    assert "registering 2 devices" in first.stderr  # the progress bar
    files = sorted((tmp_path / "certs").iterdir())
    assert len(files) == 6 and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert aws(endpoint, "iot").describe_thing(thingName="d-2")["attributes"]["location"] == "line-2"

    (tmp_path / "devices.csv").write_text("id,location\nd-1,line-1\nd-2,line-2\nd-3,line-3\n")
    again = cli(endpoint, "device", "register", "--from", "devices.csv", "--output", "json")
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert (summary["registered"], summary["skipped"], summary["failed"]) == (1, 2, 0)

    both = cli(endpoint, "device", "register", "d-9", "--from", "devices.csv")
    assert both.exit_code == 2 and "either DEVICE_ID or --from" in both.stderr


def test_register_from_exits_1_when_a_device_fails(endpoint: str, tmp_path: Path) -> None:
    aws(endpoint, "iot").create_thing(thingName="taken")
    (tmp_path / "devices.csv").write_text("id\nfree-1\ntaken\n")
    result = cli(endpoint, "device", "register", "--from", "devices.csv", "--per-second", "0")
    assert result.exit_code == 1
    assert "failed      taken: thing taken already exists" in result.stdout
    assert "registered 1, skipped 0 (registered before), failed 1" in result.stdout


def test_rotate_then_audit(endpoint: str, tmp_path: Path) -> None:
    assert cli(endpoint, "device", "register", "press-07").exit_code == 0
    old_id = json.loads((tmp_path / "certs" / "press-07.json").read_text())["certificateId"]

    refused = cli(endpoint, "device", "rotate", "press-07")  # not a terminal, no --yes
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    started = cli(endpoint, "device", "rotate", "press-07", "--grace", "1h", "--yes")
    assert started.exit_code == 0, started.output
    lines = started.stdout.splitlines()
    assert lines[0].startswith("press-07: created certificate ")
    assert lines[-1].startswith("press-07: waiting: the old certificate stays active until ")

    # moto's certificates are valid for a day, so both are "expiring" within 30 days; the default finds them
    found = cli(endpoint, "device", "audit", "--expiring-within", "0d", "--output", "json")
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout) == []

    finished = cli(endpoint, "device", "rotate", "press-07", "--confirm", "--yes")
    assert finished.exit_code == 0, finished.output
    assert f"press-07: deactivated old certificate {old_id}" in finished.stdout
    assert "press-07: rotation of press-07 complete" in finished.stdout
    assert json.loads((tmp_path / "certs" / "press-07.json").read_text())["certificateId"] != old_id

    expiring = cli(endpoint, "device", "audit")
    assert expiring.exit_code == 1
    assert expiring.stdout.splitlines()[1].split()[:2] == ["expiring", "press-07"]

    aws(endpoint, "dynamodb").put_item(TableName="SensorReadings-dev", Item={
        "deviceId": {"S": "press-07"}, "sk": {"S": f"{int(time.time() * 1000) - 9 * 86400_000:013d}#temperature#1"}})
    silent = cli(endpoint, "device", "audit", "--expiring-within", "0d", "--silent-for", "7d", "--output", "json")
    assert silent.exit_code == 1
    assert [(f["kind"], f["subject"]) for f in json.loads(silent.stdout)] == [("silent", "press-07")]


def test_rotate_all_expiring_within(endpoint: str) -> None:
    for name in ("a-1", "b-2"):
        assert cli(endpoint, "device", "register", name).exit_code == 0
    none = cli(endpoint, "device", "rotate", "--all-expiring-within", "0d", "--yes")
    assert none.exit_code == 0 and "no device of dev" in none.stderr
    both = cli(endpoint, "device", "rotate", "--all-expiring-within", "30d", "--grace", "0s", "--yes")
    assert both.exit_code == 0, both.output
    assert "a-1: rotation of a-1 complete" in both.stdout and "b-2: rotation of b-2 complete" in both.stdout
    bad = cli(endpoint, "device", "rotate", "a-1", "--grace", "soon", "--yes")
    assert bad.exit_code == 2 and "--grace soon is not a duration" in bad.stderr


def test_rotate_with_the_devices_csr(endpoint: str, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    assert cli(endpoint, "device", "register", "press-07").exit_code == 0
    key = ec.generate_private_key(ec.SECP256R1())
    request = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "press-07")])).sign(key, hashes.SHA256())
    (tmp_path / "press-07.csr").write_bytes(request.public_bytes(Encoding.PEM))
    result = cli(endpoint, "device", "rotate", "press-07", "--csr", "press-07.csr", "--output", "json", "--yes")
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)
    assert report["state"]["phase"] == "attached"
    assert report["steps"][0].endswith("press-07.next.cert.pem")  # no private key: the device keeps its own
    assert not (tmp_path / "certs" / "press-07.next.private.key").exists()
    many = cli(endpoint, "device", "rotate", "--all-expiring-within", "30d", "--csr", "press-07.csr", "--yes")
    assert many.exit_code == 2 and "--csr is for one device" in many.stderr
