"""Device register/list/revoke against moto's IoT."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from iotpipe import devices
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


def _register(iot: Any, out_dir: Path, name: str = "press-07", **kwargs: Any) -> devices.RegisteredDevice:
    return devices.register_device(iot, thing_name=name, policy_name=kwargs.pop("policy", POLICY),
                                   out_dir=out_dir, environment="dev", **kwargs)


def test_register_creates_thing_certificate_and_files(iot: Any, tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = _register(iot, out, attributes={"location": "line-2", "equipmentType": "press"})

    thing = iot.describe_thing(thingName="press-07")
    assert thing["attributes"] == {"location": "line-2", "equipmentType": "press", "environment": "dev",
                                   "managedBy": "iotpipe"}
    assert iot.list_thing_principals(thingName="press-07")["principals"] == [result.certificate_arn]
    policies = iot.list_attached_policies(target=result.certificate_arn)["policies"]
    assert [p["policyName"] for p in policies] == [POLICY]
    cert = iot.describe_certificate(certificateId=result.certificate_id)["certificateDescription"]
    assert cert["status"] == "ACTIVE"

    assert result.files.certificate.read_text() == cert["certificatePem"]
    assert "PRIVATE KEY" in result.files.private_key.read_text()
    assert stat.S_IMODE(result.files.private_key.stat().st_mode) == 0o600
    connection = json.loads(result.files.connection.read_text())
    # moto makes a new random prefix per call; the ATS form is "<prefix>-ats.iot.<region>.amazonaws.com"
    assert re.fullmatch(r"[a-z0-9]+-ats\.iot\.us-east-1\.amazonaws\.com", result.endpoint)
    assert connection == {
        "thingName": "press-07", "clientId": "press-07", "endpoint": result.endpoint, "port": 8883,
        "topic": "sensor/press-07/data", "certificateFile": "press-07.cert.pem",
        "privateKeyFile": "press-07.private.key", "certificateId": result.certificate_id,
    }


def test_register_with_basic_ingest_writes_the_rules_topic(iot: Any, tmp_path: Path) -> None:
    result = _register(iot, tmp_path, basic_ingest_rule="SensorDataRule_dev")
    assert result.topic == "$aws/rules/SensorDataRule_dev/sensor/press-07/data"
    assert json.loads(result.files.connection.read_text())["topic"] == result.topic


def test_basic_ingest_rule_follows_the_config() -> None:
    from iotpipe.config import build_config

    assert devices.basic_ingest_rule(build_config({}, "prod", {})) is None
    assert devices.basic_ingest_rule(build_config({}, "prod", {"ingest.basic_ingest": True})) == "SensorDataRule_prod"


@pytest.mark.parametrize(
    "name", ["", "has space", "slash/name", "plus+", "hash#", "dollar$", "x" * 129, "ü", "press-07\n"])
def test_register_rejects_names_invalid_for_policy_and_topic(iot: Any, tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="is not valid"):
        _register(iot, tmp_path, name)
    assert iot.list_things()["things"] == []
    assert list(tmp_path.iterdir()) == []


def test_register_accepts_longest_valid_name(iot: Any, tmp_path: Path) -> None:
    name = "A_b-9" * 25 + "xyz"  # 128 characters
    assert _register(iot, tmp_path, name).topic == f"sensor/{name}/data"


def test_register_refuses_to_overwrite_and_changes_nothing(iot: Any, tmp_path: Path) -> None:
    key = tmp_path / "press-07.private.key"
    key.write_text("old key")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        _register(iot, tmp_path)
    assert key.read_text() == "old key"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["press-07.private.key"]
    assert iot.list_things()["things"] == []
    assert iot.list_certificates()["certificates"] == []


def test_register_refuses_existing_thing(iot: Any, tmp_path: Path) -> None:
    iot.create_thing(thingName="press-07")
    with pytest.raises(ConfigError, match="already exists"):
        _register(iot, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_register_rolls_back_when_policy_is_missing(iot: Any, tmp_path: Path) -> None:
    with pytest.raises(AwsError, match="attach-policy failed"):
        _register(iot, tmp_path, policy="NoSuchPolicy")
    assert iot.list_things()["things"] == []
    assert iot.list_certificates()["certificates"] == []
    assert list(tmp_path.iterdir()) == []


def test_register_rolls_back_aws_and_files_when_a_write_fails(iot: Any, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    original = devices.write_exclusive

    def failing(path: Path, text: str, mode: int) -> None:
        if path.suffix == ".json":
            raise OSError(28, "No space left on device")
        original(path, text, mode)

    monkeypatch.setattr(devices, "write_exclusive", failing)
    with pytest.raises(OSError, match="No space"):
        _register(iot, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert iot.list_things()["things"] == []
    assert iot.list_certificates()["certificates"] == []


def test_register_rejects_bad_attributes(iot: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="location"):
        _register(iot, tmp_path, attributes={"location": "hall 2"})
    assert iot.list_things()["things"] == []


def test_list_filters_by_environment(iot: Any, tmp_path: Path) -> None:
    result = _register(iot, tmp_path)
    iot.create_thing(thingName="not-ours")
    iot.create_thing(thingName="prod-one", attributePayload={"attributes": {"environment": "prod"}})

    listed = devices.list_devices(iot, "dev")
    assert [d.thing_name for d in listed] == ["press-07"]
    assert listed[0].certificate_ids == (result.certificate_id,)
    assert [d.thing_name for d in devices.list_devices(iot)] == ["not-ours", "press-07", "prod-one"]


def test_revoke_deletes_certificate_and_thing(iot: Any, tmp_path: Path) -> None:
    result = _register(iot, tmp_path)
    revoked = devices.revoke_device(iot, "press-07")
    assert revoked.deleted_certificates == (result.certificate_id,)
    assert revoked.detached_policies == (POLICY,)
    assert iot.list_things()["things"] == []
    assert iot.list_certificates()["certificates"] == []


def test_revoke_keeps_a_certificate_shared_with_another_thing(iot: Any, tmp_path: Path) -> None:
    result = _register(iot, tmp_path)
    iot.create_thing(thingName="twin")
    iot.attach_thing_principal(thingName="twin", principal=result.certificate_arn)

    revoked = devices.revoke_device(iot, "press-07")
    assert revoked.deleted_certificates == ()
    assert revoked.detached_only_certificates == (result.certificate_id,)
    assert [c["certificateId"] for c in iot.list_certificates()["certificates"]] == [result.certificate_id]
    assert [t["thingName"] for t in iot.list_things()["things"]] == ["twin"]


def test_revoke_unknown_device_is_an_error(iot: Any) -> None:
    with pytest.raises(AwsError, match="does not exist"):
        devices.revoke_device(iot, "ghost")


def test_revoke_with_an_environment_refuses_other_envs_and_unmanaged_things(iot: Any, tmp_path: Path) -> None:
    """Issue 12: `device revoke line9-prod --env dev --yes` deleted a prod thing, and an unmanaged one too."""
    iot.create_thing(thingName="line9-prod", attributePayload={"attributes": {
        "environment": "prod", "managedBy": "iotpipe"}})
    iot.create_thing(thingName="hvac-1")
    with pytest.raises(devices.RevokeRefused, match="belongs to environment 'prod'"):
        devices.revoke_device(iot, "line9-prod", "dev")
    with pytest.raises(devices.RevokeRefused, match="not registered by iotpipe"):
        devices.revoke_device(iot, "hvac-1", "dev")
    with pytest.raises(AwsError, match="does not exist"):
        devices.revoke_device(iot, "ghost", "dev")
    _register(iot, tmp_path)
    assert devices.revoke_device(iot, "press-07", "dev").thing_name == "press-07"
    assert sorted(t["thingName"] for t in iot.list_things()["things"]) == ["hvac-1", "line9-prod"]


def test_a_colon_is_a_valid_device_id() -> None:
    assert devices.validate_thing_name("line:7") == "line:7"
    with pytest.raises(ConfigError):
        devices.validate_thing_name("line 7")


def test_release_policy_revokes_ours_and_only_detaches_others(iot: Any, tmp_path: Path) -> None:
    """DeletePolicy: "A policy cannot be deleted if it has non-default versions or it is attached to any
    certificate"; release_policy leaves it deletable without touching what is not this env's."""
    ours = _register(iot, tmp_path)
    iot.create_thing(thingName="hvac-1")
    foreign = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_policy(policyName=POLICY, target=foreign["certificateArn"])
    iot.attach_thing_principal(thingName="hvac-1", principal=foreign["certificateArn"])
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Publish", "Resource": "*"}]}
    iot.create_policy_version(policyName=POLICY, policyDocument=json.dumps(document), setAsDefault=False)

    targets = devices.policy_targets(iot, POLICY)
    assert sorted(t.things for t in targets) == [("hvac-1",), ("press-07",)]
    released = devices.release_policy(iot, POLICY, "dev")
    assert [r.thing_name for r in released.revoked] == ["press-07"]
    assert released.detached_certificates == (foreign["certificateId"],)
    assert released.deleted_versions == ("2",)
    assert devices.policy_targets(iot, POLICY) == ()
    iot.delete_policy(policyName=POLICY)  # what CloudFormation does on stack delete, now possible
    assert [t["thingName"] for t in iot.list_things()["things"]] == ["hvac-1"]
    assert ours.certificate_id not in [c["certificateId"] for c in iot.list_certificates()["certificates"]]


