"""Device onboarding on AWS IoT: register (thing, keys, certificate, policy), list and revoke.

A device's thing name is also its MQTT client id (the device policy allows
``client/${iot:Connection.Thing.ThingName}``) and the middle of its topic ``sensor/<thing>/data``,
so it must be valid for both.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from iotpipe import contract
from iotpipe.aws import aws_call, call_aws, stack_outputs
from iotpipe.config import PipelineConfig
from iotpipe.errors import AwsError, ConfigError, IotpipeError, ParameterError

# AWS IoT thing names: [a-zA-Z0-9:_-]+ (CreateThing); the processor stores the same ids.
THING_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
# AWS IoT attribute name/value syntax (CreateThing AttributePayload).
ATTRIBUTE_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_.,@/:#-]{1,128}$")
ATTRIBUTE_VALUE_PATTERN = re.compile(r"^[a-zA-Z0-9_.,@/:#=\[\]-]{0,800}$")
MQTT_TLS_PORT = 8883
MANAGED_BY = "iotpipe"


@dataclass(frozen=True)
class DeviceFiles:
    """Where a registered device's credentials and connection settings are written."""

    certificate: Path
    private_key: Path
    connection: Path

    def all(self) -> tuple[Path, ...]:
        """The three paths, in write order."""
        return (self.certificate, self.private_key, self.connection)

    def as_dict(self) -> dict[str, str]:
        """The paths as JSON-friendly data."""
        return {"certificate": str(self.certificate), "privateKey": str(self.private_key),
                "connection": str(self.connection)}


