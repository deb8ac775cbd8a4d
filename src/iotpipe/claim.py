"""Provisioning by claim, the operator's side: claim certificates for a batch of devices, the allow-list of serials
the pre-provisioning hook checks (:mod:`iotpipe.provisioning_hook`), and the fleet's status.

Everything uses AWS IoT and DynamoDB calls moto implements, so it runs the same on AWS, on ``iotpipe local`` and
in moto-backed tests. The allow-list table holds ``serial#<serial>`` items (one per allowed device) and
``claim#<certificate id>`` items (one per claim certificate, with its ``expiresAt``): AWS IoT certificates carry
no expiry iotpipe can choose, so the hook refuses a claim past the ``expiresAt`` given at creation.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from iotpipe import devices, naming
from iotpipe.aws import aws_call, call_aws, stack_outputs
from iotpipe.config import PipelineConfig
from iotpipe.errors import AwsError, ConfigError, ParameterError

CLAIM_CERT = "claim.cert.pem"
CLAIM_KEY = "claim.private.key"
CLAIM_CA = "AmazonRootCA1.pem"
CLAIM_CONFIG = "claim.json"
SERIAL_PREFIX = "serial#"
CLAIM_PREFIX = "claim#"
BATCH = 25  # BatchWriteItem's limit


@dataclass(frozen=True)
class FleetNames:
    """What the stack's fleet outputs name: the provisioning template, allow-list table, claim policy, hook."""

    template: str
    table: str
    claim_policy: str
    hook: str


def fleet_names(cloudformation: Any, cfg: PipelineConfig) -> FleetNames:
    """The fleet outputs of ``cfg``'s stack; AwsError naming the fix when provisioning by claim is off there."""
    outputs = stack_outputs(cloudformation, cfg.resolved_stack_name)
    keys = (naming.OUT_FLEET_TEMPLATE, naming.OUT_FLEET_TABLE, naming.OUT_FLEET_CLAIM_POLICY, naming.OUT_FLEET_HOOK)
    if not all(outputs.get(key) for key in keys):
        raise AwsError(f"stack {cfg.resolved_stack_name} has no provisioning by claim; set provisioning_by_claim = "
                       f"true under [env.{cfg.env}.fleet] in iotpipe.toml and run iotpipe deploy --env {cfg.env}")
    return FleetNames(*(outputs[key] for key in keys))


@dataclass(frozen=True)
class ClaimBundle:
    """A claim certificate made for a batch of devices and the files written for them."""

    certificate_id: str
    certificate_arn: str
    expires_at: datetime
    template: str
    files: tuple[Path, ...]

    def as_dict(self) -> dict[str, Any]:
        """The bundle as JSON-friendly data."""
        return {"certificateId": self.certificate_id, "certificateArn": self.certificate_arn,
                "expiresAt": self.expires_at.isoformat(), "templateName": self.template,
                "files": [str(path) for path in self.files]}


