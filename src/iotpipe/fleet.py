"""Fleets: many devices at a time (bulk registration from a CSV), certificate rotation and the fleet audit.

Built on :mod:`iotpipe.devices`; everything here uses only AWS IoT calls moto implements, so it runs the same on
AWS, on ``iotpipe local`` (whose device registry is the moto server) and in moto-backed tests.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from iotpipe import devices
from iotpipe.aws import call_aws
from iotpipe.errors import AwsError, ConfigError, IotpipeError, ParameterError

# AWS IoT's control-plane APIs are throttled per account and region (CreateThing, CreateKeysAndCertificate,
# AttachPolicy, AttachThingPrincipal: 10-15 transactions per second by default, see the AWS IoT Core quotas page).
# One registration makes one call of each, so starting at most this many registrations a second stays within all.
DEFAULT_REGISTRATIONS_PER_SECOND = 10.0
THROTTLING_CODES = frozenset({"ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"})
MAX_BACKOFF_SECONDS = 20.0
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(name: str, text: str) -> timedelta:
    """``24h``, ``30d``, ``90m``, ``2w``, ``0s`` -> a timedelta; ParameterError naming ``--name`` otherwise."""
    match = _DURATION.fullmatch((text or "").strip())
    if not match:
        raise ParameterError(name, text, "is not a duration; use e.g. 30m, 24h, 30d or 2w")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


# --- bulk registration ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceRow:
    """One line of a devices CSV: the device id and its thing attributes."""

    thing_name: str
    attributes: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class BulkOutcome:
    """What happened to one device of a bulk registration: ``registered``, ``skipped`` (done before) or
    ``failed`` (with the reason)."""

    thing_name: str
    status: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        """The outcome as JSON-friendly data."""
        return {"thingName": self.thing_name, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class BulkSummary:
    """The outcomes of :func:`register_many`, in CSV order."""

    outcomes: tuple[BulkOutcome, ...]
    seconds: float

    def count(self, status: str) -> int:
        """How many devices ended with ``status``."""
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-friendly data."""
        return {"registered": self.count("registered"), "skipped": self.count("skipped"),
                "failed": self.count("failed"), "seconds": round(self.seconds, 3),
                "devices": [outcome.as_dict() for outcome in self.outcomes]}


