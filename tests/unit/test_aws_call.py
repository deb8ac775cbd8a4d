"""One AWS call wrapper: botocore errors become AwsError naming the service, operation, code and AWS's message."""

from __future__ import annotations

import ast
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError, NoCredentialsError
from botocore.stub import Stubber

import iotpipe
from iotpipe.aws import aws_call, call_aws
from iotpipe.errors import AwsError


def test_a_client_error_names_service_operation_code_and_message() -> None:
    iot = boto3.client("iot", region_name="eu-west-1")
    with Stubber(iot) as stub:
        stub.add_client_error("describe_thing", service_error_code="ResourceNotFoundException",
                              service_message="Thing press-1 cannot be found")
        with pytest.raises(AwsError) as raised:
            call_aws("iot", "describe-thing", iot.describe_thing, thingName="press-1")
    error = raised.value
    assert str(error) == "iot describe-thing failed: ResourceNotFoundException: Thing press-1 cannot be found"
    assert (error.service, error.operation, error.code, error.aws_message) == (
        "iot", "describe-thing", "ResourceNotFoundException", "Thing press-1 cannot be found")


def test_access_denied_and_throttling_say_what_to_do() -> None:
    s3 = boto3.client("s3", region_name="eu-west-1")
    with Stubber(s3) as stub:
        stub.add_client_error("list_buckets", service_error_code="AccessDenied", service_message="no")
        stub.add_client_error("list_buckets", service_error_code="SlowDown", service_message="slow")
        with pytest.raises(AwsError, match=r"^s3 list-buckets was denied \(AccessDenied: no\).*--profile"):
            call_aws("s3", "list-buckets", s3.list_buckets)
        with pytest.raises(AwsError, match=r"^s3 list-buckets was throttled.*wait a minute"):
            call_aws("s3", "list-buckets", s3.list_buckets)


@pytest.mark.parametrize(("exc", "fix"), [
    (NoCredentialsError(), "run `aws configure`, pass --profile, or export AWS_PROFILE"),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), "check --endpoint-url, --region and the network"),
])
def test_credential_and_endpoint_problems_name_the_fix(exc: Exception, fix: str) -> None:
    with pytest.raises(AwsError) as raised, aws_call("sts", "get-caller-identity"):
        raise exc
    assert str(raised.value).startswith("sts get-caller-identity: ") and fix in str(raised.value)
    assert raised.value.code == ""


def test_other_exceptions_pass_through_unchanged() -> None:
    with pytest.raises(KeyError), aws_call("iot", "list-things"):
        raise KeyError("thingName")


def test_library_modules_do_not_handle_botocore_errors_themselves() -> None:
    """botocore's exceptions are caught in aws.py only: every call site goes through aws_call."""
    package = Path(iotpipe.__file__).parent
    catching = set()
    for module in package.rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None and any(
                    name in ast.unparse(node.type) for name in ("ClientError", "BotoCoreError")):
                catching.add(str(module.relative_to(package)))
    assert catching <= {"aws.py"}, catching
