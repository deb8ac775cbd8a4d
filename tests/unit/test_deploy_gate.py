"""deploy gates on `iotpipe lint`'s findings: same rules (iotpipe's included), same severity policy (errors and
warnings block), the target region's checks, and nothing written to AWS before the gate has passed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner, Result
from deploy_helpers import region_gap
from troposphere import AWSObject, sqs

import iotpipe.render
from iotpipe.aws import ClientFactory
from iotpipe.cli import main
from iotpipe.cli.common import CliContext
from iotpipe.composition import compose
from iotpipe.config import PipelineConfig
from iotpipe.lint import Finding
from iotpipe.render import to_yaml

READ_PREFIXES = ("Describe", "Get", "List", "Head")


@dataclass(frozen=True)
class RecordingFactory(ClientFactory):
    """Clients that record every AWS operation they call, as ``service:Operation``."""

    calls: ClassVar[list[str]] = []

    def client(self, service: str) -> Any:
        client = super().client(service)
        client.meta.events.register("before-call.*.*", self._record)
        return client

    @staticmethod
    def _record(model: Any, **_: Any) -> None:
        RecordingFactory.calls.append(f"{model.service_model.service_name}:{model.name}")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    monkeypatch.chdir(tmp_path)  # no iotpipe.toml: the built-in dev config
    RecordingFactory.calls.clear()
    yield RecordingFactory.calls


def any_resource(title: str, type_name: str, properties: dict[str, Any]) -> AWSObject:
    """A troposphere resource of any type with these properties (troposphere knows only the types it ships)."""
    resource_class = type("AnyResource", (AWSObject,), {"resource_type": type_name,
                                                        "props": {name: (object, False) for name in properties}})
    return resource_class(title, **properties)


def writes(calls: list[str]) -> list[str]:
    return [call for call in calls if not call.split(":")[1].startswith(READ_PREFIXES)]


def customised(monkeypatch: pytest.MonkeyPatch, *resources: Any) -> None:
    """Make every render return the dev template with ``resources`` added (as a blueprint would)."""
    def render(cfg: PipelineConfig, _blueprint: Any = None) -> str:
        template = compose(cfg).template
        for resource in resources:
            template.add_resource(resource)
        return to_yaml(template)

    monkeypatch.setattr(iotpipe.render, "render_template", render)


def deploy(endpoint: str, *args: str) -> Result:
    argv = ["deploy", "--env", "dev", "--yes", "--endpoint-url", endpoint, "--no-checkov", *args]
    return CliRunner().invoke(main, argv, obj=CliContext(factory_class=RecordingFactory))


def test_an_own_rule_finding_blocks_deploy_before_any_aws_write(moto_endpoint: str, calls: list[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    customised(monkeypatch, sqs.Queue("ExtraQueue", SqsManagedSseEnabled=False))
    result = deploy(moto_endpoint, "--region", "us-east-1")
    assert result.exit_code == 1, result.output
    assert "the template has 1 blocking lint finding(s)" in result.stderr and "in us-east-1" in result.stderr
    assert "E9104" in result.stderr and "ExtraQueue: AWS::SQS::Queue without encryption at rest" in result.stderr
    assert "not deploying it" in result.stderr and "iotpipe lint --env dev --region us-east-1" in result.stderr
    assert calls == []  # not even a read: the gate comes first


def test_a_warning_blocks_deploy_as_it_fails_lint(moto_endpoint: str, calls: list[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Severity policy: `iotpipe lint` exits 1 on a warning, so deploy refuses it too (it let warnings pass)."""
    warning = Finding(source="cfn-lint", rule="W3005", severity="warning", message="Obsolete DependsOn",
                      path="Resources/X", line=3)
    monkeypatch.setattr(iotpipe.lint, "lint_template", lambda *_args, **_kwargs: [warning])
    result = deploy(moto_endpoint)
    assert result.exit_code == 1 and "W3005 line 3: Obsolete DependsOn" in result.stderr
    assert calls == []  # not even a read: the gate comes first


def test_deploy_runs_the_target_regions_checks(moto_endpoint: str, calls: list[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A resource type offered in us-east-1 and not in another region: only a deploy there is refused."""
    type_name, properties, region = region_gap()
    customised(monkeypatch, any_resource("ExtraResource", type_name, properties))
    refused = deploy(moto_endpoint, "--region", region, "--no-execute")
    assert refused.exit_code == 1, refused.output
    assert "E3006" in refused.stderr and f"does not exist in '{region}'" in refused.stderr
    assert calls == []
    passed = deploy(moto_endpoint, "--region", "us-east-1", "--no-execute")
    assert passed.exit_code == 0, passed.output
    assert "nothing was executed" in passed.stderr
    assert "cloudformation:CreateChangeSet" in writes(calls)  # the recorder sees the writes a deploy makes


def test_deploy_gates_on_checkov_as_lint_does(moto_endpoint: str, calls: list[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[tuple[str, ...], bool]] = []

    def record(_text: str, regions: tuple[str, ...], checkov: bool = False) -> list[Finding]:
        seen.append((regions, checkov))
        return [Finding("checkov", "CKV_AWS_43", "error", "Ensure Kinesis Stream is securely encrypted", "", 9)]

    monkeypatch.setattr(iotpipe.lint, "lint_template", record)
    result = CliRunner().invoke(main, ["deploy", "--env", "dev", "--yes", "--endpoint-url", moto_endpoint,
                                       "--region", "eu-west-1"], obj=CliContext(factory_class=RecordingFactory))
    assert result.exit_code == 1 and "CKV_AWS_43" in result.stderr
    assert seen == [(("eu-west-1",), True)]
    assert calls == []
