"""``iotpipe fleet claim create``, ``fleet allow`` and ``fleet status`` end to end against a moto server."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result

from iotpipe import provisioning_hook
from iotpipe.cli import main

STACK = "iotpipe-dev"
TABLE = "iotpipe-fleet-dev"
TEMPLATE = {
    "Resources": {
        "FleetAllowListTable": {"Type": "AWS::DynamoDB::Table", "Properties": {
            "TableName": TABLE, "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}]}},
        "FleetClaimPolicy": {"Type": "AWS::IoT::Policy", "Properties": {
            "PolicyName": "iotpipe-claim-dev",
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}}},
    },
    "Outputs": {
        "FleetProvisioningTemplateName": {"Value": "iotpipe-claim-dev"},
        "FleetAllowListTableName": {"Value": {"Ref": "FleetAllowListTable"}},
        "FleetClaimPolicyName": {"Value": "iotpipe-claim-dev"},
        "FleetPreProvisioningHookName": {"Value": "iotpipe-claim-hook-dev"},
    },
}


@pytest.fixture
def endpoint(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    aws(moto_endpoint, "cloudformation").create_stack(StackName=STACK, TemplateBody=json.dumps(TEMPLATE))
    return moto_endpoint


def cli(endpoint: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--env", "dev", "--endpoint-url", endpoint])


def aws(endpoint: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def test_claim_create_writes_the_device_files_and_registers_the_claim(endpoint: str, tmp_path: Path) -> None:
    result = cli(endpoint, "fleet", "claim", "create", "--expires", "30d", "-o", "batch-1", "--output", "json")
    assert result.exit_code == 0, result.output
    bundle = json.loads(result.stdout)
    key = tmp_path / "batch-1" / "claim.private.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and "PRIVATE KEY" in key.read_text()
    settings = json.loads((tmp_path / "batch-1" / "claim.json").read_text())
    assert settings["templateName"] == "iotpipe-claim-dev"
    assert settings["claimCertificateId"] == bundle["certificateId"]
    assert settings["certificateFile"] == "claim.cert.pem" and settings["port"] == 8883
    iot = aws(endpoint, "iot")
    assert iot.list_attached_policies(target=bundle["certificateArn"])["policies"][0]["policyName"] \
        == "iotpipe-claim-dev"
    assert iot.describe_certificate(certificateId=bundle["certificateId"])["certificateDescription"]["status"] \
        == "ACTIVE"
    again = cli(endpoint, "fleet", "claim", "create", "-o", "batch-1")
    assert again.exit_code == 2 and "refusing to overwrite" in again.output


def test_allow_then_the_hook_allows_exactly_the_listed_serials(endpoint: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "serials.csv").write_text("serial,line\nSN-2,l1\nSN-3,l2\n")
    assert cli(endpoint, "fleet", "allow", "SN-1").exit_code == 0
    listed = cli(endpoint, "fleet", "allow", "--from", "serials.csv")
    assert listed.exit_code == 0 and "allowed 2 serial(s)" in listed.stdout
    created = json.loads(cli(endpoint, "fleet", "claim", "create", "-o", "c", "--output", "json").stdout)
    monkeypatch.setattr(provisioning_hook, "DB", aws(endpoint, "dynamodb"))

    def decide(serial: str) -> tuple[bool, str]:
        return provisioning_hook.decide({"claimCertificateId": created["certificateId"],
                                         "parameters": {"SerialNumber": serial}}, TABLE)

    assert [decide(s)[0] for s in ("SN-1", "SN-2", "SN-3", "SN-4")] == [True, True, True, False]
    status = json.loads(cli(endpoint, "fleet", "status", "--output", "json").stdout)
    assert status["allowedSerials"] == 3
    assert [c["certificateId"] for c in status["claimCertificates"]] == [created["certificateId"]]
    assert status["claimCertificates"][0]["expired"] is False


def test_bad_serials_are_refused_before_anything_is_written(endpoint: str) -> None:
    result = cli(endpoint, "fleet", "allow", "SN-1", "bad serial")
    assert result.exit_code == 2 and "bad serial" in result.output
    assert aws(endpoint, "dynamodb").scan(TableName=TABLE)["Count"] == 0
    neither = cli(endpoint, "fleet", "allow")
    assert neither.exit_code == 2 and "SERIAL... or --from" in neither.output


def test_a_stack_without_provisioning_by_claim_names_the_setting(moto_endpoint: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    aws(moto_endpoint, "cloudformation").create_stack(StackName=STACK, TemplateBody=json.dumps(
        {"Resources": TEMPLATE["Resources"], "Outputs": {"X": {"Value": "y"}}}))
    result = cli(moto_endpoint, "fleet", "status")
    assert result.exit_code == 1 and "provisioning_by_claim = true" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--serial", "SN-1"], "--provision-by-claim DIR and --serial SERIAL go together"),
    (["--provision-by-claim", "claim"], "--provision-by-claim DIR and --serial SERIAL go together"),
    (["--provision-by-claim", "claim", "--serial", "SN-1", "--broker", "mqtt://127.0.0.1:1"], "drop --broker"),
    (["--provision-by-claim", "nowhere", "--serial", "SN-1", "--env", "dev"], "has no claim.json"),
])
def test_simulate_by_claim_refuses_bad_usage_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["simulate", *args])
    assert result.exit_code == 2 and message in result.output
