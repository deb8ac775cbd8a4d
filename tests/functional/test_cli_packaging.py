"""The processor as a zip artefact through the real CLI against a moto server: deploy uploads it once per code
version; the read-only commands (status, diff, outputs) write nothing to S3, counted call by call."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from click.testing import CliRunner, Result

import iotpipe.package
from iotpipe.aws import ClientFactory
from iotpipe.cli import main
from iotpipe.cli.common import CliContext
from iotpipe.package import processor_artefact

REGION = "us-east-1"
BUCKET = "iotpipe-artefacts-123456789012-us-east-1"
S3_WRITES = ("CreateBucket", "PutObject", "PutBucketEncryption", "PutPublicAccessBlock", "DeleteObject",
             "CopyObject", "CreateMultipartUpload", "UploadPart")


@dataclass(frozen=True)
class RecordingFactory(ClientFactory):
    """Clients that record every AWS operation they call, as ``(service, Operation)``."""

    calls: ClassVar[list[tuple[str, str]]] = []

    def client(self, service: str) -> Any:
        client = super().client(service)
        client.meta.events.register("before-call.*.*", self._record)
        return client

    @staticmethod
    def _record(model: Any, **_: Any) -> None:
        RecordingFactory.calls.append((model.service_model.service_name, model.name))


def s3_writes() -> Counter[str]:
    return Counter(name for service, name in RecordingFactory.calls if service == "s3" and name in S3_WRITES)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "iotpipe.toml"
    path.write_text("[env.dev]\n")
    RecordingFactory.calls.clear()
    return path


def run(endpoint: str, config: Path, *args: str) -> Result:
    argv = [*args, "--env", "dev", "--config", str(config), "--endpoint-url", endpoint, "--region", REGION]
    return CliRunner().invoke(main, argv, obj=CliContext(factory_class=RecordingFactory), catch_exceptions=False)


def objects(endpoint: str) -> list[str]:
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
    if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        return []
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def change_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new version of the processor (what a code change in handler/ gives)."""
    original = iotpipe.package.handler_source
    monkeypatch.setattr(iotpipe.package, "handler_source", lambda runtime: original(runtime) + "\n# v2\n")


def test_deploy_uploads_the_zip_once_and_the_function_runs_it(moto_endpoint: str, config: Path) -> None:
    key = processor_artefact("python3.13").key
    first = run(moto_endpoint, config, "deploy", "--yes", "--no-checkov")
    assert first.exit_code == 0, first.stderr
    assert f"uploaded {len(processor_artefact('python3.13').body):,} bytes to s3://{BUCKET}/{key}" in first.stderr
    assert "over the 51,200-byte TemplateBody limit" not in first.stderr and "templates/" not in first.stderr
    assert objects(moto_endpoint) == [key]  # the zip only: the template went inline as TemplateBody
    assert s3_writes()["PutObject"] == 1
    function = boto3.client("lambda", region_name=REGION, endpoint_url=moto_endpoint).get_function(
        FunctionName="iot-data-processor-dev")
    assert function["Configuration"]["CodeSha256"]  # moto built the function from the uploaded zip

    RecordingFactory.calls.clear()
    config.write_text("[env.dev.processor]\nmemory_mb = 512\n")
    second = run(moto_endpoint, config, "deploy", "--yes", "--no-checkov")
    assert second.exit_code == 0, second.stderr
    assert "is already there (same content, same key)" in second.stderr
    assert s3_writes() == Counter()


def test_read_only_commands_write_nothing_to_s3_on_a_new_stack(moto_endpoint: str, config: Path) -> None:
    diff = run(moto_endpoint, config, "diff")
    assert diff.exit_code == 0, diff.stderr
    assert "Add     DataProcessorFunction" in diff.stdout
    outputs = run(moto_endpoint, config, "outputs")
    assert outputs.exit_code == 1 and "does not exist" in outputs.stderr
    assert ("cloudformation", "CreateChangeSet") in RecordingFactory.calls  # the recorder was listening
    assert s3_writes() == Counter() and objects(moto_endpoint) == []


def test_read_only_commands_write_nothing_to_s3_and_diff_shows_a_code_change(moto_endpoint: str, config: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(moto_endpoint, config, "deploy", "--yes", "--no-checkov").exit_code == 0
    uploaded = objects(moto_endpoint)
    change_code(monkeypatch)
    RecordingFactory.calls.clear()
    status = run(moto_endpoint, config, "status")
    assert status.exit_code == 0, status.stderr
    assert "pending change(s)" in status.stdout
    diff = run(moto_endpoint, config, "diff")
    assert diff.exit_code == 0, diff.stderr
    assert "Modify  DataProcessorFunction  AWS::Lambda::Function" in diff.stdout
    outputs = run(moto_endpoint, config, "outputs", "--output", "json")
    assert outputs.exit_code == 0, outputs.stderr
    assert s3_writes() == Counter()
    assert objects(moto_endpoint) == uploaded  # the new version is not uploaded until deploy
    deploy = run(moto_endpoint, config, "deploy", "--yes", "--no-checkov")
    assert deploy.exit_code == 0, deploy.stderr
    assert s3_writes()["PutObject"] == 1 and len(objects(moto_endpoint)) == 2


def test_an_oversized_template_diff_never_creates_the_artefacts_bucket(moto_endpoint: str, config: Path) -> None:
    config.write_text("[env.dev.processor]\npackaging = \"inline\"\n")
    diff = run(moto_endpoint, config, "diff")
    assert diff.exit_code == 1
    assert "over CloudFormation's 51,200-byte TemplateBody limit" in diff.stderr
    assert "`iotpipe diff` never creates" in diff.stderr and "iotpipe deploy --no-execute" in diff.stderr
    assert s3_writes() == Counter() and objects(moto_endpoint) == []


def test_an_oversized_template_goes_by_url_and_status_and_diff_upload_only_a_changed_template(
        moto_endpoint: str, config: Path) -> None:
    config.write_text("[env.dev.processor]\npackaging = \"inline\"\n")
    deploy = run(moto_endpoint, config, "deploy", "--yes", "--no-checkov")
    assert deploy.exit_code == 0, deploy.stderr
    assert [key.split("/")[0] for key in objects(moto_endpoint)] == ["templates"]
    RecordingFactory.calls.clear()
    status = run(moto_endpoint, config, "status")
    assert status.exit_code == 0, status.stderr
    assert "could not compare" not in status.stderr and "is already there" in status.stderr
    assert s3_writes() == Counter()  # the deployed template's key: nothing written
    config.write_text("[env.dev.processor]\npackaging = \"inline\"\nmemory_mb = 512\n")
    diff = run(moto_endpoint, config, "diff")
    assert diff.exit_code == 0, diff.stderr
    assert "Modify  DataProcessorFunction" in diff.stdout
    assert s3_writes() == Counter({"PutObject": 1})  # the changed template, under its own key; no code
    assert len(objects(moto_endpoint)) == 2
