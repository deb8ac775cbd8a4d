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
    def __init__(self) -> None:
        self._session = boto3.session.Session(region_name="us-east-1")

    def client(self, service: str) -> Any:
        return self._session.client(service)


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