def test_revoke_removes_the_device_files_so_the_id_can_be_registered_again(iot: Any, tmp_path: Path) -> None:
    first = _register(iot, tmp_path)
    revoked = devices.revoke_device(iot, "press-07", "dev", out_dir=tmp_path)
    assert sorted(revoked.removed_files) == sorted(str(path) for path in first.files.all())
    assert revoked.as_dict()["removedFiles"] == list(revoked.removed_files)
    assert not any(path.exists() for path in first.files.all())
    # Was: register refused ("refusing to overwrite ...") until the user found and moved the old files.
    again = _register(iot, tmp_path)
    assert all(path.exists() for path in again.files.all())


def test_revoke_leaves_other_devices_files_alone(iot: Any, tmp_path: Path) -> None:
    other = _register(iot, tmp_path, "press-08")
    _register(iot, tmp_path)
    devices.revoke_device(iot, "press-07", "dev", out_dir=tmp_path)
    assert all(path.exists() for path in other.files.all())


def test_register_for_a_plain_broker_writes_its_address_and_no_tls(iot: Any, tmp_path: Path) -> None:
    result = _register(iot, tmp_path, broker_url="mqtt://127.0.0.1:18830")
    settings = json.loads(result.files.connection.read_text())
    assert (settings["endpoint"], settings["port"]) == ("127.0.0.1", 18830)
    assert settings["broker"] == {"url": "mqtt://127.0.0.1:18830", "tls": False}
    with pytest.raises(ParameterError, match="broker_url"):
        _register(iot, tmp_path / "x", "press-09", broker_url="tcp://127.0.0.1")
