"""The fleet provisioning emulator of ``iotpipe local`` (src/iotpipe/local/provisioning.py) against moto: the
MQTT API's requests and replies, with the prod template's body and hook code."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from iotpipe.groups.fleet import hook_code, template_body
from iotpipe.local.provisioning import CREATE_TOPIC, FleetTemplate, ProvisioningEmulator

TABLE = "iotpipe-fleet-local"
PROVISION = "$aws/provisioning-templates/iotpipe-claim-local/provision/json"


class Clients:
    """One client per service, as iotpipe local's client cache gives them."""

    def __init__(self) -> None:
        self._session = boto3.session.Session(region_name="us-east-1")
        self._made: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        return self._made.setdefault(service, self._session.client(service))


@pytest.fixture
def emulator() -> Iterator[ProvisioningEmulator]:
    with mock_aws():
        clients = Clients()
        db = clients.client("dynamodb")
        db.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
        db.put_item(TableName=TABLE, Item={"id": {"S": "serial#SN-1"}})
        db.put_item(TableName=TABLE, Item={"id": {"S": "claim#c1"}, "createdAt": {"N": "1"},
                                           "expiresAt": {"N": str(int(time.time()) + 600)}})
        clients.client("iot").create_policy(policyName="SensorDevicePolicy-local", policyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}))
        body = json.loads(template_body().replace("${EnvironmentSuffix}", "local"))
        yield ProvisioningEmulator(FleetTemplate("iotpipe-claim-local", body, hook_code(), TABLE), clients)


def ask(emulator: ProvisioningEmulator, topic: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    reply = emulator.handle(topic, json.dumps(body).encode())
    assert reply is not None
    return reply[0], json.loads(reply[1])


def test_an_allowed_serial_gets_its_thing_with_the_device_policy(emulator: ProvisioningEmulator) -> None:
    topic, created = ask(emulator, CREATE_TOPIC, {})
    assert topic == CREATE_TOPIC + "/accepted"
    assert {"certificateId", "certificatePem", "privateKey", "certificateOwnershipToken"} <= set(created)
    topic, registered = ask(emulator, PROVISION, {"certificateOwnershipToken": created["certificateOwnershipToken"],
                                                  "parameters": {"SerialNumber": "SN-1"}})
    assert (topic, registered["thingName"]) == (PROVISION + "/accepted", "SN-1")
    iot = boto3.client("iot", region_name="us-east-1")
    principal = iot.list_thing_principals(thingName="SN-1")["principals"][0]
    assert principal.endswith(created["certificateId"])
    assert iot.list_attached_policies(target=principal)["policies"][0]["policyName"] == "SensorDevicePolicy-local"
    assert iot.describe_certificate(certificateId=created["certificateId"])["certificateDescription"]["status"] \
        == "ACTIVE"
    # the token is spent: a second RegisterThing with it is rejected
    topic, again = ask(emulator, PROVISION, {"certificateOwnershipToken": created["certificateOwnershipToken"],
                                             "parameters": {"SerialNumber": "SN-1"}})
    assert topic.endswith("/rejected") and again["errorCode"] == "InvalidCertificateOwnershipToken"


def test_the_hooks_refusal_is_the_rejections_message(emulator: ProvisioningEmulator) -> None:
    token = ask(emulator, CREATE_TOPIC, {})[1]["certificateOwnershipToken"]
    topic, rejected = ask(emulator, PROVISION, {"certificateOwnershipToken": token,
                                                "parameters": {"SerialNumber": "SN-9"}})
    assert topic == PROVISION + "/rejected"
    assert rejected == {"statusCode": 403, "errorCode": "AccessDenied", "errorMessage":
                        "pre-provisioning hook refused: serial SN-9 is not on the allow-list (iotpipe fleet allow "
                        "SN-9)"}
    with pytest.raises(Exception, match="ResourceNotFound"):
        boto3.client("iot", region_name="us-east-1").describe_thing(thingName="SN-9")


def test_another_template_and_a_bad_payload_are_rejected(emulator: ProvisioningEmulator) -> None:
    topic, body = ask(emulator, "$aws/provisioning-templates/other/provision/json", {})
    assert topic.endswith("/rejected") and body["statusCode"] == 404
    reply = emulator.handle(PROVISION, b"not json")
    assert reply is not None and json.loads(reply[1])["errorCode"] == "InvalidPayload"
    assert emulator.handle("sensor/SN-1/data", b"{}") is None


# ---------------------------------------------------------------- the provisioning role covers RegisterThing's calls

IOT_ARN = "arn:aws:iot:us-east-1:123456789012"
RESOURCE_OF = {  # Service Authorization Reference: the resource type each IoT action is authorized against
    "CreateThing": lambda p: f"{IOT_ARN}:thing/{p['thingName']}",
    "AttachThingPrincipal": lambda p: f"{IOT_ARN}:thing/{p['thingName']}",
    "UpdateCertificate": lambda p: f"{IOT_ARN}:cert/{p['certificateId']}",
    "DescribeCertificate": lambda p: f"{IOT_ARN}:cert/{p['certificateId']}",
    "AttachPolicy": lambda p: f"{IOT_ARN}:policy/{p['policyName']}",
}


def test_every_call_of_the_templates_resources_is_granted_by_the_provisioning_role(
        emulator: ProvisioningEmulator) -> None:
    from test_least_privilege import decoded, grants, resolve, wildcard

    from iotpipe.config import load_config
    from iotpipe.render import render_template

    calls: list[tuple[str, str]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.service_model.signing_name == "iot" and model.name in RESOURCE_OF:
            calls.append((f"iot:{model.name}", RESOURCE_OF[model.name](params)))
        elif model.service_model.signing_name == "iot" and model.name != "CreateKeysAndCertificate":
            raise AssertionError(f"iot:{model.name} has no resource mapping here: map it, then check the role")

    token = ask(emulator, CREATE_TOPIC, {})[1]["certificateOwnershipToken"]
    emulator._clients.client("iot").meta.events.register("provide-client-params.iot.*", record)
    ask(emulator, PROVISION, {"certificateOwnershipToken": token, "parameters": {"SerialNumber": "SN-1"}})
    template = decoded(render_template(load_config(None, "local", {"fleet.provisioning_by_claim": True})))
    names = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012",
             "EnvironmentSuffix": "local"}
    statements = [s for p in template["Resources"]["FleetProvisioningRole"]["Properties"]["Policies"]
                  for s in resolve(p["PolicyDocument"]["Statement"], names)]
    granted = grants(statements)
    assert {action for action, _ in calls} == {f"iot:{name}" for name in RESOURCE_OF}
    ungranted = [call for call in calls if not any(
        wildcard(g.action, call[0], ignore_case=True) and wildcard(g.resource, call[1]) for g in granted)]
    assert ungranted == []
    # and it reaches no other policy than the device policy
    other = ("iot:AttachPolicy", f"{IOT_ARN}:policy/iotpipe-claim-local")
    assert not any(wildcard(g.action, other[0]) and wildcard(g.resource, other[1]) for g in granted)
