"""Issue 12: the CLI refuses early, in one line, never with a traceback; and it leaves nothing half-done.

Tried as a new user would: endpoints that are not AWS, a malformed config, bad tags and names, revoking things
iotpipe does not manage, destroying a stack whose device policy is still attached.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result

from iotpipe.cli import main
from iotpipe.cli.observe import rows_period

REGION = "us-east-1"
STACK = "iotpipe-dev"
SMALL_STACK = {
    "Resources": {
        "SensorDataTable": {"Type": "AWS::DynamoDB::Table", "Properties": {
            "TableName": "SensorReadings-dev", "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": n, "AttributeType": "S"}
                                     for n in ("deviceId", "sk", "anomalyDay", "anomalySk")],
            "KeySchema": [{"AttributeName": "deviceId", "KeyType": "HASH"},
                          {"AttributeName": "sk", "KeyType": "RANGE"}],
            "GlobalSecondaryIndexes": [{
                "IndexName": "AnomaliesByDay", "Projection": {"ProjectionType": "ALL"},
                "KeySchema": [{"AttributeName": "anomalyDay", "KeyType": "HASH"},
                              {"AttributeName": "anomalySk", "KeyType": "RANGE"}]}]}},
        "DataProcessorLogGroup": {"Type": "AWS::Logs::LogGroup",
                                  "Properties": {"LogGroupName": "/aws/lambda/iot-data-processor-dev"}},
        "SensorDevicePolicy": {"Type": "AWS::IoT::Policy", "Properties": {
            "PolicyName": "SensorDevicePolicy-dev",
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect",
                 "Resource": "arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"}]}}},
    },
    "Outputs": {
        "SensorDataTableName": {"Value": {"Ref": "SensorDataTable"}},
        "DataProcessorLogGroupName": {"Value": {"Ref": "DataProcessorLogGroup"}},
        "SensorDevicePolicyName": {"Value": "SensorDevicePolicy-dev"},
        "AnomalyIndexName": {"Value": "AnomaliesByDay"},
        "EnvironmentSuffix": {"Value": "dev"},
    },
}


def invoke(*argv: str) -> Result:
    return CliRunner().invoke(main, list(argv))


def aws(service: str, endpoint: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


def one_line_error(result: Result, code: int) -> str:
    """The result failed with ``code`` and a single ``Error:`` line on stderr (after progress lines)."""
    assert result.exit_code == code, (result.exit_code, result.stderr, result.stdout)
    assert "Traceback" not in result.stderr and "<html" not in result.stderr.lower()
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "<html" not in result.stdout.lower()
    return errors[0]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- endpoints that are not AWS

class HtmlServer:
    """Any HTTP server: answers every request with an HTML page, as a web server on the wrong port would."""

    def __init__(self, status: int) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length", "0") or 0)
                self.rfile.read(length)
                body = (b"<!doctype html><html><head><title>Welcome to nginx!</title></head><body>"
                        + b"<p>hello</p>" * 200 + b"</body></html>")
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *_args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


@pytest.fixture(params=[200, 404, 500])
def html_endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    server = HtmlServer(request.param)
    server.thread.start()
    try:
        yield server.url
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(timeout=5)


@pytest.mark.parametrize("command", [
    ["readings", "press-1"], ["anomalies"], ["logs"], ["metrics"], ["device", "register", "press-1"],
    ["device", "list"], ["outputs"], ["status", "--no-check"]])
@pytest.mark.usefixtures("workdir")
def test_an_endpoint_that_is_not_aws_is_one_line(html_endpoint: str, command: list[str]) -> None:
    result = invoke(*command, "--env", "dev", "--endpoint-url", html_endpoint, "--region", REGION)
    line = one_line_error(result, 1)
    assert "endpoint" in line and "--endpoint-url" in line, line
    assert "<p>" not in result.stderr and len(result.stderr) < 1000


@pytest.mark.usefixtures("workdir")
def test_an_endpoint_without_a_scheme_is_refused_before_any_call() -> None:
    result = invoke("readings", "press-1", "--env", "dev", "--endpoint-url", "127.0.0.1:4566")
    line = one_line_error(result, 2)  # a usage error (README: exit 2)
    assert "--endpoint-url '127.0.0.1:4566' is not an http(s) URL" in line
    assert "http://127.0.0.1:4566" in line


@pytest.mark.parametrize("region", ["us east 1", "US-EAST-1", "useast1", "--"])
@pytest.mark.usefixtures("workdir")
def test_a_bad_region_is_a_usage_error(region: str) -> None:
    result = invoke("outputs", "--env", "dev", "--region", region, "--endpoint-url", "http://127.0.0.1:9")
    assert "is not an AWS region name" in one_line_error(result, 2)


# ---------------------------------------------------------------- the config file

@pytest.mark.parametrize(("content", "expected"), [
    (b"[env.dev]\nstack_name = \"caf\xe9\"\n", "is not UTF-8 text"),
    (b"[defaults.thresholds.temperature]\nmax = " + b"9" * 400 + b"\n", "400-digit number is out of range"),
    (b"[defaults.thresholds.temperature]\nmax = " + b"9" * 5000 + b"\n", "has a value Python cannot read"),
    (b"[env.dev.processor]\nbatch_size = " + b"9" * 400 + b"\n", "out of range"),
    (b'[env.dev]\nstack_name = "bad name!"\n', "is not a CloudFormation stack name"),
    (b'[env.dev]\nregion = "mars-1"\n', "is not an AWS region name"),
    (b'[defaults.tags]\n"aws:owner" = "me"\n', "the aws: prefix is reserved"),
    (b'[defaults.tags]\nOwner = ""\n', "the value is empty"),
])
def test_a_bad_config_file_is_a_config_error(workdir: Path, content: bytes, expected: str) -> None:
    (workdir / "iotpipe.toml").write_bytes(content)
    result = invoke("render", "--env", "dev")
    assert expected in one_line_error(result, 2)


def test_which_config_was_read_is_said_on_stderr(workdir: Path) -> None:
    result = invoke("render", "--env", "dev")
    assert result.exit_code == 0
    assert "config: no iotpipe.toml here (nor --config): built-in defaults for env dev" in result.stderr
    (workdir / "iotpipe.toml").write_text("[env.dev]\n[env.prod]\n")
    assert "config: iotpipe.toml [env.dev]" in invoke("render", "--env", "dev").stderr
    typo = invoke("render", "--env", "prdo", "--new-env")
    assert "config: iotpipe.toml, no [env.prdo] section" in typo.stderr


@pytest.mark.parametrize("command", [["render"], ["deploy", "--yes"], ["diff"], ["cost", "--devices", "1"]])
def test_an_env_the_config_file_does_not_name_is_refused(workdir: Path, command: list[str]) -> None:
    # A typo such as --env prdo rendered with [defaults] (a note on stderr) and deploy created a new stack.
    (workdir / "iotpipe.toml").write_text("[env.dev]\n[env.prod]\n")
    result = invoke(*command, "--env", "prdo", "--endpoint-url", "http://127.0.0.1:9", "--region", REGION) \
        if command[0] in ("deploy", "diff") else invoke(*command, "--env", "prdo")
    assert "env 'prdo' is not a section of the config file (it has dev, prod)" in one_line_error(result, 2)
    assert "--new-env" in result.stderr and result.stdout == ""


def test_new_env_asks_for_an_env_without_a_section(workdir: Path) -> None:
    (workdir / "iotpipe.toml").write_text("[env.dev]\n[env.prod]\n")
    result = invoke("render", "--env", "staging", "--new-env")
    assert result.exit_code == 0 and "Default: staging" in result.stdout


# ---------------------------------------------------------------- deploy input, refused before anything is made

@pytest.mark.parametrize(("args", "expected"), [
    (["--tag", "aws:cloudformation=x"], "the aws: prefix is reserved"),
    (["--tag", "Owner="], "the value is empty"),
    (["--tag", "Owner=" + "x" * 257], "the value has 257 characters; at most 256"),
    (["--tag", "K" * 129 + "=v"], "use 1 to 128 characters"),
    (["--param", "EnvironmentSuffix=prod"], "EnvironmentSuffix='prod' differs from --env dev"),
    (["--param", "Foo=1"], "not declared by the template"),
])
@pytest.mark.usefixtures("workdir")
def test_bad_deploy_input_is_refused_before_any_aws_call(moto_endpoint: str, args: list[str],
                                                         expected: str) -> None:
    result = invoke("deploy", "--yes", *args, "--env", "dev", "--endpoint-url", moto_endpoint, "--region", REGION)
    assert expected in one_line_error(result, 2)
    assert aws("s3", moto_endpoint).list_buckets()["Buckets"] == []
    assert aws("cloudformation", moto_endpoint).list_stacks()["StackSummaries"] == []


def test_a_bad_stack_name_uploads_nothing(moto_endpoint: str, workdir: Path) -> None:
    (workdir / "iotpipe.toml").write_text('[env.dev]\nstack_name = "bad name!"\n')
    result = invoke("deploy", "--yes", "--env", "dev", "--endpoint-url", moto_endpoint, "--region", REGION)
    assert "is not a CloudFormation stack name" in one_line_error(result, 2)
    assert aws("s3", moto_endpoint).list_buckets()["Buckets"] == []


# ---------------------------------------------------------------- devices

@pytest.fixture
def small_stack(moto_endpoint: str, workdir: Path) -> str:  # noqa: ARG001 (a fixture: the commands run in workdir)
    aws("cloudformation", moto_endpoint).create_stack(StackName=STACK, TemplateBody=json.dumps(SMALL_STACK))
    return moto_endpoint


def on(endpoint: str, *argv: str) -> Result:
    return invoke(*argv, "--env", "dev", "--endpoint-url", endpoint, "--region", REGION)


def test_revoke_refuses_things_iotpipe_does_not_manage_in_this_env(small_stack: str) -> None:
    iot = aws("iot", small_stack)
    iot.create_thing(thingName="line9-prod", attributePayload={"attributes": {
        "environment": "prod", "managedBy": "iotpipe"}})
    iot.create_thing(thingName="hvac-1")
    refused = on(small_stack, "device", "revoke", "line9-prod", "--yes")
    assert "belongs to environment 'prod', not 'dev'" in one_line_error(refused, 1)
    unmanaged = on(small_stack, "device", "revoke", "hvac-1", "-y")
    assert "was not registered by iotpipe" in one_line_error(unmanaged, 1)
    assert {t["thingName"] for t in iot.list_things()["things"]} == {"line9-prod", "hvac-1"}
    registered = on(small_stack, "device", "register", "press-7")
    assert registered.exit_code == 0, registered.stderr
    revoked = on(small_stack, "device", "revoke", "press-7", "-y")
    assert revoked.exit_code == 0, revoked.stderr
    assert {t["thingName"] for t in iot.list_things()["things"]} == {"line9-prod", "hvac-1"}


def test_an_id_with_a_colon_is_a_valid_device(small_stack: str) -> None:
    # ':' is a thing-name character, and the processor stores such ids.
    result = on(small_stack, "readings", "line:7")
    assert result.exit_code == 0, result.stderr
    assert "no readings found" in result.stderr


@pytest.mark.usefixtures("workdir")
def test_a_missing_stack_names_the_real_command(moto_endpoint: str) -> None:
    line = one_line_error(on(moto_endpoint, "readings", "press-1"), 1)
    assert "<env>" not in line and "iotpipe deploy" in line


def test_empty_results_say_what_was_not_found(small_stack: str) -> None:
    assert "no anomalies found" in on(small_stack, "anomalies").stderr
    logs = on(small_stack, "logs")
    assert logs.exit_code == 0 and "no log lines since 10m" in logs.stderr


def test_destroy_refuses_while_devices_are_registered_then_revokes_them(small_stack: str) -> None:
    # DeletePolicy: "A policy cannot be deleted if it has non-default versions or it is attached to any
    # certificate"; `device register` attaches it, so the stack would end DELETE_FAILED.
    assert on(small_stack, "device", "register", "press-7").exit_code == 0
    refused = on(small_stack, "destroy", "--yes")
    line = one_line_error(refused, 1)
    assert "device(s) press-7" in line and "--revoke-devices" in line
    cloudformation = aws("cloudformation", small_stack)
    assert cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert "no buckets to empty" in refused.stderr or "bucket(s) none" not in refused.stderr

    done = on(small_stack, "destroy", "--yes", "--revoke-devices")
    assert done.exit_code == 0, done.stderr
    assert "revoked 1 device(s) (press-7)" in done.stderr
    assert "it has no buckets to empty" in done.stderr and "bucket(s) none" not in done.stderr
    assert aws("iot", small_stack).list_things()["things"] == []
    assert [s for s in cloudformation.list_stacks()["StackSummaries"]
            if s["StackStatus"] != "DELETE_COMPLETE"] == []


# ---------------------------------------------------------------- metrics rows

@pytest.mark.parametrize("span_s", [60, 3600, 86400, 7 * 86400])
def test_metrics_never_return_more_than_60_rows(span_s: int) -> None:
    for until in (1_700_000_000_000, 1_700_000_000_000 + 30_500, 1_700_000_059_999):
        since = until - span_s * 1000
        period = rows_period(since, until)
        rows = until // (period * 1000) - since // (period * 1000) + 1
        assert period % 60 == 0 and rows <= 60, (span_s, until, period, rows)
