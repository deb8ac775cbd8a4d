"""The stack lifecycle through the real CLI against a moto server: deploy, diff, outputs, status, destroy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result

import iotpipe.cli.output as cli_output
import iotpipe.lint
from iotpipe.cli import main

REGION = "us-east-1"
STACK = "iotpipe-dev"
CONFIG = """\
[defaults.tags]
Project = "iotpipe"

[env.dev]
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "iotpipe.toml"
    path.write_text(CONFIG)
    return path


def run(endpoint: str, config: Path, *args: str, input: str | None = None) -> Result:
    argv = [*args, "--env", "dev", "--config", str(config), "--endpoint-url", endpoint, "--region", REGION]
    return CliRunner().invoke(main, argv, input=input, catch_exceptions=False)


def aws(service: str, endpoint: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


def deployed(endpoint: str, config: Path) -> Result:
    result = run(endpoint, config, "deploy", "--yes")
    assert result.exit_code == 0, result.stderr
    return result


def test_first_deploy_prints_changes_and_outputs(moto_endpoint: str, config: Path) -> None:
    result = deployed(moto_endpoint, config)
    assert "Action" in result.stdout and "Replacement" in result.stdout
    assert "Add     DataProcessorFunction" in result.stdout
    assert f"Stack {STACK}: CREATE_COMPLETE" in result.stdout
    assert "RawDataBucketName" in result.stdout and "SensorDataTableName" in result.stdout
    # the processor's zip went to the artefacts bucket, the template (under 51,200 bytes) inline
    assert "created artefacts bucket iotpipe-artefacts-123456789012-us-east-1" in result.stderr
    assert "bytes to s3://iotpipe-artefacts-123456789012-us-east-1/processor/" in result.stderr
    assert "CREATE_COMPLETE" in result.stderr and "s] " in result.stderr  # streamed events, elapsed time
    stack = aws("cloudformation", moto_endpoint).describe_stacks(StackName=STACK)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"


def test_deploy_json_output_parses(moto_endpoint: str, config: Path) -> None:
    result = run(moto_endpoint, config, "deploy", "--yes", "--output", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["action"] == "create" and data["executed"] is True and data["status"] == "CREATE_COMPLETE"
    assert data["outputs"]["RawDataBucketName"].startswith("iot-raw-data-")
    assert {"action": "Add", "logicalId": "SensorDataTable"}.items() <= next(
        c for c in data["changes"] if c["logicalId"] == "SensorDataTable").items()


def test_second_deploy_without_changes_succeeds_with_outputs(moto_endpoint: str, config: Path) -> None:
    deployed(moto_endpoint, config)
    result = run(moto_endpoint, config, "deploy", "--yes")
    assert result.exit_code == 0, result.stderr
    assert f"No changes: stack {STACK} already matches" in result.stdout
    assert "RawDataBucketName" in result.stdout
    summaries = aws("cloudformation", moto_endpoint).list_change_sets(StackName=STACK)["Summaries"]
    assert [s for s in summaries if s.get("ExecutionStatus") != "EXECUTE_COMPLETE"] == []


def test_config_change_shows_the_modified_resource_in_diff_and_deploy(moto_endpoint: str, config: Path) -> None:
    deployed(moto_endpoint, config)
    config.write_text(CONFIG + "[env.dev.processor]\nmemory_mb = 512\n")
    diff = run(moto_endpoint, config, "diff")
    assert diff.exit_code == 0, diff.stderr
    assert "Modify  DataProcessorFunction  AWS::Lambda::Function" in diff.stdout
    result = run(moto_endpoint, config, "deploy", "--yes")
    assert result.exit_code == 0, result.stderr
    assert "Modify  DataProcessorFunction" in result.stdout and f"Stack {STACK}: UPDATE_COMPLETE" in result.stdout
    function = aws("cloudformation", moto_endpoint).describe_stacks(StackName=STACK)["Stacks"][0]
    name = {o["OutputKey"]: o["OutputValue"] for o in function["Outputs"]}["DataProcessorFunctionName"]
    assert aws("lambda", moto_endpoint).get_function_configuration(FunctionName=name)["MemorySize"] == 512


def test_diff_of_a_new_stack_lists_adds_and_leaves_nothing_behind(moto_endpoint: str, config: Path) -> None:
    result = run(moto_endpoint, config, "diff", "--output", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["executed"] is False and data["action"] == "create"
    assert {"SensorDataStream", "SensorDataTable", "DataProcessorFunction"} <= {
        c["logicalId"] for c in data["changes"] if c["action"] == "Add"}
    outputs = run(moto_endpoint, config, "outputs")
    assert outputs.exit_code == 1 and "does not exist" in outputs.stderr and "iotpipe deploy" in outputs.stderr


def test_no_execute_shows_the_change_set_and_creates_nothing(moto_endpoint: str, config: Path) -> None:
    result = run(moto_endpoint, config, "deploy", "--no-execute")
    assert result.exit_code == 0, result.stderr
    assert "Add     SensorDataStream" in result.stdout and "nothing was executed" in result.stderr
    stacks = aws("cloudformation", moto_endpoint).list_stacks()["StackSummaries"]
    assert [s for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"] == []


def test_deploy_without_terminal_and_without_yes_is_refused(moto_endpoint: str, config: Path) -> None:
    result = run(moto_endpoint, config, "deploy")
    assert result.exit_code == 2
    assert "stdin is not a terminal" in result.stderr and "--yes" in result.stderr
    assert aws("cloudformation", moto_endpoint).list_stacks()["StackSummaries"] == []


def test_declined_prompt_on_a_terminal_executes_nothing(moto_endpoint: str, config: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_output, "is_interactive", lambda: True)
    result = run(moto_endpoint, config, "deploy", input="n\n")
    assert result.exit_code == 1 and "cancelled" in result.stderr and "Execute these changes?" in result.stderr
    stacks = aws("cloudformation", moto_endpoint).list_stacks()["StackSummaries"]
    assert [s for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"] == []
    accepted = run(moto_endpoint, config, "deploy", input="y\n")
    assert accepted.exit_code == 0 and f"Stack {STACK}: CREATE_COMPLETE" in accepted.stdout


def test_tags_and_parameters_merge_config_then_command_line(moto_endpoint: str, config: Path) -> None:
    config.write_text(CONFIG + "[env.dev.tags]\nOwner = \"config\"\nTeam = \"plant\"\n")
    result = run(moto_endpoint, config, "deploy", "--yes", "--tag", "Owner=cli",
                 "--param", "AlarmEmail=ops@example.com")
    assert result.exit_code == 0, result.stderr
    stack = aws("cloudformation", moto_endpoint).describe_stacks(StackName=STACK)["Stacks"][0]
    assert {t["Key"]: t["Value"] for t in stack["Tags"]} == {"Project": "iotpipe", "Owner": "cli", "Team": "plant"}
    assert {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}["AlarmEmail"] == "ops@example.com"


def test_unknown_parameter_is_a_usage_error(moto_endpoint: str, config: Path) -> None:
    result = run(moto_endpoint, config, "deploy", "--yes", "--param", "Colour=red")
    assert result.exit_code == 2 and "Colour" in result.stderr and "AlarmEmail" in result.stderr


def test_lint_errors_block_the_deploy(moto_endpoint: str, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    finding = iotpipe.lint.Finding(source="cfn-lint", rule="E3012", severity="error",
                                   message="Property is of the wrong type", path="Resources/X", line=7)
    monkeypatch.setattr(iotpipe.lint, "lint_template", lambda _text, *_a, **_k: [finding])
    result = run(moto_endpoint, config, "deploy", "--yes")
    assert result.exit_code == 1 and "1 blocking lint finding(s)" in result.stderr and "E3012" in result.stderr
    assert "not deploying it" in result.stderr
    assert aws("cloudformation", moto_endpoint).list_stacks()["StackSummaries"] == []


def test_outputs_and_status(moto_endpoint: str, config: Path) -> None:
    deployed(moto_endpoint, config)
    outputs = run(moto_endpoint, config, "outputs", "--output", "json")
    assert outputs.exit_code == 0, outputs.stderr
    data = json.loads(outputs.stdout)
    assert data["KinesisStreamName"] == "sensor-data-stream-dev" and "RawDataBucketName" in data
    status = run(moto_endpoint, config, "status")
    assert status.exit_code == 0, status.stderr
    assert f"Stack {STACK}: CREATE_COMPLETE" in status.stdout and "Termination protection: off" in status.stdout
    assert "No changes: the stack matches the config for env dev." in status.stdout
    assert "CREATE_COMPLETE" in status.stdout.split("events:")[1]


def test_destroy_empties_the_versioned_raw_bucket_then_deletes_the_stack(moto_endpoint: str, config: Path) -> None:
    deployed(moto_endpoint, config)
    cfn = aws("cloudformation", moto_endpoint)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]}
    bucket = outputs["RawDataBucketName"]
    s3 = aws("s3", moto_endpoint)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for version in range(2):
        for i in range(3):
            s3.put_object(Bucket=bucket, Key=f"raw/year=2026/{i}.jsonl.gz", Body=f"{version}".encode())
    s3.delete_object(Bucket=bucket, Key="raw/year=2026/0.jsonl.gz")  # a delete marker
    result = run(moto_endpoint, config, "destroy", "--yes")
    assert result.exit_code == 0, result.stderr
    assert f"Emptied {bucket}: 7 object versions and delete markers deleted" in result.stdout
    assert f"Stack {STACK} deleted" in result.stdout
    live = [s for s in cfn.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]
    assert live == []
    again = run(moto_endpoint, config, "destroy", "--yes")
    assert again.exit_code == 0 and "nothing to destroy" in again.stderr


def test_destroy_without_terminal_and_without_yes_is_refused(moto_endpoint: str, config: Path) -> None:
    deployed(moto_endpoint, config)
    result = run(moto_endpoint, config, "destroy")
    assert result.exit_code == 2 and "--yes" in result.stderr
    assert aws("cloudformation", moto_endpoint).describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"] \
        == "CREATE_COMPLETE"


def test_destroy_refuses_under_termination_protection(moto_endpoint: str, config: Path) -> None:
    template = "Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n"
    aws("cloudformation", moto_endpoint).create_stack(StackName=STACK, TemplateBody=template,
                                                      EnableTerminationProtection=True)
    result = run(moto_endpoint, config, "destroy", "--yes")
    assert result.exit_code == 1
    assert f"update-termination-protection --no-enable-termination-protection --stack-name {STACK}" in result.stderr
    assert "termination_protection = false" in result.stderr


def test_stack_name_comes_from_the_config_when_set(moto_endpoint: str, config: Path) -> None:
    config.write_text(CONFIG + 'stack_name = "line-7-telemetry"\n')
    result = run(moto_endpoint, config, "deploy", "--yes")
    assert result.exit_code == 0, result.stderr
    assert "Stack line-7-telemetry: CREATE_COMPLETE" in result.stdout
