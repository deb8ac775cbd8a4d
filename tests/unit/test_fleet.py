"""Bulk registration, certificate rotation and the fleet audit against moto's IoT (and botocore's Stubber)."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from iotpipe import devices, fleet
from iotpipe.errors import AwsError, ConfigError, ParameterError

POLICY = "SensorDevicePolicy-dev"


@pytest.fixture
def iot() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("iot", region_name="us-east-1")
        document = {"Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}
        client.create_policy(policyName=POLICY, policyDocument=json.dumps(document))
        yield client


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "devices.csv"
    path.write_text(text)
    return path


def test_parse_duration() -> None:
    assert fleet.parse_duration("grace", "24h") == timedelta(hours=24)
    assert fleet.parse_duration("grace", "30d") == timedelta(days=30)
    with pytest.raises(ParameterError, match="grace"):
        fleet.parse_duration("grace", "a day")


def test_read_devices_csv_validates_every_line_first(tmp_path: Path) -> None:
    rows = fleet.read_devices_csv(_csv(tmp_path, "id,location,equipmentType\npress-1,line-2,press\noven-2,,\n"))
    assert rows == (fleet.DeviceRow("press-1", (("location", "line-2"), ("equipmentType", "press"))),
                    fleet.DeviceRow("oven-2", ()))
    with pytest.raises(ConfigError, match="line 3: device id 'bad id'"):
        fleet.read_devices_csv(_csv(tmp_path, "id\nok-1\nbad id\n"))
    with pytest.raises(ConfigError, match="line 3: device id ok-1 is already on line 2"):
        fleet.read_devices_csv(_csv(tmp_path, "id\nok-1\nok-1\n"))
    with pytest.raises(ConfigError, match="'id' column"):
        fleet.read_devices_csv(_csv(tmp_path, "name\nok-1\n"))


def test_register_many_is_resumable_and_writes_0600(iot: Any, tmp_path: Path) -> None:
    rows = fleet.read_devices_csv(_csv(tmp_path, "id,location\nd-1,a\nd-2,b\nd-3,c\n"))
    out = tmp_path / "certs"
    iot.create_thing(thingName="d-3")  # someone else's thing with that name: that one fails, the others go on
    seen: list[str] = []
    first = fleet.register_many(iot, rows, policy_name=POLICY, out_dir=out, environment="dev", per_second=0,
                                on_done=lambda outcome: seen.append(outcome.status))
    assert seen == ["registered", "registered", "failed"]
    assert "already exists" in first.outcomes[2].detail
    assert iot.describe_thing(thingName="d-2")["attributes"]["location"] == "b"
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    iot.delete_thing(thingName="d-3")

    again = fleet.register_many(iot, rows, policy_name=POLICY, out_dir=out, environment="dev", per_second=0)
    assert [o.status for o in again.outcomes] == ["skipped", "skipped", "registered"]
    assert again.as_dict()["registered"] == 1
    assert len(iot.list_certificates()["certificates"]) == 3


def test_register_many_paces_registrations(iot: Any, tmp_path: Path) -> None:
    rows = tuple(fleet.DeviceRow(f"d-{n}", ()) for n in range(4))
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))
        now[0] += seconds

    fleet.register_many(iot, rows, policy_name=POLICY, out_dir=tmp_path, environment="dev", per_second=2,
                        sleep=sleep, clock=lambda: now[0])
    assert waits == [0.5, 0.5, 0.5]


def _stub_register(stubber: Stubber, *, throttle: bool) -> None:
    stubber.add_client_error("describe_thing", "ResourceNotFoundException", http_status_code=404)
    stubber.add_response("describe_endpoint", {"endpointAddress": "abc-ats.iot.us-east-1.amazonaws.com"})
    if throttle:
        stubber.add_client_error("create_thing", "ThrottlingException", "Rate exceeded", http_status_code=400)
        return
    stubber.add_response("create_thing", {"thingName": "d-1", "thingArn": "arn:aws:iot:us-east-1:1:thing/d-1"})
    stubber.add_response("create_keys_and_certificate", {
        "certificateArn": "arn:aws:iot:us-east-1:1:cert/" + "a" * 64, "certificateId": "a" * 64,
        "certificatePem": "-----BEGIN CERTIFICATE-----\n", "keyPair": {"PrivateKey": "-----BEGIN RSA PRIVATE KEY"}})
    stubber.add_response("attach_policy", {})
    stubber.add_response("attach_thing_principal", {})


def test_register_many_backs_off_on_throttling(tmp_path: Path) -> None:
    client = boto3.client("iot", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    waits: list[float] = []
    with Stubber(client) as stubber:
        _stub_register(stubber, throttle=True)
        _stub_register(stubber, throttle=True)
        _stub_register(stubber, throttle=False)
        summary = fleet.register_many(client, [fleet.DeviceRow("d-1", ())], policy_name=POLICY, out_dir=tmp_path,
                                      environment="dev", per_second=0, sleep=waits.append)
        stubber.assert_no_pending_responses()
    assert [o.status for o in summary.outcomes] == ["registered"]
    assert waits == [0.5, 1.0]


def test_with_backoff_gives_up_after_its_attempts() -> None:
    calls = []

    def throttled() -> None:
        calls.append(1)
        raise AwsError("rate exceeded", code="ThrottlingException")

    waits: list[float] = []
    with pytest.raises(AwsError, match="rate exceeded"):
        fleet.with_backoff(throttled, attempts=3, sleep=waits.append)
    assert len(calls) == 3 and waits == [0.5, 1.0]
    with pytest.raises(AwsError, match="denied"):
        fleet.with_backoff(lambda: (_ for _ in ()).throw(AwsError("denied", code="AccessDenied")), sleep=waits.append)
    assert len(waits) == 2  # no retry for an error that is not throttling


def _registered(iot: Any, out: Path, name: str = "press-07") -> devices.RegisteredDevice:
    return devices.register_device(iot, thing_name=name, policy_name=POLICY, out_dir=out, environment="dev")


def _rotate(iot: Any, out: Path, **kwargs: Any) -> fleet.RotationReport:
    return fleet.rotate_device(iot, "press-07", policy_name=POLICY, out_dir=out, environment="dev",
                               grace=kwargs.pop("grace", timedelta(hours=24)), **kwargs)


def _status(iot: Any, cert_id: str) -> str:
    return str(iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"])


def test_rotate_keeps_the_old_certificate_until_confirmed_then_is_idempotent(iot: Any, tmp_path: Path) -> None:
    old = _registered(iot, tmp_path)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    first = _rotate(iot, tmp_path, now=start)
    new_id = first.state.new_certificate_id
    assert first.state.phase == "attached" and first.state.old_certificate_ids == (old.certificate_id,)
    assert "waiting" in first.steps[-1]
    principals = iot.list_thing_principals(thingName="press-07")["principals"]
    assert sorted(devices._cert_id(p) for p in principals) == sorted([old.certificate_id, new_id])
    assert _status(iot, old.certificate_id) == "ACTIVE"
    assert [p["policyName"] for p in iot.list_attached_policies(target=first.state.new_certificate_arn)["policies"]] \
        == [POLICY]
    state_file, next_cert, next_key = fleet.rotation_files(tmp_path, "press-07")
    for path in (state_file, next_cert, next_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    waiting = _rotate(iot, tmp_path, now=start + timedelta(hours=1))  # a rerun creates nothing new
    assert waiting.state.new_certificate_id == new_id and len(waiting.steps) == 1
    assert len(iot.list_certificates()["certificates"]) == 2

    done = _rotate(iot, tmp_path, now=start + timedelta(hours=1), confirmed=True)
    assert done.state.phase == "done"
    assert _status(iot, old.certificate_id) == "INACTIVE"
    assert iot.list_thing_principals(thingName="press-07")["principals"] == [first.state.new_certificate_arn]
    assert old.files.certificate.read_text() == iot.describe_certificate(
        certificateId=new_id)["certificateDescription"]["certificatePem"]
    assert json.loads(old.files.connection.read_text())["certificateId"] == new_id
    assert not next_cert.exists() and not next_key.exists()

    again = _rotate(iot, tmp_path, confirmed=True)
    assert again.steps[0].startswith("nothing to do")
    assert len(iot.list_certificates()["certificates"]) == 2


def test_rotate_retires_the_old_certificate_when_the_grace_period_ends(iot: Any, tmp_path: Path) -> None:
    old = _registered(iot, tmp_path)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    _rotate(iot, tmp_path, now=start, grace=timedelta(hours=2))
    assert _rotate(iot, tmp_path, now=start + timedelta(hours=1, minutes=59)).state.phase == "attached"
    assert _rotate(iot, tmp_path, now=start + timedelta(hours=2)).state.phase == "done"
    assert _status(iot, old.certificate_id) == "INACTIVE"


def test_rotate_resumes_after_an_interruption_between_steps(iot: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _registered(iot, tmp_path)
    original = iot.attach_thing_principal
    monkeypatch.setattr(iot, "attach_thing_principal", lambda **_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _rotate(iot, tmp_path)
    state = fleet.load_rotation(tmp_path, "press-07")
    assert state is not None and state.phase == "created"
    monkeypatch.setattr(iot, "attach_thing_principal", original)
    resumed = _rotate(iot, tmp_path, confirmed=True)  # the grace period is the one the rotation began with
    assert resumed.state.phase == "done" and resumed.state.new_certificate_id == state.new_certificate_id
    assert len(iot.list_certificates()["certificates"]) == 2


def test_rotate_refuses_a_thing_of_another_environment(iot: Any, tmp_path: Path) -> None:
    iot.create_thing(thingName="press-07", attributePayload={"attributes": {"environment": "prod",
                                                                            "managedBy": "iotpipe"}})
    with pytest.raises(devices.RevokeRefused):
        _rotate(iot, tmp_path)
    assert iot.list_certificates()["certificates"] == []


def test_audit_reports_each_kind_of_finding(iot: Any, tmp_path: Path) -> None:
    ok = _registered(iot, tmp_path, "ok-1")
    inactive = _registered(iot, tmp_path, "old-2")
    iot.update_certificate(certificateId=inactive.certificate_id, newStatus="INACTIVE")
    shared = _registered(iot, tmp_path, "twin-a")
    iot.create_thing(thingName="twin-b")
    iot.attach_thing_principal(thingName="twin-b", principal=shared.certificate_arn)
    iot.create_thing(thingName="bare-3")
    now = datetime.now(UTC)
    certs = fleet.collect_certificates(iot, ["ok-1", "old-2", "twin-a", "twin-b", "bare-3"])
    findings = fleet.audit_findings(certs, now=now, expiring_within=timedelta(0))
    assert sorted((f.kind, f.subject) for f in findings) == [
        ("inactive-attached", "old-2"), ("no-certificate", "bare-3"), ("shared", shared.certificate_id)]
    # moto's certificates are valid for one day
    expiring = fleet.audit_findings(certs, now=now, expiring_within=timedelta(days=30))
    assert {f.subject for f in expiring if f.kind == "expiring"} == {"ok-1", "twin-a", "twin-b"}
    assert fleet.expiring_devices(iot, "dev", timedelta(days=30), now) == ("ok-1", "twin-a")
    assert fleet.expiring_devices(iot, "dev", timedelta(0), now) == ()
    silent = fleet.audit_findings({"ok-1": certs["ok-1"], "new-4": certs["ok-1"]}, now=now,
                                  expiring_within=timedelta(0), silent_for=timedelta(days=7),
                                  last_seen={"ok-1": now - timedelta(days=8), "new-4": now - timedelta(days=1)})
    assert [(f.kind, f.subject) for f in silent] == [("silent", "ok-1")]
    assert ok.thing_name == "ok-1"


def _csr() -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    request = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "press-07")])).sign(key, hashes.SHA256())
    return request.public_bytes(Encoding.PEM).decode()


def test_rotate_from_a_csr_writes_no_private_key(iot: Any, tmp_path: Path) -> None:
    old = _registered(iot, tmp_path)
    old_key = old.files.private_key.read_text()
    report = _rotate(iot, tmp_path, csr_pem=_csr(), confirmed=True)
    assert report.state.phase == "done"
    assert not fleet.rotation_files(tmp_path, "press-07")[2].exists()
    assert old.files.private_key.read_text() == old_key  # the device keeps its own key; only the certificate moves
    assert "BEGIN CERTIFICATE" in old.files.certificate.read_text()
    assert _status(iot, report.state.new_certificate_id) == "ACTIVE"


def test_rotate_resumes_when_interrupted_while_retiring(iot: Any, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    old = _registered(iot, tmp_path)
    _rotate(iot, tmp_path)
    original = fleet._install_new_files
    monkeypatch.setattr(fleet, "_install_new_files", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _rotate(iot, tmp_path, confirmed=True)  # the old certificate is retired, the files not yet moved
    assert _status(iot, old.certificate_id) == "INACTIVE"
    monkeypatch.setattr(fleet, "_install_new_files", original)
    resumed = _rotate(iot, tmp_path, confirmed=True)
    assert resumed.state.phase == "done"
    assert json.loads(old.files.connection.read_text())["certificateId"] == resumed.state.new_certificate_id


def test_register_many_for_iotpipe_local_points_every_file_at_its_broker(iot: Any, tmp_path: Path) -> None:
    rows = fleet.read_devices_csv(_csv(tmp_path, "id\nl-1\nl-2\n"))
    out = tmp_path / "certs"
    summary = fleet.register_many(iot, rows, policy_name=POLICY, out_dir=out, environment="local", per_second=0,
                                  broker_url="mqtt://127.0.0.1:18830")
    assert [o.status for o in summary.outcomes] == ["registered", "registered"]
    for name in ("l-1", "l-2"):
        settings = json.loads((out / f"{name}.json").read_text())
        assert (settings["endpoint"], settings["port"]) == ("127.0.0.1", 18830)
        assert settings["broker"] == {"url": "mqtt://127.0.0.1:18830", "tls": False}
