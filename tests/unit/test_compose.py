"""Seed parity: every seed logical id, type, output and export survives; every changed property is listed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode_str

from iotpipe.composition import compose
from iotpipe.config import build_config
from iotpipe.render import render_template

# Our starting design, committed so a clone without ../shared still runs these tests.
SEED = Path(__file__).resolve().parents[1] / "data" / "seed_TapStack.yml"

# (logical id, property or attribute) -> why ours differs from the seed's. Anything else must be equal.
STRENGTHENINGS: dict[tuple[str, str], str] = {
    ("RawDataBucket", "BucketName"): "globally unique: account id and region added, or deploys collide",
    ("RawDataBucket", "BucketEncryption"): "aws:kms with a bucket key instead of AES256",
    ("RawDataBucket", "LifecycleConfiguration"): "same rule and transitions plus noncurrent-version expiry",
    ("SensorDataTable", "TableName"): "key schema changed; a custom-named table cannot be replaced in place",
    ("SensorDataTable", "AttributeDefinitions"): "sk and the sparse anomaly index keys",
    ("SensorDataTable", "KeySchema"): "deviceId + sk: two sensors in one ms no longer overwrite each other",
    ("SensorDataTable", "SSESpecification"): "KMS key instead of the AWS-owned key",
    ("SensorDataTable", "UpdateReplacePolicy"): "Retain: replacing the seed's table keeps its data",
    ("DataProcessorRole", "ManagedPolicyArns"): "replaced by a logs statement scoped to the processor's log group",
    ("DataProcessorRole", "Policies"): "only the calls the processor and its event source mapping make",
    ("DataProcessorFunction", "Runtime"): "nodejs20.x is deprecated; python3.13 by default",
    ("DataProcessorFunction", "Environment"): "thresholds per sensor type as one JSON map from config",
    ("DataProcessorFunction", "Code"): "the lossless batched processor replaces the per-record seed code",
    ("KinesisEventSourceMapping", "StartingPosition"): "TRIM_HORIZON: readings sent before enabling are kept "
                                                       "(processor.starting_position LATEST for a migrated stack)",
    ("DataProcessorRole", "RoleName"): "region added: IAM role names are unique per account, not per region",
    ("IoTRuleRole", "RoleName"): "region added: IAM role names are unique per account, not per region",
    ("IoTRuleRole", "Policies"): "PutRecord only (the action never batches) plus the error action's PutObject",
    ("SensorDataRule", "TopicRulePayload"): "keeps the device timestamp, partition key from the topic, error action",
    ("SensorDevicePolicy", "PolicyDocument"): "each device only its own client id and topics; partition-aware",
    ("KinesisIteratorAgeAlarm", "Namespace"): "AWS/Kinesis has no IteratorAge metric; AWS/Lambda does",
    ("KinesisIteratorAgeAlarm", "Dimensions"): "the Lambda metric's dimension is the function name",
}


def iam_normal(value: Any) -> Any:
    """IAM treats a one-element list and its element alike (``"Action": "x"`` == ``"Action": ["x"]``)."""
    if isinstance(value, list):
        items = [iam_normal(item) for item in value]
        return items[0] if len(items) == 1 else items
    if isinstance(value, dict):
        return {key: iam_normal(item) for key, item in value.items()}
    return value


def same(name: str, theirs: Any, ours: Any) -> bool:
    return iam_normal(theirs) == iam_normal(ours) if name.endswith("PolicyDocument") else theirs == ours


def decoded(text: str) -> dict[str, Any]:
    template, errors = decode_str(text)
    assert not errors, errors
    return json.loads(json.dumps(template))


@pytest.fixture(scope="module")
def seed() -> dict[str, Any]:
    return decoded(SEED.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ours() -> dict[str, Any]:
    return decoded(render_template(build_config({}, "dev", {})))


def test_every_seed_resource_keeps_its_logical_id_and_type(seed: dict[str, Any], ours: dict[str, Any]) -> None:
    for logical_id, resource in seed["Resources"].items():
        assert logical_id in ours["Resources"], logical_id
        assert ours["Resources"][logical_id]["Type"] == resource["Type"], logical_id


def test_every_seed_output_keeps_its_key_and_export(seed: dict[str, Any], ours: dict[str, Any]) -> None:
    for key, output in seed["Outputs"].items():
        assert key in ours["Outputs"], key
        assert ours["Outputs"][key]["Export"] == output["Export"], key


def test_environment_suffix_parameter_keeps_its_meaning_and_is_lowercase(seed: dict[str, Any],
                                                                         ours: dict[str, Any]) -> None:
    theirs, mine = seed["Parameters"]["EnvironmentSuffix"], ours["Parameters"]["EnvironmentSuffix"]
    for field in ("Type", "Default", "Description"):
        assert mine[field] == theirs[field], field
    # The suffix goes into the bucket name, and S3 bucket names are lowercase: the seed's ^[a-zA-Z0-9]+$ let
    # "Prod" through to a CreateBucket that fails.
    assert theirs["AllowedPattern"] == "^[a-zA-Z0-9]+$"
    assert mine["AllowedPattern"] == "^[a-z0-9]+$"
    assert re.fullmatch(mine["AllowedPattern"].strip("^$"), "prod") and not re.fullmatch(
        mine["AllowedPattern"].strip("^$"), "Prod")


def test_iot_endpoint_output_is_the_described_ats_endpoint(seed: dict[str, Any], ours: dict[str, Any]) -> None:
    # DescribeEndpoint: "identifier.iot.region.amazonaws.com", with a per-account identifier; the seed's
    # account-id form is no endpoint.
    assert seed["Outputs"]["IoTEndpoint"]["Value"] == {"Fn::Sub": "${AWS::AccountId}.iot.${AWS::Region}.amazonaws.com"}
    assert ours["Outputs"]["IoTEndpoint"]["Value"] == {"Fn::GetAtt": ["IoTDataEndpoint", "Address"]}
    lookup = ours["Resources"]["IoTDataEndpoint"]
    assert lookup["Type"] == "Custom::IoTEndpoint"
    assert lookup["Properties"] == {"ServiceToken": {"Fn::GetAtt": ["IoTEndpointLookupFunction", "Arn"]},
                                    "EndpointType": "iot:Data-ATS"}


def test_seed_properties_are_equal_or_a_listed_strengthening(seed: dict[str, Any], ours: dict[str, Any]) -> None:
    unexplained = []
    for logical_id, resource in seed["Resources"].items():
        mine = ours["Resources"][logical_id]
        pairs = [(name, value, mine.get("Properties", {}).get(name))
                 for name, value in resource.get("Properties", {}).items()]
        pairs += [(attr, resource[attr], mine.get(attr)) for attr in ("DeletionPolicy", "UpdateReplacePolicy")
                  if attr in resource]
        for name, theirs, ours_value in pairs:
            if not same(name, theirs, ours_value) and (logical_id, name) not in STRENGTHENINGS:
                unexplained.append(f"{logical_id}.{name}: seed {theirs!r} != ours {ours_value!r}")
    assert not unexplained, "\n".join(unexplained)


def test_every_listed_strengthening_is_still_a_difference(seed: dict[str, Any], ours: dict[str, Any]) -> None:
    for logical_id, name in STRENGTHENINGS:
        seed_resource, mine = seed["Resources"][logical_id], ours["Resources"][logical_id]
        theirs = seed_resource.get("Properties", {}).get(name, seed_resource.get(name))
        assert theirs != mine.get("Properties", {}).get(name, mine.get(name)), (logical_id, name)


def test_seed_lifecycle_rule_and_transitions_are_kept(ours: dict[str, Any]) -> None:
    rules = ours["Resources"]["RawDataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rules[0]["Id"] == "TransitionToIA"
    assert rules[0]["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30},
                                       {"StorageClass": "GLACIER", "TransitionInDays": 90}]


def test_no_arn_is_built_without_the_partition(ours: dict[str, Any]) -> None:
    text = json.dumps(ours)
    assert "arn:aws:" not in text
    assert "arn:${AWS::Partition}:" in text


def test_a_duplicate_logical_id_fails_loudly() -> None:
    from iotpipe.groups.stream import StreamGroup, build_stream

    def doubled(cfg: Any, names: Any) -> StreamGroup:
        group = build_stream(cfg, names)
        return StreamGroup(group.resources * 2, group.outputs, group.stream_arn, group.stream_name,
                           group.customer_key_arn)

    with pytest.raises(ValueError, match="duplicate key"):
        compose(build_config({}, "dev", {}), overrides={"stream": doubled})


# --- the seam: handles, overrides, extra groups, names (issue 14) ------------------------------------------


def _blocking(template: Any) -> list[Any]:
    from iotpipe.lint import blocking, lint_template
    from iotpipe.render import to_yaml

    return blocking(lint_template(to_yaml(template)))


def test_compose_returns_the_template_the_handles_and_the_contract_values() -> None:
    from iotpipe.composition import Composition, Groups
    from iotpipe.naming import Names

    composition = compose(build_config({}, "dev", {}))
    assert isinstance(composition, Composition) and isinstance(composition.groups, Groups)
    assert composition.names == Names()
    assert composition.groups.stream.stream_arn.to_dict() == {"Fn::GetAtt": ["SensorDataStream", "Arn"]}
    assert composition.groups.storage.table_name.to_dict() == {"Ref": "SensorDataTable"}
    assert set(composition.output_keys) == set(composition.template.outputs)
    assert composition.physical_names["table"].to_dict() == {"Fn::Sub": "SensorReadings-${EnvironmentSuffix}"}


def test_a_replaced_storage_group_is_what_the_processor_writes_to() -> None:
    # The seed's composition referenced Ref(SensorDataTable) from the processor: a replaced storage group left a
    # dangling Ref (cfn-lint E1020). Through the handle, the processor names whatever table storage made.
    from iotpipe.groups.storage import build_storage
    from iotpipe.naming import Names

    def storage_elsewhere(cfg: Any, _names: Any) -> Any:
        return build_storage(cfg, Names(prefix="Archive"))

    composition = compose(build_config({}, "dev", {}), overrides={"storage": storage_elsewhere})
    resources = composition.template.to_dict()["Resources"]
    variables = resources["DataProcessorFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["DYNAMODB_TABLE"] == {"Ref": "ArchiveSensorDataTable"}
    assert variables["S3_BUCKET"] == {"Ref": "ArchiveRawDataBucket"}
    assert "SensorDataTable" not in resources
    assert _blocking(composition.template) == []


def test_an_extra_group_gets_the_built_in_handles() -> None:
    from dataclasses import dataclass

    from troposphere import Output
    from troposphere import sqs as tpsqs

    @dataclass(frozen=True)
    class Extra:
        resources: tuple[Any, ...]
        outputs: tuple[Any, ...]

    seen: list[Any] = []

    def extra(cfg: Any, names: Any, groups: Any) -> Extra:
        seen.append((cfg.env, names.prefix, groups.stream.stream_name.to_dict()))
        queue = tpsqs.Queue(names.id("ExtraQueue"), KmsMasterKeyId="alias/aws/sqs")
        return Extra((queue,), (Output(names.output("ExtraStream"), Value=groups.stream.stream_name),))

    composition = compose(build_config({}, "dev", {}), extra=[extra])
    assert seen == [("dev", "", {"Ref": "SensorDataStream"})]
    assert "ExtraQueue" in composition.template.resources and "ExtraStream" in composition.output_keys
    assert composition.recompose().template.resources.keys() == composition.template.resources.keys()


def test_bad_overrides_and_extras_are_template_errors_naming_the_fix() -> None:
    from iotpipe.errors import TemplateError

    cfg = build_config({}, "dev", {})
    with pytest.raises(TemplateError, match=r"unknown group\(s\) streams; the built-in groups are keys, storage"):
        compose(cfg, overrides={"streams": lambda *a: a})
    with pytest.raises(TemplateError, match=r"returned dict; return a StreamGroup"):
        compose(cfg, overrides={"stream": lambda _cfg, _names: {}})
    with pytest.raises(TemplateError, match=r"returned int; return an object with resources and outputs"):
        compose(cfg, extra=[lambda _cfg, _names, _groups: 3])


def test_two_pipelines_share_one_template_and_it_lints() -> None:
    from iotpipe.naming import Names

    cfg = build_config({}, "dev", {})
    first = compose(cfg)
    with pytest.raises(ValueError, match='duplicate key "PipelineKey"'):
        compose(cfg, template=first.template)
    second = compose(build_config({}, "dev", {}), names=Names(prefix="LineB"), template=first.template)
    assert second.template is first.template
    ids = set(first.template.resources)
    default_ids = set(compose(cfg).template.resources)
    assert ids == default_ids | {f"LineB{logical_id}" for logical_id in default_ids}
    outputs = first.template.to_dict()["Outputs"]
    assert outputs["LineBSensorDataTableName"]["Export"]["Name"] == {
        "Fn::Sub": "${AWS::StackName}-LineBSensorDataTable"}
    tables = [r["Properties"]["TableName"] for r in first.template.to_dict()["Resources"].values()
              if r["Type"] == "AWS::DynamoDB::Table"]
    assert tables == [{"Fn::Sub": "SensorReadings-${EnvironmentSuffix}"},
                      {"Fn::Sub": "SensorReadings-lineb-${EnvironmentSuffix}"}]
    second_env = first.template.to_dict()["Resources"]["LineBDataProcessorFunction"]["Properties"]["Environment"]
    assert second_env["Variables"]["DYNAMODB_TABLE"] == {"Ref": "LineBSensorDataTable"}
    assert _blocking(first.template) == []


def test_default_names_reproduce_the_seed_ids() -> None:
    from iotpipe.naming import Names

    default = compose(build_config({}, "dev", {}))
    explicit = compose(build_config({}, "dev", {}), names=Names(prefix=""))
    assert default.template.to_dict() == explicit.template.to_dict()


@pytest.mark.parametrize("prefix", ["lineb", "Line-B", "VeryLongPrefix", "1Line"])
def test_a_bad_prefix_is_refused(prefix: str) -> None:
    from iotpipe.errors import ConfigError
    from iotpipe.naming import Names

    with pytest.raises(ConfigError, match=r"names\.prefix"):
        Names(prefix=prefix)
