"""AWS IoT fleet provisioning by claim on ``iotpipe local``: what moto lacks (it has no provisioning templates and
no MQTT API), emulated with the stack's own provisioning template and pre-provisioning hook code.

:class:`ProvisioningEmulator` answers the two MQTT APIs a claim device uses, as AWS IoT documents them:

- ``$aws/certificates/create/json`` (CreateKeysAndCertificate): a key pair and certificate made through moto's
  IoT API, answered on ``.../accepted`` with ``certificateId``, ``certificatePem``, ``privateKey`` and a
  ``certificateOwnershipToken``;
- ``$aws/provisioning-templates/<name>/provision/json`` (RegisterThing): the token checked, the hook run (the
  template's ``PreProvisioningHook`` code, :mod:`iotpipe.provisioning_hook`, against moto's allow-list table), the
  template's resources made (the thing named from ``SerialNumber``, the policy attached to the certificate, the
  certificate activated and attached to the thing), answered on ``.../accepted`` with ``thingName``; any
  refusal on ``.../rejected`` with ``statusCode``, ``errorCode`` and ``errorMessage`` (the hook's reason).

:class:`Responder` connects one MQTT client to the local broker and serves those topics. The broker is plain MQTT
with no client certificates, so the emulator cannot see which claim certificate a device connected with: it gives
the hook the newest unexpired claim certificate of the allow-list table (``iotpipe fleet claim create``), and the
hook still refuses when there is none. Replies go to every subscriber of the reply topic (AWS IoT sends them to
the requesting connection only). amqtt closes a client that publishes to a ``$`` topic: use mosquitto.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from iotpipe.errors import LocalError

CREATE_TOPIC = "$aws/certificates/create/json"
PROVISION_PREFIX = "$aws/provisioning-templates/"
TOKEN_SECONDS = 3600  # AWS IoT: the ownership token is valid for one hour
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetTemplate:
    """The stack's provisioning template as deployed: its name, body (a provisioning template), hook code and the
    allow-list table the hook reads."""

    name: str
    body: Mapping[str, Any]
    hook_code: str
    table: str


def template_from_stack(stack: Any) -> FleetTemplate | None:
    """The first ``AWS::IoT::ProvisioningTemplate`` of a :class:`~iotpipe.local.stack.DeployedStack`, or None."""
    found = stack.resources_of_type("AWS::IoT::ProvisioningTemplate")
    if not found:
        return None
    logical_id, resource = next(iter(found.items()))
    props = resource.get("Properties", {})
    hook_id = props["PreProvisioningHook"]["TargetArn"]["Fn::GetAtt"][0]
    hook = stack.template["Resources"][hook_id]["Properties"]
    table = stack.resolve(hook["Environment"]["Variables"]["ALLOW_TABLE"])
    try:
        body = json.loads(stack.resolve(props["TemplateBody"]))
    except (TypeError, ValueError) as exc:
        raise LocalError(f"stack {stack.name}: {logical_id}'s TemplateBody is not JSON ({exc})") from None
    return FleetTemplate(stack.resolve(props["TemplateName"]), body, hook["Code"]["ZipFile"], table)


class ProvisioningEmulator:
    """Answers fleet provisioning requests with moto's IoT and DynamoDB (``clients.client(service)``)."""

    def __init__(self, template: FleetTemplate, clients: Any, clock: Any = time.time) -> None:
        self.template = template
        self._clients = clients
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._hook = types.ModuleType("iotpipe_local_provisioning_hook")
        exec(compile(template.hook_code, "<pre-provisioning hook>", "exec"), self._hook.__dict__)
        self._hook.__dict__["DB"] = clients.client("dynamodb")

    @property
    def request_topics(self) -> tuple[str, str]:
        """The two topics a device publishes requests to."""
        return CREATE_TOPIC, f"{PROVISION_PREFIX}{self.template.name}/provision/json"

    def handle(self, topic: str, payload: bytes) -> tuple[str, bytes] | None:
        """The reply (topic, payload) to a request on ``topic``; None for a topic that is no request."""
        if topic == CREATE_TOPIC:
            return self._reply(topic, *self._create())
        if topic.startswith(PROVISION_PREFIX) and topic.endswith("/provision/json"):
            name = topic[len(PROVISION_PREFIX):-len("/provision/json")]
            return self._reply(topic, *self._provision(name, payload))
        return None

    @staticmethod
    def _reply(topic: str, accepted: bool, body: Mapping[str, Any]) -> tuple[str, bytes]:
        return f"{topic}/{'accepted' if accepted else 'rejected'}", json.dumps(body).encode("utf-8")

    def _create(self) -> tuple[bool, dict[str, Any]]:
        made = self._clients.client("iot").create_keys_and_certificate(setAsActive=False)
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            self._tokens[token] = (made["certificateId"], now + TOKEN_SECONDS)
        return True, {"certificateId": made["certificateId"], "certificatePem": made["certificatePem"],
                      "privateKey": made["keyPair"]["PrivateKey"], "certificateOwnershipToken": token}

    def _provision(self, name: str, payload: bytes) -> tuple[bool, dict[str, Any]]:
        if name != self.template.name:
            return False, _error(404, "ResourceNotFound", f"provisioning template {name} not found")
        try:
            request = json.loads(payload)
            token, parameters = request["certificateOwnershipToken"], dict(request.get("parameters") or {})
        except (ValueError, KeyError, TypeError):
            return False, _error(400, "InvalidPayload", "the payload must be JSON with certificateOwnershipToken "
                                                         "and parameters")
        with self._lock:
            certificate_id, expires = self._tokens.pop(token, ("", 0.0))
        if not certificate_id or expires <= self._clock():
            return False, _error(400, "InvalidCertificateOwnershipToken", "the certificate ownership token is "
                                                                          "unknown, used or expired")
        event = {"claimCertificateId": self._current_claim(), "certificateId": certificate_id,
                 "templateArn": f"arn:aws:iot:local:000000000000:provisioningtemplate/{name}",
                 "clientId": parameters.get("SerialNumber", ""), "parameters": parameters}
        allowed, reason = self._hook.decide(event, self.template.table)
        if not allowed:
            return False, _error(403, "AccessDenied", f"pre-provisioning hook refused: {reason}")
        thing = self._apply(certificate_id, parameters)
        return True, {"deviceConfiguration": {}, "thingName": thing}

    def _current_claim(self) -> str:
        # The broker has no client certificates: the newest claim certificate that has not expired stands in.
        items = self._clients.client("dynamodb").scan(
            TableName=self.template.table, ConsistentRead=True, FilterExpression="begins_with(id, :claim)",
            ExpressionAttributeValues={":claim": {"S": "claim#"}}).get("Items", [])
        valid = [(int(item.get("createdAt", {}).get("N", "0")), item["id"]["S"][len("claim#"):]) for item in items
                 if int(item.get("expiresAt", {}).get("N", "0")) > self._clock()]
        return max(valid)[1] if valid else ""

    def _apply(self, certificate_id: str, parameters: Mapping[str, str]) -> str:
        """The template's Thing, Certificate and Policy resources, as AWS IoT's RegisterThing makes them."""
        iot = self._clients.client("iot")
        resources = self.template.body.get("Resources", {})
        certificate_arn = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"][
            "certificateArn"]
        thing_name = ""
        for resource in resources.values():
            props = _resolve(resource.get("Properties", {}), parameters, certificate_id)
            kind = resource.get("Type")
            if kind == "AWS::IoT::Thing":
                thing_name = props["ThingName"]
                iot.create_thing(thingName=thing_name, attributePayload={
                    "attributes": {k: str(v) for k, v in props.get("AttributePayload", {}).items()}})
            elif kind == "AWS::IoT::Certificate":
                iot.update_certificate(certificateId=certificate_id, newStatus=props.get("Status", "ACTIVE"))
            elif kind == "AWS::IoT::Policy":
                iot.attach_policy(policyName=props["PolicyName"], target=certificate_arn)
        if thing_name:
            iot.attach_thing_principal(thingName=thing_name, principal=certificate_arn)
        return thing_name