def create_claim(iot: Any, dynamodb: Any, names: FleetNames, *, out_dir: str | Path, expires: timedelta,
                 broker_url: str | None = None, now: datetime | None = None) -> ClaimBundle:
    """A claim certificate with the claim policy, registered in the allow-list table until ``expires`` from now,
    and its files in ``out_dir``: certificate, private key (0600), the CA devices verify AWS IoT with (when this
    machine has Amazon Root CA 1) and ``claim.json`` (endpoint, template, file names). Existing files are refused
    before any call; a failed call or write removes what was made."""
    if expires <= timedelta(0):
        raise ParameterError("expires", str(expires), "must be a positive duration such as 30d")
    directory = Path(out_dir)
    if directory.exists() and not directory.is_dir():
        raise ParameterError("out_dir", str(out_dir), "is a file; give a directory")
    targets = [directory / name for name in (CLAIM_CERT, CLAIM_KEY, CLAIM_CA, CLAIM_CONFIG)]
    existing = [str(path) for path in targets if path.exists()]
    if existing:
        raise ConfigError(f"refusing to overwrite {', '.join(existing)}; move them away or use another -o DIR")
    if broker_url is None:
        endpoint, port, broker = devices.data_endpoint(iot), devices.MQTT_TLS_PORT, None
    else:
        endpoint, port = devices.plain_broker(broker_url)
        broker = {"url": broker_url, "tls": False}
    expires_at = (now or datetime.now(UTC)) + expires
    keys = call_aws("iot", "create-keys-and-certificate", iot.create_keys_and_certificate, setAsActive=True)
    cert_id, cert_arn = keys["certificateId"], keys["certificateArn"]
    written: list[Path] = []
    try:
        call_aws("iot", "attach-policy", iot.attach_policy, policyName=names.claim_policy, target=cert_arn)
        call_aws("dynamodb", "put-item", dynamodb.put_item, TableName=names.table, Item={
            "id": {"S": CLAIM_PREFIX + cert_id}, "expiresAt": {"N": str(int(expires_at.timestamp()))},
            "createdAt": {"N": str(int(time.time()))}})
        ca = amazon_root_ca()
        settings = {"templateName": names.template, "endpoint": endpoint, "port": port,
                    "certificateFile": CLAIM_CERT, "privateKeyFile": CLAIM_KEY,
                    **({"caFile": CLAIM_CA} if ca and broker is None else {}),
                    "claimCertificateId": cert_id, "expiresAt": expires_at.isoformat(),
                    **({"broker": broker} if broker else {})}
        directory.mkdir(parents=True, exist_ok=True)
        contents = [(targets[0], keys["certificatePem"], 0o644), (targets[1], keys["keyPair"]["PrivateKey"], 0o600),
                    *([(targets[2], ca, 0o644)] if ca and broker is None else []),
                    (targets[3], json.dumps(settings, indent=2, sort_keys=True) + "\n", 0o644)]
        for path, text, mode in contents:
            devices.write_exclusive(path, text, mode, folder_option="-o DIR")
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        _undo_claim(iot, dynamodb, names, cert_id, cert_arn)
        raise
    return ClaimBundle(cert_id, cert_arn, expires_at, names.template, tuple(written))


def _undo_claim(iot: Any, dynamodb: Any, names: FleetNames, cert_id: str, cert_arn: str) -> None:
    undo: list[Callable[[], Any]] = [
        lambda: dynamodb.delete_item(TableName=names.table, Key={"id": {"S": CLAIM_PREFIX + cert_id}}),
        lambda: iot.detach_policy(policyName=names.claim_policy, target=cert_arn),
        lambda: iot.update_certificate(certificateId=cert_id, newStatus="INACTIVE"),
        lambda: iot.delete_certificate(certificateId=cert_id),
    ]
    for action in undo:
        try:  # best effort: the original error is the one the user needs to see
            action()
        except Exception:
            continue


def amazon_root_ca() -> str | None:
    """Amazon Root CA 1 (what devices verify AWS IoT's ATS endpoint with) from certifi's bundle, if installed."""
    try:
        import certifi  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    text = Path(certifi.where()).read_text(encoding="utf-8")
    start = text.find('# Label: "Amazon Root CA 1"')
    if start < 0:
        return None
    begin = text.index("-----BEGIN CERTIFICATE-----", start)
    end = text.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
    return text[begin:end] + "\n"


