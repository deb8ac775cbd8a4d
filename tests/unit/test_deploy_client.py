"""The boto3 facade: AWS errors become IotpipeErrors that say what failed and what to do."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import NoCredentialsError
from botocore.stub import Stubber
from deploy_helpers import REGION, FakeClock

from iotpipe.deploy.client import DeployClient, map_error
from iotpipe.deploy.waiters import wait_change_set
from iotpipe.errors import AwsError, DeployError, IotpipeError

STACK = "iotpipe-dev"


def _client(cfn: object, clock: FakeClock | None = None) -> DeployClient:
    return DeployClient(cloudformation=cfn, region=REGION, clock=(clock or FakeClock()).clock())


def test_throttled_describe_is_an_aws_error_saying_to_retry_later() -> None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    with Stubber(cfn) as stub:
        stub.add_client_error("describe_stacks", service_error_code="Throttling", service_message="Rate exceeded",
                              http_status_code=400)
        with pytest.raises(AwsError) as excinfo:
            _client(cfn).find_stack(STACK)
    message = str(excinfo.value)
    assert "describe-stacks was throttled" in message and "Rate exceeded" in message
    assert "wait a minute" in message
    assert excinfo.value.exit_code == 1


def test_missing_stack_is_none_not_an_error() -> None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    with Stubber(cfn) as stub:
        stub.add_client_error("describe_stacks", service_error_code="ValidationError",
                              service_message=f"Stack with id {STACK} does not exist")
        assert _client(cfn).find_stack(STACK) is None


def test_access_denied_points_at_credentials_and_permissions() -> None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    with Stubber(cfn) as stub:
        stub.add_client_error("delete_stack", service_error_code="AccessDenied",
                              service_message="User is not authorized to perform: cloudformation:DeleteStack")
        with pytest.raises(AwsError, match=r"delete-stack was denied.*IAM permissions"):
            _client(cfn).delete_stack(STACK)


def test_no_credentials_says_how_to_configure_them() -> None:
    error = map_error("describe-stacks", NoCredentialsError())
    assert isinstance(error, IotpipeError) and "aws configure" in str(error)


def test_unchanged_update_refused_at_create_is_reported_as_no_changes() -> None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    with Stubber(cfn) as stub:
        stub.add_client_error("create_change_set", service_error_code="ValidationError",
                              service_message="No updates are to be performed.")
        assert _client(cfn).create_change_set(StackName=STACK, ChangeSetName="c", TemplateBody="x") is None


def test_failed_change_set_is_described_with_its_reason() -> None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    described = {"ChangeSetId": "arn:cs/1", "StackId": "arn:stack/1", "Status": "FAILED",
                 "StatusReason": "The submitted information didn't contain changes. Submit different information.",
                 "ExecutionStatus": "UNAVAILABLE", "Changes": [], "CreationTime": datetime(2026, 1, 1, tzinfo=UTC)}
    with Stubber(cfn) as stub:
        stub.add_response("describe_change_set", described)  # the waiter's poll
        stub.add_response("describe_change_set", described)  # the description
        change_set = wait_change_set(_client(cfn), "arn:cs/1", 60, lambda _: None)
    assert change_set.no_changes and change_set.changes == ()


def test_change_set_wait_is_bounded_by_the_timeout() -> None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    pending = {"ChangeSetId": "arn:cs/1", "StackId": "arn:stack/1", "Status": "CREATE_IN_PROGRESS",
               "Changes": [], "CreationTime": datetime(2026, 1, 1, tzinfo=UTC)}
    clock = FakeClock()
    messages: list[str] = []

    class Waiter:
        """The boto3 waiter, with its sleep replaced by the fake clock."""

        def __init__(self) -> None:
            self.inner = cfn.get_waiter("change_set_create_complete")

        def wait(self, **kwargs: object) -> None:
            clock.sleep(30)
            self.inner.config.delay = 0
            self.inner.wait(**{**kwargs, "WaiterConfig": {"Delay": 0, "MaxAttempts": 1}})

    with Stubber(cfn) as stub:
        for _ in range(5):
            stub.add_response("describe_change_set", pending)
        client = _client(cfn, clock)
        client.cloudformation = type("Cfn", (), {"get_waiter": lambda _self, _name: Waiter()})()
        with pytest.raises(DeployError, match=r"still CREATE_IN_PROGRESS after 60s \(--timeout\)"):
            wait_change_set(client, "arn:cs/1", 60, messages.append)
    assert messages == ["  [   30s] change set CREATE_IN_PROGRESS"]