def _resolve(value: Any, parameters: Mapping[str, str], certificate_id: str) -> Any:
    """A provisioning template value with ``Ref`` to its parameters resolved."""
    if isinstance(value, Mapping):
        if set(value) == {"Ref"}:
            name = value["Ref"]
            return certificate_id if name == "AWS::IoT::Certificate::Id" else parameters.get(name, "")
        return {key: _resolve(item, parameters, certificate_id) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, parameters, certificate_id) for item in value]
    return value


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    return {"statusCode": status, "errorCode": code, "errorMessage": message}


class Responder:
    """One MQTT client of the local broker subscribed to the emulator's request topics, publishing its replies."""

    def __init__(self, emulator: ProvisioningEmulator, host: str, port: int, username: str | None,
                 password: str | None, timeout_s: float = 10.0) -> None:
        import paho.mqtt.client as mqtt

        self.emulator = emulator
        self._client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"iotpipe-provisioning-{secrets.token_hex(4)}", clean_session=True)
        if username is not None:
            self._client.username_pw_set(username, password)
        ready = threading.Event()
        self._client.on_subscribe = lambda *_args: ready.set()
        self._client.on_connect = lambda client, *_args: client.subscribe(
            [(topic, 1) for topic in emulator.request_topics])
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=60)
        self._client.loop_start()
        if not ready.wait(timeout_s):
            self.stop()
            raise LocalError(f"the provisioning emulator could not subscribe on {host}:{port} within {timeout_s} s")

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        try:
            reply = self.emulator.handle(message.topic, message.payload)
        except Exception as exc:  # a request must be answered: AWS IoT rejects on an internal failure too
            _log.exception("provisioning request on %s failed", message.topic)
            reply = ProvisioningEmulator._reply(message.topic, False, _error(500, "InternalFailure", str(exc)))
        if reply is not None:
            self._client.publish(reply[0], reply[1], qos=1)

    def stop(self) -> None:
        """Disconnect and stop the client's thread."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
