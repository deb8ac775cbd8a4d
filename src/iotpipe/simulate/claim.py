"""A device's first connection with a claim certificate (AWS IoT fleet provisioning by claim), over MQTT as a
device does it: CreateKeysAndCertificate on ``$aws/certificates/create/json``, then RegisterThing with the
ownership token and ``SerialNumber`` on ``$aws/provisioning-templates/<name>/provision/json``; the new certificate
and key are written as ``iotpipe device register`` writes a device's, so the device then connects as its thing.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from iotpipe.devices import topic_for, validate_thing_name
from iotpipe.errors import ConfigError, IotpipeError, ParameterError
from iotpipe.simulate.certificates import DeviceCredentials
from iotpipe.simulate.mqtt import _connect_client

CREATE = "$aws/certificates/create/json"


class ProvisioningRefused(IotpipeError):
    """AWS IoT (or the local emulator) rejected a provisioning request: the rejection's message, exit 1."""


@dataclass(frozen=True)
class ClaimSettings:
    """What ``iotpipe fleet claim create`` wrote in ``claim.json``, with its files' paths."""

    directory: Path
    template: str
    credentials: DeviceCredentials

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly data (the claim's files by path; no secret)."""
        return {"directory": str(self.directory), "template": self.template,
                "credentials": self.credentials.as_dict()}


def load_claim(claim_dir: str | Path) -> ClaimSettings:
    """The claim certificate and settings in ``claim_dir`` (written by ``iotpipe fleet claim create``)."""
    base = Path(claim_dir)
    path = base / "claim.json"
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
        broker = settings.get("broker") or {}
        credentials = DeviceCredentials(
            device_id="claim", endpoint=str(settings["endpoint"]), port=int(settings["port"]),
            certificate=base / settings["certificateFile"], private_key=base / settings["privateKeyFile"],
            ca_file=base / settings["caFile"] if settings.get("caFile") else None,
            tls=bool(broker.get("tls", True)))
        template = str(settings["templateName"])
    except FileNotFoundError:
        raise ParameterError("provision_by_claim", str(base), "has no claim.json; write one with iotpipe fleet "
                                                              "claim create -o " + str(base)) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a claim file ({exc}); it is written by iotpipe fleet claim create") from None
    return ClaimSettings(base, template, credentials)


@dataclass(frozen=True)
class Provisioned:
    """A device provisioned by claim: its thing and the folder of its own certificate, key and connection file."""

    thing_name: str
    certificate_id: str
    cert_dir: Path

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly data."""
        return {"thingName": self.thing_name, "certificateId": self.certificate_id, "certDir": str(self.cert_dir)}


def provision_by_claim(claim: ClaimSettings, serial: str, *, username: str | None = None,
                       password: str | None = None, timeout_s: float = 10.0,
                       basic_ingest_rule: str | None = None) -> Provisioned:
    """Provision ``serial`` with the claim certificate; its files go to ``<claim dir>/devices/<serial>/``.
    ProvisioningRefused with the rejection's message (the hook's refusal) when AWS IoT says no."""
    validate_thing_name(serial)
    out = claim.directory / "devices" / serial
    if (out / f"{serial}.json").exists():
        raise ConfigError(f"{out} already holds {serial}'s certificate; it is provisioned (simulate --cert-dir {out})")
    login = replace(claim.credentials, device_id=serial, username=username, password=password)
    client = _connect_client(serial, login, timeout_s)
    replies: queue.Queue[tuple[str, bytes]] = queue.Queue()
    subscribed = threading.Event()
    provision = f"$aws/provisioning-templates/{claim.template}/provision/json"
    client.on_message = lambda _c, _u, message: replies.put((message.topic, message.payload))
    client.on_subscribe = lambda *_args: subscribed.set()
    try:
        client.subscribe([(f"{topic}/{answer}", 1) for topic in (CREATE, provision)
                          for answer in ("accepted", "rejected")])
        if not subscribed.wait(timeout_s):
            raise ProvisioningRefused(f"no SUBACK within {timeout_s} s; check the claim policy allows subscribing "
                                      "to the provisioning topics")
        created = _request(client, replies, CREATE, {}, timeout_s)
        registered = _request(client, replies, provision, {
            "certificateOwnershipToken": created["certificateOwnershipToken"],
            "parameters": {"SerialNumber": serial}}, timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    thing = str(registered.get("thingName") or serial)
    _write_device(out, thing, created, claim.credentials, basic_ingest_rule)
    return Provisioned(thing, str(created["certificateId"]), out)


def _request(client: Any, replies: queue.Queue[tuple[str, bytes]], topic: str, body: dict[str, Any],
             timeout_s: float) -> dict[str, Any]:
    client.publish(topic, json.dumps(body), qos=1)
    try:
        reply_topic, payload = replies.get(timeout=timeout_s)
    except queue.Empty:
        raise ProvisioningRefused(f"no answer on {topic}/accepted or /rejected within {timeout_s} s; is provisioning "
                                  "by claim deployed (fleet.provisioning_by_claim)?") from None
    answer = json.loads(payload)
    if reply_topic.endswith("/rejected"):
        raise ProvisioningRefused(f"{topic} rejected ({answer.get('statusCode')} {answer.get('errorCode')}): "
                                  f"{answer.get('errorMessage')}")
    return dict(answer)


def _write_device(out: Path, thing: str, created: dict[str, Any], claim: DeviceCredentials,
                  basic_ingest_rule: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    settings = {"thingName": thing, "clientId": thing, "endpoint": claim.endpoint, "port": claim.port,
                "topic": topic_for(thing, basic_ingest_rule), "certificateFile": f"{thing}.cert.pem",
                "privateKeyFile": f"{thing}.private.key", "certificateId": created["certificateId"],
                **({"caFile": os.path.relpath(claim.ca_file, out)} if claim.ca_file else {}),
                **({} if claim.tls else {"broker": {"url": f"mqtt://{claim.endpoint}:{claim.port}", "tls": False}})}
    for name, text, mode in ((f"{thing}.cert.pem", created["certificatePem"], 0o644),
                             (f"{thing}.private.key", created["privateKey"], 0o600),
                             (f"{thing}.json", json.dumps(settings, indent=2, sort_keys=True) + "\n", 0o644)):
        fd = os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