def read_serials(path: str | Path) -> tuple[str, ...]:
    """Serials of a CSV: a ``serial`` column under a header, or one serial per line; each validated."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    column = 0
    if rows and "serial" in [cell.strip().lower() for cell in rows[0]]:
        column = [cell.strip().lower() for cell in rows[0]].index("serial")
        rows = rows[1:]
    return tuple(row[column].strip() for row in rows if len(row) > column)


def allow_serials(dynamodb: Any, table: str, serials: Iterable[str],
                  sleep: Callable[[float], None] = time.sleep) -> int:
    """Put each serial on the allow-list (idempotent); returns how many were given. Every serial is validated as
    a thing name before anything is written."""
    unique = list(dict.fromkeys(serials))
    if not unique:
        raise ConfigError("no serials given; pass SERIAL... or --from serials.csv")
    for serial in unique:
        devices.validate_thing_name(serial)
    added = str(int(time.time()))
    for start in range(0, len(unique), BATCH):
        requests = [{"PutRequest": {"Item": {"id": {"S": SERIAL_PREFIX + serial}, "addedAt": {"N": added}}}}
                    for serial in unique[start:start + BATCH]]
        pending: Mapping[str, Any] = {table: requests}
        for attempt in range(8):
            answer = call_aws("dynamodb", "batch-write-item", dynamodb.batch_write_item, RequestItems=pending)
            pending = answer.get("UnprocessedItems") or {}
            if not pending:
                break
            sleep(min(0.05 * 2 ** attempt, 2.0))
        if pending:
            raise AwsError(f"DynamoDB kept {len(pending[table])} serials unprocessed; run the same command again "
                           "(it is idempotent)")
    return len(unique)


@dataclass(frozen=True)
class ClaimCertificate:
    """A claim certificate registered in the allow-list table."""

    certificate_id: str
    expires_at: datetime

    def expired(self, now: datetime) -> bool:
        """Whether the hook refuses it at ``now``."""
        return self.expires_at <= now


@dataclass(frozen=True)
class FleetStatus:
    """Provisioning by claim as it stands: names, the allow-list size, claim certificates, provisioned devices."""

    names: FleetNames
    allowed_serials: int
    claims: tuple[ClaimCertificate, ...]
    provisioned: tuple[str, ...]
    now: datetime

    def as_dict(self) -> dict[str, Any]:
        """The status as JSON-friendly data."""
        return {"templateName": self.names.template, "hook": self.names.hook, "allowListTable": self.names.table,
                "claimPolicy": self.names.claim_policy, "allowedSerials": self.allowed_serials,
                "claimCertificates": [{"certificateId": c.certificate_id, "expiresAt": c.expires_at.isoformat(),
                                       "expired": c.expired(self.now)} for c in self.claims],
                "provisionedDevices": list(self.provisioned)}


def fleet_status(iot: Any, dynamodb: Any, names: FleetNames, now: datetime | None = None) -> FleetStatus:
    """Read the allow-list table (serial count, claim certificates) and the things provisioned by claim."""
    serials, claims = 0, []
    with aws_call("dynamodb", "scan"):
        for page in dynamodb.get_paginator("scan").paginate(TableName=names.table, ConsistentRead=True):
            for item in page.get("Items", []):
                key = item["id"]["S"]
                if key.startswith(SERIAL_PREFIX):
                    serials += 1
                elif key.startswith(CLAIM_PREFIX):
                    claims.append(ClaimCertificate(key[len(CLAIM_PREFIX):], datetime.fromtimestamp(
                        int(item.get("expiresAt", {}).get("N", "0")), UTC)))
    provisioned: list[str] = []
    with aws_call("iot", "list-things"):
        for page in iot.get_paginator("list_things").paginate(attributeName="provisionedBy", attributeValue="claim"):
            provisioned.extend(thing["thingName"] for thing in page.get("things", []))
    return FleetStatus(names, serials, tuple(sorted(claims, key=lambda c: c.expires_at)), tuple(sorted(provisioned)),
                       now or datetime.now(UTC))


def serials_from(arguments: Sequence[str], csv_path: str | None) -> tuple[str, ...]:
    """The serials of ``iotpipe fleet allow``: the arguments, or the CSV (not both)."""
    if bool(arguments) == bool(csv_path):
        raise ConfigError("give either SERIAL... or --from serials.csv")
    return tuple(arguments) if arguments else read_serials(str(csv_path))
