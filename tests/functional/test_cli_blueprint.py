"""``--blueprint`` on render, lint, diff and deploy: the shipped examples, and every way a blueprint can be wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from click.testing import CliRunner

from iotpipe.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags read as plain mappings (``!Ref x`` -> ``{"Ref": x}``)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_Loader.add_multi_constructor("!", _intrinsic)


def resources(text: str) -> dict[str, Any]:
    return yaml.load(text, Loader=_Loader)["Resources"]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no iotpipe.toml here: built-in defaults
    return CliRunner()


def render(runner: CliRunner, spec: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "custom.yml"
    result = runner.invoke(main, ["render", "--blueprint", spec, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return resources(out.read_text(encoding="utf-8"))


def lint_is_clean(runner: CliRunner, spec: str) -> None:
    result = runner.invoke(main, ["lint", "--blueprint", spec, "--output", "json"])
    findings = json.loads(result.stdout)
    assert result.exit_code == 0, [f for f in findings if f["severity"] in ("error", "warning")]
    assert not [f for f in findings if f["severity"] in ("error", "warning")]


def test_override_property_example(runner: CliRunner, tmp_path: Path) -> None:
    spec = f"{EXAMPLES / 'override_property.py'}:customise"
    found = render(runner, spec, tmp_path)
    function = found["DataProcessorFunction"]["Properties"]
    assert function["MemorySize"] == 1024 and function["Description"].startswith("iotpipe processor")
    assert {"Key": "CostCenter", "Value": "plant-ops"} in found["RawDataBucket"]["Properties"]["Tags"]
    lint_is_clean(runner, spec)


def test_extra_group_example_reaches_the_stream_through_its_handle(runner: CliRunner, tmp_path: Path) -> None:
    spec = f"{EXAMPLES / 'firehose_copy.py'}:customise"
    found = render(runner, spec, tmp_path)
    delivery = found["FirehoseCopy"]["Properties"]
    assert delivery["KinesisStreamSourceConfiguration"]["KinesisStreamARN"] == {
        "Fn::GetAtt": ["SensorDataStream", "Arn"]}
    bucket = found["FirehoseCopyBucket"]["Properties"]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms"}
    statements = found["FirehoseCopyRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    # least privilege: every statement names its resources, none is "*"
    assert all(statement["Resource"] and "*" not in statement["Resource"] for statement in statements)
    assert {"ReadSensorStream", "DeliverCopies", "LocateBuckets"} == {s["Sid"] for s in statements}
    assert {"SensorDataStream", "DataProcessorFunction", "AlarmTopic"} <= set(found)  # the default pipeline stays
    lint_is_clean(runner, spec)


def test_replace_group_example_keeps_the_built_in_alarms_and_adds_one(runner: CliRunner, tmp_path: Path) -> None:
    spec = f"{EXAMPLES / 'replace_group.py'}:customise"
    found = render(runner, spec, tmp_path)
    alarm = found["ProcessorDurationAlarm"]["Properties"]
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}] and alarm["ExtendedStatistic"] == "p99"
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "DataProcessorFunction"}}]
    assert {"LambdaErrorAlarm", "AnomalyAlarm", "KinesisIteratorAgeAlarm", "PipelineDashboard"} <= set(found)
    lint_is_clean(runner, spec)


def test_a_module_spec_works_too(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "plant_blueprints.py").write_text(
        "def customise(composition):\n"
        "    composition.template.resources['SensorDataStream'].RetentionPeriodHours = 48\n"
        "    return composition\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = render(runner, "plant_blueprints:customise", tmp_path)
    assert found["SensorDataStream"]["Properties"]["RetentionPeriodHours"] == 48


BAD_BLUEPRINTS = {
    "missing file": ("nowhere/none.py:customise", None, "file nowhere/none.py does not exist"),
    "missing module": ("no_such_blueprints:customise", None, "no module named 'no_such_blueprints'"),
    "no callable named": ("bp.py:customise", "def other(c):\n    return c\n", "has no attribute 'customise'"),
    "not callable": ("bp.py:customise", "customise = 3\n", "customise is a int, not callable"),
    "wrong return": ("bp.py:customise", "def customise(c):\n    return {}\n", "returned dict, not a Composition"),
    "raises": ("bp.py:customise", "def customise(c):\n    raise ValueError('no such stream')\n",
               "raised ValueError: no such stream"),
    "import fails": ("bp.py:customise", "import no_such_dependency\n", "importing bp.py raised ModuleNotFoundError"),
    "no colon": ("bp.py", "", "is not a blueprint spec"),
    # issue 25: an exit 0 having done nothing, and a TypeError traceback
    "exits": ("bp.py:customise", "import sys\ndef customise(c):\n    sys.exit(0)\n", "called sys.exit(0)"),
    "exits on import": ("bp.py:customise", "import sys\nsys.exit(0)\n", "importing bp.py raised SystemExit"),
    "not JSON": ("bp.py:customise", "def customise(c):\n    c.template.resources['SensorDataTable']"
                 ".properties['TableClass'] = {1, 2}\n    return c\n",
                 "gave resource SensorDataTable a value that is not JSON (Object of type set"),
}


@pytest.mark.parametrize("case", list(BAD_BLUEPRINTS))
@pytest.mark.parametrize("command", ["render", "lint"])
def test_a_bad_blueprint_exits_2_naming_it_and_writes_nothing(runner: CliRunner, tmp_path: Path, case: str,
                                                            command: str) -> None:
    spec, source, fragment = BAD_BLUEPRINTS[case]
    if source is not None:
        (tmp_path / "bp.py").write_text(source, encoding="utf-8")
    out = tmp_path / "out.yml"
    args = [command, "--blueprint", spec] + (["-o", str(out)] if command == "render" else [])
    result = runner.invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"blueprint {spec}" in result.output or f"blueprint {spec!r}" in result.output
    assert fragment in result.output
    assert not out.exists()


@pytest.mark.parametrize(("body", "fragment"), [
    ("    return None\n", "blueprint bp.py:customise returned NoneType, not a Composition"),
    ("    import sys\n    sys.exit(0)\n", "blueprint bp.py:customise called sys.exit(0)"),
])
@pytest.mark.parametrize("command", ["diff", "deploy"])
def test_diff_and_deploy_refuse_a_bad_blueprint_before_any_aws_call(runner: CliRunner, tmp_path: Path,
                                                                    command: str, body: str, fragment: str) -> None:
    (tmp_path / "bp.py").write_text("def customise(c):\n" + body, encoding="utf-8")
    # an endpoint nothing listens on: any AWS call would fail with a connection error instead
    yes = ["--yes"] if command == "deploy" else []
    result = runner.invoke(main, [command, "--blueprint", "bp.py:customise", *yes,
                                  "--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1"])
    assert result.exit_code == 2, result.output
    assert fragment in result.output


def test_lint_refuses_a_template_file_and_a_blueprint_together(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "t.yml").write_text("Resources: {}\n", encoding="utf-8")
    result = runner.invoke(main, ["lint", "t.yml", "--blueprint", f"{EXAMPLES / 'replace_group.py'}:customise"])
    assert result.exit_code == 2 and "not both" in result.output


def test_deploy_and_diff_use_the_blueprint(moto_endpoint: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = f"{EXAMPLES / 'override_property.py'}:customise"
    common = ["--env", "bp", "--endpoint-url", moto_endpoint, "--region", "us-east-1"]

    def run(*args: str) -> Any:
        result = CliRunner().invoke(main, [*args, *common], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    try:
        run("deploy", "--yes", "--blueprint", spec)
        lambda_client = boto3.client("lambda", region_name="us-east-1", endpoint_url=moto_endpoint)
        assert lambda_client.get_function_configuration(FunctionName="iot-data-processor-bp")["MemorySize"] == 1024
        same = json.loads(run("diff", "--output", "json", "--blueprint", spec).stdout)
        assert not [c for c in same["changes"] if c["logicalId"] == "DataProcessorFunction"]
        plain = json.loads(run("diff", "--output", "json").stdout)
        assert {"action": "Modify", "logicalId": "DataProcessorFunction"}.items() <= next(
            c for c in plain["changes"] if c["logicalId"] == "DataProcessorFunction").items()
    finally:
        CliRunner().invoke(main, ["destroy", "--yes", *common])
