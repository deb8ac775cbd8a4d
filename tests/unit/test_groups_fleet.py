"""The fleet group: provisioning by claim (template, hook, allow-list, claim policy, roles) and the Device
Defender audit; the hook's handler against moto; each role and the claim policy checked both ways."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from test_least_privilege import (  # the least-privilege evaluators of the other roles
    ACCOUNT,
    PSEUDO,
    REGION,
    Call,
    Recorder,
    as_list,
    decoded,
    grants,
    resolve,
    ungranted_calls,
    unused_grants,
    wildcard,
)

from iotpipe import provisioning_hook
from iotpipe.config import load_config
from iotpipe.deploy.plan import TEMPLATE_BODY_LIMIT, compact_json
from iotpipe.groups.fleet import hook_code, template_body
from iotpipe.lint import blocking, lint_template
from iotpipe.render import render_template

REPO = Path(__file__).resolve().parents[2]
FLEET_IDS = {"FleetAllowListTable", "FleetPreProvisioningHook", "FleetPreProvisioningHookRole",
             "FleetPreProvisioningHookPermission", "FleetPreProvisioningHookLogGroup", "FleetProvisioningRole",
             "FleetProvisioningTemplate", "FleetClaimPolicy"}
AUDIT_IDS = {"DeviceDefenderAuditConfiguration", "DeviceDefenderAuditRole", "DeviceDefenderScheduledAudit"}
IOT = f"arn:aws:iot:{REGION}:{ACCOUNT}"


@pytest.fixture(scope="module")
def prod() -> dict[str, Any]:
    return decoded(render_template(load_config(REPO / "iotpipe.toml", "prod",
                                               {"fleet.device_defender_audit": True})))


def names_of(template: dict[str, Any]) -> dict[str, str]:
    names = dict(PSEUDO, EnvironmentSuffix="prod")
    for logical_id in template["Resources"]:
        names[logical_id] = logical_id
        names[f"{logical_id}.Arn"] = f"arn:aws:placeholder:::{logical_id}"
    names["AlarmTopic"] = f"arn:aws:sns:{REGION}:{ACCOUNT}:iot-pipeline-alarms-prod"
    return names


def test_dev_has_no_fleet_resources_and_prod_opts_in(prod: dict[str, Any]) -> None:
    dev = decoded(render_template(load_config(REPO / "iotpipe.toml", "dev")))
    assert not (FLEET_IDS | AUDIT_IDS) & set(dev["Resources"])
    assert set(prod["Resources"]) >= FLEET_IDS | AUDIT_IDS
    local = load_config(REPO / "iotpipe.toml", "local")
    assert local.fleet.provisioning_by_claim and not local.fleet.device_defender_audit


def test_prods_template_goes_by_template_url() -> None:
    body = render_template(load_config(REPO / "iotpipe.toml", "prod"))
    assert len(compact_json(body).encode("utf-8")) > TEMPLATE_BODY_LIMIT  # deploy uploads it (deploy/plan.py)


def test_the_template_names_the_thing_from_the_serial_and_activates_the_certificate(prod: dict[str, Any]) -> None:
    props = prod["Resources"]["FleetProvisioningTemplate"]["Properties"]
    assert props["TemplateName"] == {"Fn::Sub": "iotpipe-claim-${EnvironmentSuffix}"}
    assert props["PreProvisioningHook"] == {"TargetArn": {"Fn::GetAtt": ["FleetPreProvisioningHook", "Arn"]},
                                            "PayloadVersion": "2020-04-01"}
    assert props["ProvisioningRoleArn"] == {"Fn::GetAtt": ["FleetProvisioningRole", "Arn"]}
    body = json.loads(resolve(props["TemplateBody"], names_of(prod)))
    assert body == json.loads(template_body().replace("${EnvironmentSuffix}", "prod"))
    resources = body["Resources"]
    assert resources["thing"]["Properties"]["ThingName"] == {"Ref": "SerialNumber"}
    assert resources["certificate"]["Properties"] == {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                                                      "Status": "ACTIVE"}
    assert resources["policy"]["Properties"] == {"PolicyName": "SensorDevicePolicy-prod"}


def test_prod_with_the_audit_passes_the_lint_gate(prod: dict[str, Any]) -> None:
    text = render_template(load_config(REPO / "iotpipe.toml", "prod", {"fleet.device_defender_audit": True}))
    assert blocking(lint_template(text, checkov=True)) == []
    assert "DeviceDefenderAuditRole" in prod["Resources"]


def test_the_hook_is_inlined_within_lambdas_limit_and_answers_within_iots_5_seconds(prod: dict[str, Any]) -> None:
    props = prod["Resources"]["FleetPreProvisioningHook"]["Properties"]
    assert props["Code"]["ZipFile"] == hook_code() and len(hook_code()) < 4096
    assert props["Timeout"] < 5 and props["Runtime"].startswith("python")
    permission = prod["Resources"]["FleetPreProvisioningHookPermission"]["Properties"]
    assert permission["Principal"] == "iot.amazonaws.com"
    assert resolve(permission["SourceArn"], names_of(prod)) == f"{IOT}:provisioningtemplate/iotpipe-claim-prod"


# ---------------------------------------------------------------- the claim policy, both ways

def claim_may(template: dict[str, Any], action: str, resource: str) -> bool:
    document = resolve(template["Resources"]["FleetClaimPolicy"]["Properties"]["PolicyDocument"], names_of(template))
    return any(statement["Effect"] == "Allow" and action in as_list(statement["Action"])
               and any(wildcard(r, resource) for r in as_list(statement["Resource"]))
               for statement in document["Statement"])


@pytest.mark.parametrize(("action", "resource"), [
    ("iot:Connect", "client/SN-0001"),
    ("iot:Publish", "topic/$aws/certificates/create/json"),
    ("iot:Subscribe", "topicfilter/$aws/certificates/create/json/accepted"),
    ("iot:Receive", "topic/$aws/certificates/create/json/rejected"),
    ("iot:Publish", "topic/$aws/provisioning-templates/iotpipe-claim-prod/provision/json"),
    ("iot:Subscribe", "topicfilter/$aws/provisioning-templates/iotpipe-claim-prod/provision/json/accepted"),
    ("iot:Receive", "topic/$aws/provisioning-templates/iotpipe-claim-prod/provision/json/rejected"),
])
def test_a_claim_certificate_may_provision(prod: dict[str, Any], action: str, resource: str) -> None:
    assert claim_may(prod, action, f"{IOT}:{resource}")


@pytest.mark.parametrize(("action", "resource"), [
    ("iot:Publish", "topic/sensor/SN-0001/data"),
    ("iot:Publish", "topic/$aws/rules/SensorDataRule_prod/sensor/SN-0001/data"),
    ("iot:Publish", "topic/$aws/provisioning-templates/another-template/provision/json"),
    ("iot:Publish", "topic/$aws/certificates/create-from-csr/json"),
    ("iot:Subscribe", "topicfilter/$aws/things/#"),
    ("iot:Subscribe", "topicfilter/#"),
    ("iot:Subscribe", "topic/$aws/certificates/create/json/accepted"),  # subscribe is checked on topicfilter
    ("iot:Receive", "topic/sensor/SN-0001/commands"),
    ("iot:UpdateThingShadow", "thing/SN-0001"),
])
def test_a_claim_certificate_may_do_nothing_else(prod: dict[str, Any], action: str, resource: str) -> None:
    assert not claim_may(prod, action, f"{IOT}:{resource}")


# ---------------------------------------------------------------- the provisioning and audit roles

def statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    properties = template["Resources"][role]["Properties"]
    assert "ManagedPolicyArns" not in properties
    return [s for p in properties["Policies"] for s in resolve(p["PolicyDocument"]["Statement"], names_of(template))]


def test_the_provisioning_role_reaches_things_certificates_and_the_device_policy_only(prod: dict[str, Any]) -> None:
    granted = grants(statements(prod, "FleetProvisioningRole"))
    resources = {g.resource for g in granted}
    assert resources == {f"{IOT}:thing/*", f"{IOT}:cert/*", f"{IOT}:policy/SensorDevicePolicy-prod"}
    policy_actions = {g.action for g in granted if g.resource.endswith(":policy/SensorDevicePolicy-prod")}
    assert policy_actions == {"iot:GetPolicy", "iot:AttachPolicy"}
    assert not any(g.action in ("iot:CreatePolicy", "iot:DeleteThing", "iot:Publish", "iot:*") for g in granted)
    trust = prod["Resources"]["FleetProvisioningRole"]["Properties"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": ["iot.amazonaws.com"]}


def test_the_audit_checks_certificate_expiry_on_a_schedule_and_notifies_the_alarm_topic(
        prod: dict[str, Any]) -> None:
    names = names_of(prod)
    config = resolve(prod["Resources"]["DeviceDefenderAuditConfiguration"]["Properties"], names)
    assert config["AuditCheckConfigurations"] == {"DeviceCertificateExpiringCheck": {"Enabled": True}}
    assert config["AuditNotificationTargetConfigurations"]["Sns"]["TargetArn"] == names["AlarmTopic"]
    schedule = prod["Resources"]["DeviceDefenderScheduledAudit"]["Properties"]
    assert schedule["TargetCheckNames"] == ["DEVICE_CERTIFICATE_EXPIRING_CHECK"]
    assert schedule["Frequency"] == "WEEKLY"
    granted = grants(statements(prod, "DeviceDefenderAuditRole"))
    assert {(g.action, g.resource) for g in granted if g.resource == "*"} == {("iot:ListCertificates", "*")}
    assert {g.action for g in granted if g.resource == names["AlarmTopic"]} == {"sns:Publish"}


# ---------------------------------------------------------------- the hook, run against moto

@pytest.fixture
def hook_world(prod: dict[str, Any]) -> Iterator[tuple[str, Recorder]]:
    with mock_aws():
        setup = boto3.session.Session(region_name=REGION)
        table = resolve(prod["Resources"]["FleetAllowListTable"]["Properties"], names_of(prod))
        setup.client("dynamodb").create_table(TableName=table["TableName"], BillingMode="PAY_PER_REQUEST",
                                              AttributeDefinitions=table["AttributeDefinitions"],
                                              KeySchema=table["KeySchema"])
        db = setup.client("dynamodb")
        db.put_item(TableName=table["TableName"], Item={"id": {"S": "serial#SN-0001"}})
        db.put_item(TableName=table["TableName"], Item={"id": {"S": "claim#good"},
                                                        "expiresAt": {"N": str(int(time.time()) + 3600)}})
        db.put_item(TableName=table["TableName"], Item={"id": {"S": "claim#old"}, "expiresAt": {"N": "1000"}})
        recorder = Recorder("hook")
        session = recorder.attach(boto3.session.Session(region_name=REGION))
        provisioning_hook.DB = session.client("dynamodb")
        try:
            yield table["TableName"], recorder
        finally:
            provisioning_hook.DB = None


def event(serial: str, claim: str = "good") -> dict[str, Any]:
    return {"claimCertificateId": claim, "certificateId": "new", "certificatePem": "-----",
            "templateArn": f"{IOT}:provisioningtemplate/iotpipe-claim-prod", "clientId": serial,
            "parameters": {"SerialNumber": serial}}


def test_the_hook_allows_a_listed_serial_with_a_valid_claim(hook_world: tuple[str, Recorder]) -> None:
    table, _ = hook_world
    assert provisioning_hook.decide(event("SN-0001"), table) == (True, "")


@pytest.mark.parametrize(("serial", "claim", "reason"), [
    ("SN-9999", "good", "serial SN-9999 is not on the allow-list (iotpipe fleet allow SN-9999)"),
    ("SN-0001", "old", "claim certificate old expired"),
    ("SN-0001", "unknown", "claim certificate unknown is not registered"),
    ("bad serial!", "good", "is not a valid thing name"),
])
def test_the_hook_refuses_with_a_reason(hook_world: tuple[str, Recorder], serial: str, claim: str,
                                        reason: str) -> None:
    table, _ = hook_world
    allowed, why = provisioning_hook.decide(event(serial, claim), table)
    assert not allowed and reason in why


def test_the_handler_answers_iot_in_its_format(hook_world: tuple[str, Recorder],
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                                               ) -> None:
    table, _ = hook_world
    monkeypatch.setattr(provisioning_hook, "TABLE", table)
    assert provisioning_hook.handler(event("SN-0001"), None) == {"allowProvisioning": True}
    assert provisioning_hook.handler(event("SN-0002"), None) == {"allowProvisioning": False}
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["message"] for line in lines] == ["allowed", "refused"]


def test_the_hook_role_grants_exactly_the_hooks_calls(prod: dict[str, Any],
                                                      hook_world: tuple[str, Recorder]) -> None:
    table, recorder = hook_world
    for serial, claim in (("SN-0001", "good"), ("SN-9", "good"), ("SN-0001", "old")):
        provisioning_hook.decide(event(serial, claim), table)
    names = {**names_of(prod), "FleetAllowListTable.Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}"}
    hook_statements = [s for p in prod["Resources"]["FleetPreProvisioningHookRole"]["Properties"]["Policies"]
                       for s in resolve(p["PolicyDocument"]["Statement"], names)]
    granted = [g for g in grants(hook_statements) if not g.action.startswith("logs:")]  # Lambda's log delivery
    assert recorder.calls and not ungranted_calls(recorder.calls, granted)
    assert not unused_grants(recorder.calls, granted)
    broader = Call("dynamodb:BatchGetItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/SensorReadings-prod", "x")
    assert ungranted_calls([broader], granted) == [broader]