def read_devices_csv(path: str | Path) -> tuple[DeviceRow, ...]:
    """The devices of a CSV with a header: an ``id`` column and one column per thing attribute (an empty cell
    sets none). Every id is validated and duplicates refused before anything is registered (ConfigError)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "id" not in reader.fieldnames:
                raise ConfigError(f"{path}: the first line must be a header with an 'id' column "
                                  "(e.g. id,location,equipmentType)")
            rows = list(reader)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    result: list[DeviceRow] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        name = (row.get("id") or "").strip()
        try:
            devices.validate_thing_name(name)
        except ConfigError as exc:
            raise ConfigError(f"{path} line {line}: {exc}") from None
        if name in seen:
            raise ConfigError(f"{path} line {line}: device id {name} is already on line {seen[name]}")
        seen[name] = line
        attributes = tuple((key, value.strip()) for key, value in row.items()
                           if key and key != "id" and isinstance(value, str) and value.strip())
        result.append(DeviceRow(name, attributes))
    return tuple(result)


def with_backoff(action: Callable[[], Any], *, attempts: int = 6, base: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> Any:
    """``action()``, retried after ``base * 2**n`` seconds (at most :data:`MAX_BACKOFF_SECONDS`) while AWS
    answers with a throttling error, at most ``attempts`` times in all; the last error is raised."""
    for attempt in range(attempts):
        try:
            return action()
        except AwsError as exc:
            if exc.code not in THROTTLING_CODES or attempt == attempts - 1:
                raise
            sleep(min(base * 2 ** attempt, MAX_BACKOFF_SECONDS))
    raise AssertionError("unreachable: the loop returns or raises")


def register_many(
    iot: Any,
    rows: Sequence[DeviceRow],
    *,
    policy_name: str,
    out_dir: str | Path,
    environment: str,
    basic_ingest_rule: str | None = None,
    broker_url: str | None = None,
    per_second: float = DEFAULT_REGISTRATIONS_PER_SECOND,
    on_done: Callable[[BulkOutcome], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> BulkSummary:
    """Register each device as :func:`iotpipe.devices.register_device` does, starting at most ``per_second``
    registrations a second (0: no pacing) and backing off on throttling.

    Resumable: a device whose connection file and thing both exist is ``skipped``, so running the same CSV
    again after an interruption registers only the rest. A device that fails (its registration is rolled back)
    does not stop the others. Every file written is made 0600 (a fleet's files are copied around in bulk).
    ``broker_url``: a plain broker (``iotpipe local``'s) the connection files point at, as for one device.
    """
    started = clock()
    interval = 1.0 / per_second if per_second > 0 else 0.0
    next_start = started
    outcomes: list[BulkOutcome] = []
    for row in rows:
        files = devices.device_files(out_dir, row.thing_name)
        if files.connection.exists() and devices._thing_exists(iot, row.thing_name):
            outcome = BulkOutcome(row.thing_name, "skipped", "registered before")
        else:
            wait = next_start - clock()
            if wait > 0:
                sleep(wait)
            next_start = max(next_start + interval, clock())
            outcome = _register_one(iot, row, policy_name=policy_name, out_dir=out_dir, environment=environment,
                                    basic_ingest_rule=basic_ingest_rule, broker_url=broker_url, sleep=sleep)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return BulkSummary(tuple(outcomes), clock() - started)


def _register_one(iot: Any, row: DeviceRow, *, policy_name: str, out_dir: str | Path, environment: str,
                  basic_ingest_rule: str | None, broker_url: str | None,
                  sleep: Callable[[float], None]) -> BulkOutcome:
    try:
        device = with_backoff(lambda: devices.register_device(
            iot, thing_name=row.thing_name, policy_name=policy_name, out_dir=out_dir, environment=environment,
            attributes=dict(row.attributes), basic_ingest_rule=basic_ingest_rule, broker_url=broker_url),
            sleep=sleep)
    except IotpipeError as exc:
        return BulkOutcome(row.thing_name, "failed", str(exc))
    for path in device.files.all():
        os.chmod(path, 0o600)
    return BulkOutcome(row.thing_name, "registered", device.certificate_id)


# --- rotation ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RotationState:
    """A rotation in progress, kept in ``<thing>.rotation.json`` (0600) beside the device's files.

    ``phase``: ``created`` (new certificate made, its files written), ``attached`` (policy and thing attached
    beside the old one), ``done`` (old certificates deactivated and detached, new files in place).
    """

    thing_name: str
    old_certificate_ids: tuple[str, ...]
    new_certificate_id: str
    new_certificate_arn: str
    started_at: str
    grace_seconds: int
    phase: str

    def as_dict(self) -> dict[str, Any]:
        """The state as the file holds it."""
        return {"thingName": self.thing_name, "oldCertificateIds": list(self.old_certificate_ids),
                "newCertificateId": self.new_certificate_id, "newCertificateArn": self.new_certificate_arn,
                "startedAt": self.started_at, "graceSeconds": self.grace_seconds, "phase": self.phase}

    def grace_ends(self) -> datetime:
        """When the old certificates are deactivated without a confirmation."""
        return datetime.fromisoformat(self.started_at) + timedelta(seconds=self.grace_seconds)


@dataclass(frozen=True)
class RotationReport:
    """What one :func:`rotate_device` run did (one line per step) and where the rotation now stands."""

    thing_name: str
    steps: tuple[str, ...]
    state: RotationState

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly data."""
        return {"thingName": self.thing_name, "steps": list(self.steps), "state": self.state.as_dict()}


def rotation_files(out_dir: str | Path, thing_name: str) -> tuple[Path, Path, Path]:
    """The rotation's state file and the new certificate and key files (``<thing>.next.*``) under ``out_dir``."""
    base = Path(out_dir)
    return (base / f"{thing_name}.rotation.json", base / f"{thing_name}.next.cert.pem",
            base / f"{thing_name}.next.private.key")


def load_rotation(out_dir: str | Path, thing_name: str) -> RotationState | None:
    """The rotation state of ``thing_name`` under ``out_dir``, None when there is none."""
    path = rotation_files(out_dir, thing_name)[0]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RotationState(data["thingName"], tuple(data["oldCertificateIds"]), data["newCertificateId"],
                             data["newCertificateArn"], data["startedAt"], int(data["graceSeconds"]),
                             data["phase"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a rotation state iotpipe wrote ({exc}); move it away and run "
                          "iotpipe device audit to see the thing's certificates") from None


def rotate_device(
    iot: Any,
    thing_name: str,
    *,
    policy_name: str,
    out_dir: str | Path,
    environment: str,
    grace: timedelta,
    confirmed: bool = False,
    csr_pem: str | None = None,
    now: datetime | None = None,
) -> RotationReport:
    """Advance the rotation of ``thing_name``'s certificate as far as it can go now; run it again to resume.

    A new certificate (from ``csr_pem`` when the device made its own key, else a new key pair) is created,
    its files written as ``<thing>.next.cert.pem``/``.next.private.key``, the device policy and the thing
    attached to it beside the old one. The old certificates are deactivated and detached only once the
    device is known to use the new one (``confirmed``: AWS IoT reports no per-certificate connection, so the
    operator or the device's installer says so) or the grace period has ended; then the new files replace
    ``<thing>.cert.pem``/``.private.key`` and the connection file's ``certificateId``. Each step is
    recorded in the state file first, so an interrupted run resumes where it stopped and a finished one does
    nothing again.
    """
    devices.validate_thing_name(thing_name)
    devices.check_managed(iot, thing_name, environment)
    moment = now or datetime.now(UTC)
    state_path, next_cert, next_key = rotation_files(out_dir, thing_name)
    state = load_rotation(out_dir, thing_name)
    steps: list[str] = []
    if state is None:
        state = _start_rotation(iot, thing_name, out_dir=out_dir, grace=grace, csr_pem=csr_pem, now=moment)
        steps.append(f"created certificate {state.new_certificate_id} and wrote {next_cert}"
                     + ("" if csr_pem else f", {next_key}"))
    if state.phase == "created":
        call_aws("iot", "attach-policy", iot.attach_policy, policyName=policy_name, target=state.new_certificate_arn)
        steps.append(f"attached policy {policy_name} to certificate {state.new_certificate_id}")
        call_aws("iot", "attach-thing-principal", iot.attach_thing_principal, thingName=thing_name,
                 principal=state.new_certificate_arn)
        state = _save_state(state_path, replace(state, phase="attached"))
        steps.append(f"attached certificate {state.new_certificate_id} to {thing_name} beside "
                     f"{', '.join(state.old_certificate_ids) or 'no old certificate'}")
    if state.phase == "attached":
        if not confirmed and moment < state.grace_ends():
            steps.append(f"waiting: the old certificate stays active until {state.grace_ends().isoformat()} "
                         "(the grace period) or until you run this again with --confirm once the device "
                         "has connected with the new one")
            return RotationReport(thing_name, tuple(steps), state)
        steps.extend(_retire_old(iot, state))
        steps.extend(_install_new_files(out_dir, state, next_cert, next_key))
        state = _save_state(state_path, replace(state, phase="done"))
        steps.append(f"rotation of {thing_name} complete: it uses certificate {state.new_certificate_id}")
    elif state.phase == "done" and not steps:
        steps.append(f"nothing to do: {thing_name} was rotated to certificate {state.new_certificate_id}; "
                     f"move {state_path} away to rotate it again")
    return RotationReport(thing_name, tuple(steps), state)


def _start_rotation(iot: Any, thing_name: str, *, out_dir: str | Path, grace: timedelta, csr_pem: str | None,
                    now: datetime) -> RotationState:
    state_path, next_cert, next_key = rotation_files(out_dir, thing_name)
    leftovers = [str(path) for path in (next_cert, next_key) if path.exists()]
    if leftovers:
        raise ConfigError(f"refusing to overwrite {', '.join(leftovers)} (left by an earlier rotation without "
                          f"its state file {state_path}); move them away and run this again")
    old = tuple(devices._cert_id(p) for p in devices._principals(iot, thing_name) if ":cert/" in p)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if csr_pem is not None:
        made = call_aws("iot", "create-certificate-from-csr", iot.create_certificate_from_csr,
                        certificateSigningRequest=csr_pem, setAsActive=True)
        private_key = None
    else:
        made = call_aws("iot", "create-keys-and-certificate", iot.create_keys_and_certificate, setAsActive=True)
        private_key = made["keyPair"]["PrivateKey"]
    state = RotationState(thing_name, old, made["certificateId"], made["certificateArn"],
                          now.isoformat(), int(grace.total_seconds()), "created")
    try:
        devices.write_exclusive(next_cert, made["certificatePem"], 0o600)
        if private_key is not None:
            devices.write_exclusive(next_key, private_key, 0o600)
        _save_state(state_path, state)
    except BaseException:
        for path in (next_cert, next_key):
            path.unlink(missing_ok=True)
        devices._delete_certificate(iot, state.new_certificate_id)  # nothing refers to it yet
        raise
    return state


def _retire_old(iot: Any, state: RotationState) -> list[str]:
    steps = []
    attached = set(devices._principals(iot, state.thing_name))  # a resumed run may have detached some already
    for cert_id in state.old_certificate_ids:
        arn = _certificate_arn(iot, cert_id)
        if arn is None:
            steps.append(f"old certificate {cert_id} is gone already")
            continue
        call_aws("iot", "update-certificate", iot.update_certificate, certificateId=cert_id, newStatus="INACTIVE")
        steps.append(f"deactivated old certificate {cert_id}")
        if arn not in attached:
            continue
        call_aws("iot", "detach-thing-principal", iot.detach_thing_principal, thingName=state.thing_name,
                 principal=arn)
        steps.append(f"detached old certificate {cert_id} from {state.thing_name} (kept, inactive)")
    return steps


def _install_new_files(out_dir: str | Path, state: RotationState, next_cert: Path, next_key: Path) -> list[str]:
    files = devices.device_files(out_dir, state.thing_name)
    steps = []
    if next_cert.exists():
        os.replace(next_cert, files.certificate)
        steps.append(f"moved {next_cert} to {files.certificate}")
    if next_key.exists():
        os.replace(next_key, files.private_key)
        steps.append(f"moved {next_key} to {files.private_key}")
    if files.connection.exists():
        settings = json.loads(files.connection.read_text(encoding="utf-8"))
        if settings.get("certificateId") != state.new_certificate_id:
            settings["certificateId"] = state.new_certificate_id
            _write_replacing(files.connection, json.dumps(settings, indent=2, sort_keys=True) + "\n",
                             os.stat(files.connection).st_mode & 0o777)
            steps.append(f"updated certificateId in {files.connection}")
    return steps


def _certificate_arn(iot: Any, cert_id: str) -> str | None:
    try:
        found = call_aws("iot", "describe-certificate", iot.describe_certificate, certificateId=cert_id)
    except AwsError as exc:
        if exc.code == "ResourceNotFoundException":
            return None
        raise
    return str(found["certificateDescription"]["certificateArn"])


def _save_state(path: Path, state: RotationState) -> RotationState:
    _write_replacing(path, json.dumps(state.as_dict(), indent=2, sort_keys=True) + "\n", 0o600)
    return state


def _write_replacing(path: Path, text: str, mode: int) -> None:
    """Write ``path`` atomically (a temporary file renamed over it), with ``mode``."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    devices.write_exclusive(temporary, text, mode)
    os.replace(temporary, path)


# --- audit ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """One audit finding: its kind, the thing or certificate concerned, and what to do."""

    kind: str
    subject: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        """The finding as JSON-friendly data."""
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail}


@dataclass(frozen=True)
class CertificateInfo:
    """What the audit needs of one certificate."""

    certificate_id: str
    status: str
    not_after: datetime | None
    things: tuple[str, ...]


def certificate_info(iot: Any, principal: str) -> CertificateInfo:
    """The status, expiry and things of the certificate ``principal`` (an ARN)."""
    cert_id = devices._cert_id(principal)
    description = call_aws("iot", "describe-certificate", iot.describe_certificate,
                           certificateId=cert_id)["certificateDescription"]
    not_after = (description.get("validity") or {}).get("notAfter")
    things = call_aws("iot", "list-principal-things", iot.list_principal_things, principal=principal).get("things", [])
    return CertificateInfo(cert_id, str(description.get("status", "")), not_after, tuple(sorted(things)))


def audit_findings(
    things: Mapping[str, Sequence[CertificateInfo]],
    *,
    now: datetime,
    expiring_within: timedelta,
    last_seen: Mapping[str, datetime | None] | None = None,
    silent_for: timedelta | None = None,
) -> tuple[Finding, ...]:
    """The findings for ``things`` (thing -> its certificates): expiring, inactive or revoked and still
    attached, shared, no certificate, and (with ``last_seen``/``silent_for``) silent devices."""
    findings: list[Finding] = []
    reported_shared: set[str] = set()
    for thing, certificates in sorted(things.items()):
        if not certificates:
            findings.append(Finding("no-certificate", thing, "no certificate attached: the device cannot connect; "
                                    f"revoke it (iotpipe device revoke {thing}) or register it again"))
        for cert in certificates:
            if cert.status != "ACTIVE":
                findings.append(Finding("inactive-attached", thing, f"certificate {cert.certificate_id} is "
                                        f"{cert.status} but still attached; detach it or run iotpipe device "
                                        f"rotate {thing}"))
            elif cert.not_after is not None and cert.not_after <= now + expiring_within:
                findings.append(Finding("expiring", thing, f"certificate {cert.certificate_id} expires "
                                        f"{cert.not_after.isoformat()}; run iotpipe device rotate {thing}"))
            if len(cert.things) > 1 and cert.certificate_id not in reported_shared:
                reported_shared.add(cert.certificate_id)
                findings.append(Finding("shared", cert.certificate_id, f"certificate attached to "
                                        f"{len(cert.things)} things ({', '.join(cert.things)}): one device's "
                                        "leaked key is all of theirs; rotate each"))
    if last_seen is not None and silent_for is not None:
        for thing in sorted(things):
            seen = last_seen.get(thing)
            if seen is None or seen <= now - silent_for:
                when = f"last reading {seen.isoformat()}" if seen else "no reading stored"
                findings.append(Finding("silent", thing, f"{when}; check the device and its connection"))
    return tuple(findings)


def collect_certificates(iot: Any, thing_names: Iterable[str]) -> dict[str, list[CertificateInfo]]:
    """Each thing's certificates (:func:`certificate_info`), one describe per certificate."""
    cache: dict[str, CertificateInfo] = {}
    result: dict[str, list[CertificateInfo]] = {}
    for thing in thing_names:
        certs = []
        for principal in devices._principals(iot, thing):
            if ":cert/" not in principal:
                continue
            if principal not in cache:
                cache[principal] = certificate_info(iot, principal)
            certs.append(cache[principal])
        result[thing] = certs
    return result


def last_readings(dynamodb: Any, table: str, thing_names: Iterable[str]) -> dict[str, datetime | None]:
    """Each device's newest stored reading time (the readings table's sort key starts with the epoch ms)."""
    result: dict[str, datetime | None] = {}
    for thing in thing_names:
        items = call_aws("dynamodb", "query", dynamodb.query, TableName=table,
                         KeyConditionExpression="deviceId = :d", ExpressionAttributeValues={":d": {"S": thing}},
                         ScanIndexForward=False, Limit=1, ProjectionExpression="sk").get("Items", [])
        sort_key = items[0]["sk"]["S"] if items else ""
        result[thing] = (datetime.fromtimestamp(int(sort_key[:13]) / 1000, tz=UTC)
                         if sort_key[:13].isdigit() else None)
    return result


def expiring_devices(iot: Any, environment: str, within: timedelta, now: datetime) -> tuple[str, ...]:
    """The env's devices with an active certificate expiring within ``within`` (for ``--all-expiring-within``)."""
    names = [device.thing_name for device in devices.list_devices(iot, environment)]
    limit = now + within
    return tuple(thing for thing, certs in collect_certificates(iot, names).items()
                 if any(c.status == "ACTIVE" and c.not_after is not None and c.not_after <= limit for c in certs))
