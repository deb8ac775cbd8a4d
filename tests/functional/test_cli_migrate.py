"""Migrating a stack deployed from the seed template: iotpipe over it, under the seed's stack name, on moto.

moto applies any change set; AWS refuses two things in this update, and iotpipe must refuse them first:
- the event source mapping's StartingPosition is create-only (CloudFormation resource schema), so LATEST ->
  TRIM_HORIZON replaces the mapping, creating the new one before deleting the old, and Lambda refuses "The event
  source arn ... and function ... provided mapping already exists" (AWS SAM issue 1320): the update rolls back;
- the seed's RawDataBucket and SensorDataTable exports change value (both resources are replaced under new
  names), and CloudFormation refuses to modify an export another stack imports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode_str
from click.testing import CliRunner, Result

from iotpipe.cli import main
from iotpipe.config import build_config
from iotpipe.deploy.preflight import replacements
from iotpipe.render import render_template

REGION = "us-east-1"
SEED_STACK = "iot-manufacturing-dev"
SEED = Path(__file__).resolve().parents[1] / "data" / "seed_TapStack.yml"


def aws(service: str, endpoint: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


def decoded(text: str) -> dict[str, Any]:
    template, errors = decode_str(text)
    assert not errors, errors
    return json.loads(json.dumps(template))


def run(endpoint: str, config: Path, *args: str) -> Result:
    argv = [*args, "--env", "dev", "--config", str(config), "--endpoint-url", endpoint, "--region", REGION]
    return CliRunner().invoke(main, argv, catch_exceptions=False)


def write_config(tmp_path: Path, processor: str = "") -> Path:
    path = tmp_path / "iotpipe.toml"
    path.write_text(f'[env.dev]\nstack_name = "{SEED_STACK}"\n\n[env.dev.processor]\n{processor}')
    return path


@pytest.fixture
def seed_stack(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The seed's own template deployed as its README says, under its stack name."""
    monkeypatch.chdir(tmp_path)
    cloudformation = aws("cloudformation", moto_endpoint)
    cloudformation.create_stack(StackName=SEED_STACK, TemplateBody=SEED.read_text(encoding="utf-8"),
                                Parameters=[{"ParameterKey": "EnvironmentSuffix", "ParameterValue": "dev"}],
                                Capabilities=["CAPABILITY_NAMED_IAM"])
    stack = cloudformation.describe_stacks(StackName=SEED_STACK)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    return moto_endpoint


def test_default_config_is_refused_before_any_change_set(seed_stack: str, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run(seed_stack, config, "diff")
    assert result.exit_code == 1
    assert "KinesisEventSourceMapping" in result.stderr and "provided mapping already exists" in result.stderr
    assert 'starting_position = "LATEST"' in result.stderr
    assert "Traceback" not in result.stderr
    assert aws("cloudformation", seed_stack).list_change_sets(StackName=SEED_STACK)["Summaries"] == []


def test_migration_replaces_nothing_aws_refuses_and_deploys(seed_stack: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, 'starting_position = "LATEST"\n')
    ours = decoded(render_template(build_config({"env": {"dev": {"stack_name": SEED_STACK, "processor": {
        "starting_position": "LATEST"}}}}, "dev", {})))
    seed = decoded(SEED.read_text(encoding="utf-8"))
    found = {r.logical_id: r for r in replacements(seed, ours)}
    # What the update replaces, each under a new name (allowed); nothing AWS would refuse.
    assert [r.refusal for r in found.values() if r.refusal] == []
    assert {"RawDataBucket", "SensorDataTable", "DataProcessorRole", "IoTRuleRole"} <= set(found)
    assert "KinesisEventSourceMapping" not in found

    diff = run(seed_stack, config, "diff", "--output", "json")
    assert diff.exit_code == 0, diff.stderr
    changes = {c["logicalId"]: c for c in json.loads(diff.stdout)["changes"]}
    assert changes["IoTDataEndpoint"]["action"] == "Add"
    assert changes["KinesisEventSourceMapping"]["action"] == "Modify"
    assert changes["RawDataBucket"]["action"] == "Modify" and changes["SensorDataTable"]["action"] == "Modify"

    assert aws("cloudformation", seed_stack).list_change_sets(StackName=SEED_STACK)["Summaries"] == []

    deploy = run(seed_stack, config, "deploy", "--yes", "--output", "json")
    assert deploy.exit_code == 0, deploy.stderr
    result = json.loads(deploy.stdout)
    assert result["status"] == "UPDATE_COMPLETE"
    # DescribeEndpoint (iot:Data-ATS): "identifier.iot.region.amazonaws.com", not the seed's account-id form.
    assert result["outputs"]["IoTEndpoint"].endswith("-ats.iot.us-east-1.amazonaws.com")
    assert result["outputs"]["SensorDataTableName"] == "SensorReadings-dev"
    # one mapping, still LATEST: nothing was replaced that Lambda would have refused
    mappings = aws("lambda", seed_stack).list_event_source_mappings()["EventSourceMappings"]
    assert [m["StartingPosition"] for m in mappings] == ["LATEST"]
    # the seed's table is kept (UpdateReplacePolicy: Retain), its roles are replaced by region-unique ones
    assert {"SensorData-dev", "SensorReadings-dev"} <= set(aws("dynamodb", seed_stack).list_tables()["TableNames"])
    roles = {r["RoleName"] for r in aws("iam", seed_stack).list_roles()["Roles"]}
    assert {"IoTRuleRole-dev-us-east-1", "IoTDataProcessorRole-dev-us-east-1"} <= roles
    assert not {"IoTRuleRole-dev", "IoTDataProcessorRole-dev"} & roles


def test_an_imported_export_that_would_change_is_refused(seed_stack: str, tmp_path: Path) -> None:
    consumer = {"Resources": {"Reader": {"Type": "AWS::SQS::Queue", "Properties": {
        "QueueName": {"Fn::ImportValue": f"{SEED_STACK}-RawDataBucket"}}}}}
    cloudformation = aws("cloudformation", seed_stack)
    cloudformation.create_stack(StackName="analytics", TemplateBody=json.dumps(consumer))
    config = write_config(tmp_path, 'starting_position = "LATEST"\n')
    result = run(seed_stack, config, "deploy", "--yes")
    assert result.exit_code == 1
    assert f"{SEED_STACK}-RawDataBucket (output RawDataBucketName) is imported by analytics" in result.stderr
    assert cloudformation.describe_stacks(StackName=SEED_STACK)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert cloudformation.list_change_sets(StackName=SEED_STACK)["Summaries"] == []