@dataclass(frozen=True)
class RegisteredDevice:
    """The outcome of :func:`register_device`."""

    thing_name: str
    thing_arn: str
    certificate_id: str
    certificate_arn: str
    policy_name: str
    endpoint: str
    port: int
    topic: str
    files: DeviceFiles
    # A plain MQTT broker the device uses instead of AWS IoT's TLS endpoint (``iotpipe local``'s), as
    # ``{"url": "mqtt://127.0.0.1:<port>", "tls": False}``; broker credentials would be more keys of it.
    broker: tuple[tuple[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The registration as JSON-friendly data (``files`` in write order: certificate, key, connection)."""
        return {"thingName": self.thing_name, "thingArn": self.thing_arn, "certificateId": self.certificate_id,
                "certificateArn": self.certificate_arn, "policyName": self.policy_name, "endpoint": self.endpoint,
                "port": self.port, "topic": self.topic, "files": [str(path) for path in self.files.all()],
                **({"broker": dict(self.broker)} if self.broker else {})}


@dataclass(frozen=True)
class Device:
    """A thing as :func:`list_devices` reports it."""

    thing_name: str
    thing_arn: str
    attributes: tuple[tuple[str, str], ...]
    certificate_ids: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The thing as JSON-friendly data."""
        return {"thingName": self.thing_name, "thingArn": self.thing_arn, "attributes": dict(self.attributes),
                "certificateIds": list(self.certificate_ids)}


class RevokeRefused(IotpipeError):
    """The thing is not one iotpipe registered for this environment; revoking it is refused (exit 1)."""


@dataclass(frozen=True)
class PolicyTarget:
    """A certificate the device policy is attached to, and the things it is attached to."""

    certificate_arn: str
    things: tuple[str, ...]

    @property
    def certificate_id(self) -> str:
        """The certificate id (the last part of its ARN)."""
        return _cert_id(self.certificate_arn)

    def as_dict(self) -> dict[str, Any]:
        """The target as JSON-friendly data."""
        return {"certificateArn": self.certificate_arn, "certificateId": self.certificate_id,
                "things": list(self.things)}


@dataclass(frozen=True)
class ReleasedPolicy:
    """What :func:`release_policy` did so that the policy can be deleted."""

    revoked: tuple[RevokedDevice, ...]
    detached_certificates: tuple[str, ...]
    deleted_versions: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """What was released, as JSON-friendly data."""
        return {"revoked": [device.as_dict() for device in self.revoked],
                "detachedCertificates": list(self.detached_certificates),
                "deletedVersions": list(self.deleted_versions)}


@dataclass(frozen=True)
class RevokedDevice:
    """What :func:`revoke_device` removed."""

    thing_name: str
    deleted_certificates: tuple[str, ...]
    detached_only_certificates: tuple[str, ...]
    detached_policies: tuple[str, ...]
    removed_files: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """What was removed, as JSON-friendly data."""
        return {"thingName": self.thing_name, "deletedCertificates": list(self.deleted_certificates),
                "detachedOnlyCertificates": list(self.detached_only_certificates),
                "detachedPolicies": list(self.detached_policies), "removedFiles": list(self.removed_files)}


def validate_thing_name(name: str) -> str:
    """Return ``name`` if it can be a thing name, MQTT client id and topic level; else ConfigError."""
    if not THING_NAME_PATTERN.fullmatch(name or ""):
        raise ConfigError(
            f"device id {name!r} is not valid: use 1-128 letters, digits, ':', '_' or '-' (it becomes the thing "
            f"name, the MQTT client id and the topic level in {contract.device_topic('<id>')})"
        )
    return name


def topic_for(thing_name: str, basic_ingest_rule: str | None = None) -> str:
    """The topic a device publishes to: ``sensor/<thing>/data`` as the data contract defines it, or with
    ``basic_ingest_rule`` that rule's Basic Ingest topic ``$aws/rules/<rule>/sensor/<thing>/data``."""
    topic = contract.device_topic(thing_name)
    return f"{contract.BASIC_INGEST_PREFIX}{basic_ingest_rule}/{topic}" if basic_ingest_rule else topic


def basic_ingest_rule(cfg: PipelineConfig) -> str | None:
    """The rule devices of ``cfg``'s env publish to by Basic Ingest, or None when ``ingest.basic_ingest`` is off."""
    return contract.rule_name(cfg.env) if cfg.ingest.basic_ingest else None


def device_files(out_dir: str | Path, thing_name: str) -> DeviceFiles:
    """The file paths :func:`register_device` writes for ``thing_name`` under ``out_dir``."""
    base = Path(out_dir)
    return DeviceFiles(
        certificate=base / f"{thing_name}.cert.pem",
        private_key=base / f"{thing_name}.private.key",
        connection=base / f"{thing_name}.json",
    )


def thing_attributes(environment: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The attributes a registered thing gets: the caller's plus ``environment`` and ``managedBy``."""
    attributes = {
        **{k: v for k, v in extra.items() if v is not None},
        "environment": environment,
        "managedBy": MANAGED_BY,
    }
    for key, value in attributes.items():
        if not ATTRIBUTE_NAME_PATTERN.fullmatch(key):
            raise ConfigError(
                f"attribute name {key!r} is not valid for AWS IoT: use letters, digits and _.,@/:#-"
            )
        if not ATTRIBUTE_VALUE_PATTERN.fullmatch(value):
            raise ConfigError(
                f"attribute {key}={value!r} is not valid for AWS IoT: use letters, digits and "
                "_.,@/:#=[]- (no spaces)"
            )
    if len(attributes) > 50:
        raise ConfigError("too many attributes: AWS IoT allows at most 50 per thing")
    return attributes


def device_policy_name(cloudformation: Any, cfg: PipelineConfig) -> str:
    """The stack's device policy name (output SensorDevicePolicyName)."""
    outputs = stack_outputs(cloudformation, cfg.resolved_stack_name)
    name = outputs.get(contract.OUT_DEVICE_POLICY)
    if not name:
        raise AwsError(
            f"stack {cfg.resolved_stack_name} has no output SensorDevicePolicyName; redeploy it with "
            "this version of iotpipe: iotpipe deploy --env " + cfg.env
        )
    return name


def data_endpoint(iot: Any) -> str:
    """The account's ATS data endpoint (``describe-endpoint --endpoint-type iot:Data-ATS``)."""
    return str(call_aws("iot", "describe-endpoint", iot.describe_endpoint,
                        endpointType="iot:Data-ATS")["endpointAddress"])


def register_device(
    iot: Any,
    *,
    thing_name: str,
    policy_name: str,
    out_dir: str | Path,
    environment: str,
    attributes: Mapping[str, str] | None = None,
    basic_ingest_rule: str | None = None,
    broker_url: str | None = None,
) -> RegisteredDevice:
    """Create thing, keys and certificate, attach policy and thing, and write the device files.

    With ``basic_ingest_rule`` the connection file's topic is that rule's Basic Ingest topic. With
    ``broker_url`` (``mqtt://host:port``, a plain broker such as ``iotpipe local``'s) the connection file points
    the device there, without TLS, instead of at the account's AWS IoT endpoint.

    Nothing is left half-done: existing files are refused before any AWS call, and if an AWS call or a
    file write fails, what was created so far is removed again.
    """
    validate_thing_name(thing_name)
    attrs = thing_attributes(environment, attributes or {})
    files = device_files(out_dir, thing_name)
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ParameterError("out_dir", str(out_dir), "is a file; give a directory")
    existing = [str(path) for path in files.all() if path.exists()]
    if existing:
        raise ConfigError(
            f"refusing to overwrite {', '.join(existing)}; move them away or use another --out-dir"
        )
    if _thing_exists(iot, thing_name):
        raise ConfigError(
            f"thing {thing_name} already exists; revoke it first (iotpipe device revoke "
            f"{thing_name}) or choose another device id"
        )
    broker: tuple[tuple[str, Any], ...] = ()
    if broker_url is None:
        endpoint, port = data_endpoint(iot), MQTT_TLS_PORT
    else:
        endpoint, port = _plain_broker(broker_url)
        broker = (("url", broker_url), ("tls", False))
    undo: list[Callable[[], Any]] = []
    try:
        thing = call_aws("iot", "create-thing", iot.create_thing,
            thingName=thing_name,
            attributePayload={"attributes": attrs, "merge": False},
        )
        undo.append(lambda: call_aws("iot", "delete-thing", iot.delete_thing, thingName=thing_name))
        keys = call_aws("iot", "create-keys-and-certificate", iot.create_keys_and_certificate, setAsActive=True)
        cert_arn, cert_id = keys["certificateArn"], keys["certificateId"]
        undo.append(lambda: _delete_certificate(iot, cert_id))
        call_aws("iot", "attach-policy", iot.attach_policy, policyName=policy_name, target=cert_arn)
        undo.append(lambda: call_aws("iot", "detach-policy", iot.detach_policy, policyName=policy_name,
                                     target=cert_arn))
        call_aws("iot", "attach-thing-principal", iot.attach_thing_principal, thingName=thing_name, principal=cert_arn)
        undo.append(lambda: call_aws("iot", "detach-thing-principal", iot.detach_thing_principal,
                                     thingName=thing_name, principal=cert_arn))
        device = RegisteredDevice(
            thing_name=thing_name,
            thing_arn=thing["thingArn"],
            certificate_id=cert_id,
            certificate_arn=cert_arn,
            policy_name=policy_name,
            endpoint=endpoint,
            port=port,
            topic=topic_for(thing_name, basic_ingest_rule),
            files=files,
            broker=broker,
        )
        _write_files(device, keys["certificatePem"], keys["keyPair"]["PrivateKey"])
    except BaseException:
        for action in reversed(undo):
            # best effort: the original error is the one the user needs to see
            with contextlib.suppress(AwsError):
                action()
        raise
    return device


def connection_settings(device: RegisteredDevice) -> dict[str, Any]:
    """The connection file's content: what a device (or ``iotpipe simulate --cert-dir``) needs to connect."""
    return {
        "thingName": device.thing_name,
        "clientId": device.thing_name,
        "endpoint": device.endpoint,
        "port": device.port,
        "topic": device.topic,
        "certificateFile": device.files.certificate.name,
        "privateKeyFile": device.files.private_key.name,
        "certificateId": device.certificate_id,
        **({"broker": dict(device.broker)} if device.broker else {}),
    }


def plain_broker(url: str) -> tuple[str, int]:
    """Host and port of a plain ``mqtt://host:port`` broker URL (ParameterError ``broker_url`` otherwise)."""
    return _plain_broker(url)


def _plain_broker(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    try:
        port = parsed.port or 1883
    except ValueError:
        port = 0
    if parsed.scheme != "mqtt" or not parsed.hostname or not port:
        raise ParameterError("broker_url", url, "is not a plain MQTT broker URL; use mqtt://host:port")
    return parsed.hostname, port


def list_devices(iot: Any, environment: str | None = None) -> list[Device]:
    """Things (with their certificate ids), filtered to one environment attribute when given."""
    kwargs: dict[str, str] = {}
    if environment:
        kwargs = {"attributeName": "environment", "attributeValue": environment}
    devices = []
    with aws_call("iot", "list-things"):
        for page in iot.get_paginator("list_things").paginate(**kwargs, PaginationConfig={"MaxItems": 10000}):
            for thing in page.get("things", []):
                name = thing["thingName"]
                devices.append(
                    Device(
                        thing_name=name,
                        thing_arn=thing.get("thingArn", ""),
                        attributes=tuple(sorted(thing.get("attributes", {}).items())),
                        certificate_ids=tuple(_cert_id(p) for p in _principals(iot, name)),
                    )
                )
    return sorted(devices, key=lambda device: device.thing_name)


def check_managed(iot: Any, thing_name: str, environment: str) -> None:
    """RevokeRefused unless the thing is one iotpipe registered for ``environment`` (its attributes say so)."""
    try:
        attributes = call_aws("iot", "describe-thing", iot.describe_thing,
                              thingName=thing_name).get("attributes", {}) or {}
    except AwsError as exc:
        if exc.code == "ResourceNotFoundException":
            raise AwsError(f"thing {thing_name} does not exist; see the devices with: iotpipe device list "
                           f"--env {environment}", service="iot", operation="describe-thing", code=exc.code,
                           aws_message=exc.aws_message) from None
        raise
    if attributes.get("managedBy") != MANAGED_BY:
        raise RevokeRefused(f"thing {thing_name} was not registered by iotpipe (no managedBy=iotpipe attribute); "
                            "not revoking it. Delete it with the AWS console or CLI if it is really yours to delete")
    if attributes.get("environment") != environment:
        raise RevokeRefused(f"thing {thing_name} belongs to environment {attributes.get('environment')!r}, not "
                            f"{environment!r}; not revoking it. Use --env {attributes.get('environment')} if you mean "
                            "that environment's device")


def revoke_device(iot: Any, thing_name: str, environment: str | None = None,
                  out_dir: str | Path | None = None) -> RevokedDevice:
    """Detach policies and thing, deactivate and delete each certificate, then delete the thing.

    With ``environment``, only a thing iotpipe registered for that environment is revoked (RevokeRefused
    otherwise). A certificate still attached to another thing is only detached from this one, never deleted.
    With ``out_dir``, the device's files there (certificate, private key, connection file, as ``register``
    wrote them) are removed once the thing is gone: they are useless, and register refuses to overwrite them.
    """
    validate_thing_name(thing_name)
    if environment is not None:
        check_managed(iot, thing_name, environment)
    elif not _thing_exists(iot, thing_name):
        raise AwsError(f"thing {thing_name} does not exist; see the devices with: iotpipe device list")
    deleted, detached_only, policies = [], [], []
    for principal in _principals(iot, thing_name):
        call_aws("iot", "detach-thing-principal", iot.detach_thing_principal, thingName=thing_name, principal=principal)
        if ":cert/" not in principal:
            continue
        cert_id = _cert_id(principal)
        others = call_aws("iot", "list-principal-things", iot.list_principal_things, principal=principal).get(
            "things", []
        )
        if others:
            detached_only.append(cert_id)
            continue
        for policy in _attached_policies(iot, principal):
            call_aws("iot", "detach-policy", iot.detach_policy, policyName=policy, target=principal)
            policies.append(policy)
        _delete_certificate(iot, cert_id)
        deleted.append(cert_id)
    call_aws("iot", "delete-thing", iot.delete_thing, thingName=thing_name)
    removed = [] if out_dir is None else [path for path in device_files(out_dir, thing_name).all() if path.exists()]
    for path in removed:
        path.unlink()
    return RevokedDevice(
        thing_name=thing_name,
        deleted_certificates=tuple(deleted),
        detached_only_certificates=tuple(detached_only),
        detached_policies=tuple(policies),
        removed_files=tuple(str(path) for path in removed),
    )


def policy_targets(iot: Any, policy_name: str) -> tuple[PolicyTarget, ...]:
    """The certificates the policy is attached to, each with its things (ListTargetsForPolicy, paginated).

    DeletePolicy: "A policy cannot be deleted if it has non-default versions or it is attached to any
    certificate", so a stack whose device policy is attached ends DELETE_FAILED.
    """
    targets: list[PolicyTarget] = []
    try:
        with aws_call("iot", "list-targets-for-policy"):
            for page in iot.get_paginator("list_targets_for_policy").paginate(
                    policyName=policy_name, PaginationConfig={"MaxItems": 10000}):
                for target in page.get("targets", []):
                    things = iot.list_principal_things(principal=target).get("things", [])
                    targets.append(PolicyTarget(target, tuple(sorted(things))))
    except AwsError as exc:
        if exc.code == "ResourceNotFoundException":
            return ()
        raise
    return tuple(targets)


def release_policy(iot: Any, policy_name: str, environment: str) -> ReleasedPolicy:
    """Make the policy deletable: revoke this env's iotpipe devices on it, detach it from any other
    certificate (which is left as it is), and delete its non-default versions."""
    revoked: list[RevokedDevice] = []
    done: set[str] = set()
    for target in policy_targets(iot, policy_name):
        for thing in target.things:
            if thing in done:
                continue
            try:
                check_managed(iot, thing, environment)
            except RevokeRefused:
                continue
            revoked.append(revoke_device(iot, thing, environment))
            done.add(thing)
    detached = []
    for target in policy_targets(iot, policy_name):
        call_aws("iot", "detach-policy", iot.detach_policy, policyName=policy_name, target=target.certificate_arn)
        detached.append(target.certificate_id)
    return ReleasedPolicy(tuple(revoked), tuple(detached), delete_old_policy_versions(iot, policy_name))


def delete_old_policy_versions(iot: Any, policy_name: str) -> tuple[str, ...]:
    """Delete the policy's non-default versions (an update of its document, e.g. turning Basic Ingest on,
    leaves one), which DeletePolicy refuses; the ids deleted, none when the policy does not exist."""
    try:
        versions = call_aws("iot", "list-policy-versions", iot.list_policy_versions, policyName=policy_name)
    except AwsError as exc:
        if exc.code == "ResourceNotFoundException":
            return ()
        raise
    deleted = []
    for version in versions.get("policyVersions", []):
        if not version.get("isDefaultVersion"):
            call_aws("iot", "delete-policy-version", iot.delete_policy_version, policyName=policy_name,
                  policyVersionId=version["versionId"])
            deleted.append(str(version["versionId"]))
    return tuple(deleted)


def _write_files(device: RegisteredDevice, certificate_pem: str, private_key: str) -> None:
    """Write the three files exclusively (O_EXCL); on any failure remove the ones already written."""
    files = device.files
    try:
        files.certificate.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {files.certificate.parent}: {exc.strerror}") from None
    contents: Iterable[tuple[Path, str, int]] = (
        (files.certificate, certificate_pem, 0o644),
        (files.private_key, private_key, 0o600),
        (files.connection, json.dumps(connection_settings(device), indent=2, sort_keys=True) + "\n", 0o644),
    )
    written: list[Path] = []
    try:
        for path, text, mode in contents:
            write_exclusive(path, text, mode)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def write_exclusive(path: Path, text: str, mode: int, *, folder_option: str = "--out-dir") -> None:
    """Write ``text`` to a new file ``path`` with ``mode`` exactly (never over an existing file; a partial file is
    removed). ConfigError naming ``folder_option`` (the command's folder flag) as the way out."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigError(f"refusing to overwrite {path}; move it away or use another {folder_option}") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}; choose a writable {folder_option}") from None
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow the key's mode
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _thing_exists(iot: Any, thing_name: str) -> bool:
    try:
        call_aws("iot", "describe-thing", iot.describe_thing, thingName=thing_name)
    except AwsError as exc:
        if exc.code == "ResourceNotFoundException":
            return False
        raise
    return True


def _principals(iot: Any, thing_name: str) -> list[str]:
    principals: list[str] = []
    with aws_call("iot", "list-thing-principals"):
        for page in iot.get_paginator("list_thing_principals").paginate(
            thingName=thing_name, PaginationConfig={"MaxItems": 1000}
        ):
            principals.extend(page.get("principals", []))
    return principals


def _attached_policies(iot: Any, target: str) -> list[str]:
    names: list[str] = []
    with aws_call("iot", "list-attached-policies"):
        for page in iot.get_paginator("list_attached_policies").paginate(
            target=target, PaginationConfig={"MaxItems": 1000}
        ):
            names.extend(policy["policyName"] for policy in page.get("policies", []))
    return names


def _delete_certificate(iot: Any, cert_id: str) -> None:
    call_aws("iot", "update-certificate", iot.update_certificate, certificateId=cert_id, newStatus="INACTIVE")
    call_aws("iot", "delete-certificate", iot.delete_certificate, certificateId=cert_id)


def _cert_id(principal: str) -> str:
    return principal.rsplit("/", 1)[-1]


