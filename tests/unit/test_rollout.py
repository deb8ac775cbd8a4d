"""processor.rollout: a version per change, the mapping on an alias, CodeDeploy shifting it with rollback alarms."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode_str

from iotpipe import package, pretraffic
from iotpipe.config import build_config, load_config
from iotpipe.deploy.plan import TEMPLATE_BODY_LIMIT, compact_json
from iotpipe.errors import ConfigError
from iotpipe.render import render_template

ROLLOUT_TYPES = {"AWS::Lambda::Version", "AWS::Lambda::Alias", "AWS::CodeDeploy::Application",
                 "AWS::CodeDeploy::DeploymentGroup"}
HOOK = "ProcessorPreTrafficHook"


def rendered(**overrides: Any) -> dict[str, Any]:
    template, matches = decode_str(render_template(build_config({}, "dev", overrides)))
    assert not matches and template is not None
    return dict(template["Resources"])


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    found = {key: value for key, value in resources.items() if value["Type"] == kind}
    assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
    return found


def version_id(resources: dict[str, Any]) -> str:
    return next(iter(of_type(resources, "AWS::Lambda::Version")))


def test_all_at_once_publishes_nothing_and_maps_the_function() -> None:
    resources = rendered()
    assert HOOK not in resources and f"{HOOK}Role" not in resources
    assert not {value["Type"] for value in resources.values()} & ROLLOUT_TYPES
    assert resources["KinesisEventSourceMapping"]["Properties"]["FunctionName"] == {
        "Fn::GetAtt": ["DataProcessorFunction", "Arn"]}


def test_a_canary_maps_the_alias_and_codedeploy_shifts_it() -> None:
    resources = rendered(**{"processor.rollout": "canary10-5m"})
    alias_id, alias = next(iter(of_type(resources, "AWS::Lambda::Alias").items()))
    assert resources["KinesisEventSourceMapping"]["Properties"]["FunctionName"] == {"Ref": alias_id}
    assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version_id(resources), "Version"]}
    update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    group_id, group = next(iter(of_type(resources, "AWS::CodeDeploy::DeploymentGroup").items()))
    application_id = next(iter(of_type(resources, "AWS::CodeDeploy::Application")))
    assert update == {"ApplicationName": {"Ref": application_id}, "DeploymentGroupName": {"Ref": group_id},
                      "BeforeAllowTrafficHook": {"Ref": "ProcessorPreTrafficHook"}}
    props = group["Properties"]
    assert props["DeploymentConfigName"] == "CodeDeployDefault.LambdaCanary10Percent5Minutes"
    assert props["AutoRollbackConfiguration"] == {"Enabled": True,
                                                  "Events": ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"]}
    assert props["AlarmConfiguration"]["Enabled"] is True
    assert {alarm["Name"]["Ref"] for alarm in props["AlarmConfiguration"]["Alarms"]} == {
        "RolloutErrorAlarm", "RolloutIteratorAgeAlarm", "RolloutQuarantineAlarm"}


@pytest.mark.parametrize("alarm", ["RolloutErrorAlarm", "RolloutIteratorAgeAlarm"])
def test_rollback_alarms_watch_only_the_new_version(alarm: str) -> None:
    resources = rendered(**{"processor.rollout": "linear10-1m"})
    dimensions = {d["Name"]: d["Value"] for d in resources[alarm]["Properties"]["Dimensions"]}
    assert dimensions["ExecutedVersion"] == {"Fn::GetAtt": [version_id(resources), "Version"]}
    assert dimensions["FunctionName"] == {"Ref": "DataProcessorFunction"}
    assert set(dimensions) == {"FunctionName", "Resource", "ExecutedVersion"}
    assert resources[alarm]["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_quarantines_roll_back_beyond_the_hooks_own_records() -> None:
    resources = rendered(**{"processor.rollout": "canary10-5m", "alarms.quarantined_records": 3})
    hook_records = len(pretraffic.hook_sample(pretraffic.shipped_vectors())["records"])
    props = resources["RolloutQuarantineAlarm"]["Properties"]
    pipeline = resources["QuarantineAlarm"]["Properties"]
    # The same metric as the pipeline's alarm, which fires at each release: the hook quarantines on purpose.
    assert {k: props[k] for k in ("Namespace", "MetricName", "Statistic", "Dimensions", "Period")} == \
        {k: pipeline[k] for k in ("Namespace", "MetricName", "Statistic", "Dimensions", "Period")}
    assert pipeline["Threshold"] == 3
    assert props["Threshold"] == 3 + hook_records


def test_a_new_version_is_published_per_code_or_configuration_change() -> None:
    first = version_id(rendered(**{"processor.rollout": "canary10-5m"}))
    assert version_id(rendered(**{"processor.rollout": "canary10-5m"})) == first
    assert version_id(rendered(**{"processor.rollout": "canary10-5m", "processor.memory_mb": 512})) != first
    assert version_id(rendered(**{"processor.rollout": "canary10-5m", "processor.runtime": "nodejs22.x"})) != first
    # Old versions stay: a rollback shifts the alias back to one.
    resources = rendered(**{"processor.rollout": "canary10-5m"})
    assert resources[first]["DeletionPolicy"] == "Retain"


def test_codedeploy_role_is_scoped_to_the_alias_and_the_rollback_alarms() -> None:
    resources = rendered(**{"processor.rollout": "canary10-5m"})
    role = resources["ProcessorDeployRole"]["Properties"]
    assert "ManagedPolicyArns" not in role
    trust = role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
    assert trust == {"Service": ["codedeploy.amazonaws.com"]}
    statements = role["Policies"][0]["PolicyDocument"]["Statement"]
    by_sid = {statement["Sid"]: statement for statement in statements}
    assert set(by_sid["ShiftProcessorAlias"]["Action"]) == {
        "lambda:GetAlias", "lambda:UpdateAlias", "lambda:GetProvisionedConcurrencyConfig"}
    assert by_sid["ShiftProcessorAlias"]["Resource"] == [
        {"Fn::Sub": ["${Function}:live", {"Function": {"Fn::GetAtt": ["DataProcessorFunction", "Arn"]}}]}]
    assert by_sid["ReadRollbackAlarms"]["Resource"] == [
        {"Fn::GetAtt": [alarm, "Arn"]} for alarm in ("RolloutErrorAlarm", "RolloutIteratorAgeAlarm",
                                                  "RolloutQuarantineAlarm")]
    # CodeDeploy invokes the pre-traffic hook with this role.
    assert by_sid["RunPreTrafficHook"] == {"Sid": "RunPreTrafficHook", "Effect": "Allow",
                                           "Action": ["lambda:InvokeFunction"],
                                           "Resource": [{"Fn::GetAtt": [HOOK, "Arn"]}]}
    assert all("*" not in statement["Resource"] for statement in statements)


@pytest.mark.parametrize("rollout", ["canary10-5m", "linear10-1m"])
def test_the_pre_traffic_hook_checks_the_new_version_with_least_privilege(rollout: str) -> None:
    resources = rendered(**{"processor.rollout": rollout})
    version = version_id(resources)
    hook = resources[HOOK]["Properties"]
    # As SAM passes a hook the version: an environment variable set to the Version's Ref (its ARN).
    assert hook["Environment"]["Variables"] == {"NEW_VERSION": {"Ref": version},
                                                "ARCHIVE_BUCKET": {"Ref": "RawDataBucket"}}
    assert hook["Role"] == {"Fn::GetAtt": [f"{HOOK}Role", "Arn"]}
    # Packaged as the processor is (a zip by default): the zip deploy uploads holds the hook with its sample.
    assert hook["Code"]["S3Key"] == package.hook_artefact().key
    assert "SAMPLE = {'shard': 'shardId-pretraffic-hook'" in package.read_zip_member(package.hook_artefact().body,
                                                                                      "index.py")
    role = resources[f"{HOOK}Role"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": ["lambda.amazonaws.com"]}
    statements = role["Policies"][0]["PolicyDocument"]["Statement"]
    assert [(s["Sid"], s["Action"], s["Resource"]) for s in statements] == [
        ("InvokeNewVersion", ["lambda:InvokeFunction"], [{"Ref": version}]),
        ("ReportHookStatus", ["codedeploy:PutLifecycleEventHookExecutionStatus"], [{"Fn::Sub": [
            "arn:${AWS::Partition}:codedeploy:${AWS::Region}:${AWS::AccountId}:deploymentgroup:${Application}/*",
            {"Application": {"Ref": "ProcessorDeployApplication"}}]}]),
        ("ListRawArchive", ["s3:ListBucket"], [{"Fn::GetAtt": ["RawDataBucket", "Arn"]}]),
        ("ReadRecentArchive", ["s3:GetObject"], [
            {"Fn::Sub": ["${Bucket}/raw/*", {"Bucket": {"Fn::GetAtt": ["RawDataBucket", "Arn"]}}]}]),
    ]
    # Listing only the raw and quarantine prefixes, reading only raw objects: nothing else of the bucket.
    assert statements[2]["Condition"] == {"StringLike": {"s3:prefix": ["raw/*", "quarantine/*"]}}


def test_the_hook_is_uploaded_with_the_processor_or_inlined_with_it() -> None:
    zipped = load_config(None, "dev", {"processor.rollout": "canary10-5m"}).processor
    assert [a.key.split("/")[0] for a in package.artefacts(zipped)] == ["processor", "pretraffic-hook"]
    assert [a.key.split("/")[0] for a in package.artefacts(replace(zipped, rollout="all-at-once"))] == ["processor"]
    inline = rendered(**{"processor.rollout": "canary10-5m", "processor.packaging": "inline"})[HOOK]["Properties"]
    assert inline["Code"] == {"ZipFile": package.hook_source()}
    assert package.artefacts(replace(zipped, packaging="inline")) == ()


def test_an_unknown_rollout_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="canary10-5m"):
        build_config({}, "dev", {"processor.rollout": "canary50-1h"})


@pytest.mark.parametrize("runtime", ["python3.13", "nodejs22.x"])
def test_prods_template_with_the_hook_fits_the_template_body_limit(runtime: str) -> None:
    # Prod's fleet group (provisioning by claim, ~8 KB) takes it over the limit: deploy then passes a TemplateURL
    # (tests/unit/test_groups_fleet.py); this pins what the rollout hook itself adds.
    cfg = load_config(Path(__file__).resolve().parents[2] / "iotpipe.toml", "prod",
                      {"processor.runtime": runtime, "fleet.provisioning_by_claim": False})
    assert cfg.processor.rollout != "all-at-once"
    body = render_template(cfg)
    assert "ProcessorPreTrafficHook" in body
    assert len(compact_json(body).encode("utf-8")) <= TEMPLATE_BODY_LIMIT
