"""Planning: what a deploy would do, found by describing the stack and creating (never executing) a change set."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import ANY, Stubber
from deploy_helpers import REGION, SMALL_TEMPLATE, FakeClock, large_template, modified_template, moto_client
from moto import mock_aws
from moto.cloudformation.models import cloudformation_backends

from iotpipe.deploy.client import DeployClient
from iotpipe.deploy.execute import discard_plan, execute_plan
from iotpipe.deploy.plan import (
    DeployRequest,
    TemplateSource,
    artefact_bucket_name,
    change_set_kwargs,
    merge_pairs,
    parse_assignments,
    plan_deploy,
    upload_artefacts,
)
from iotpipe.deploy.waiters import wait_until_settled
from iotpipe.errors import ConfigError, DeployError, TemplateError
from iotpipe.package import Artefact

STACK = "iotpipe-dev"


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def request(template: str = SMALL_TEMPLATE, **kwargs: object) -> DeployRequest:
    return DeployRequest(stack_name=STACK, template_body=template, **kwargs)  # type: ignore[arg-type]


def _set_status(status: str) -> None:
    backend = cloudformation_backends["123456789012"][REGION]
    for stack in backend.stacks.values():
        if stack.name == STACK:
            stack.status = status


def test_merge_pairs_overrides_config_key_by_key() -> None:
    merged = merge_pairs((("Owner", "a"), ("CostCenter", "7")), parse_assignments(["Owner=b", "New=x=y"], "--tag"))
    assert merged == (("CostCenter", "7"), ("New", "x=y"), ("Owner", "b"))


def test_assignment_without_equals_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignments(["Owner"], "--tag")


@pytest.mark.usefixtures("aws")
def test_create_plan_lists_every_resource_as_add() -> None:
    client = moto_client()
    plan = plan_deploy(client, request())
    assert plan.action == "create"
    assert {(c.action, c.logical_id) for c in plan.changes} == {
        ("Add", "RawDataBucket"), ("Add", "DataProcessorDeadLetterQueue")}
    assert plan.change_set_id and plan.source.body == SMALL_TEMPLATE


def plan_source() -> TemplateSource:
    return TemplateSource(body=SMALL_TEMPLATE)


def test_create_change_set_has_named_iam_capability_and_on_failure() -> None:
    kwargs = change_set_kwargs(request(on_failure="do-nothing", tags=(("Owner", "a"),)),
                               plan_source(), "CREATE")
    assert "CAPABILITY_NAMED_IAM" in kwargs["Capabilities"]
    assert kwargs["OnStackFailure"] == "DO_NOTHING"
    assert kwargs["Tags"] == [{"Key": "Owner", "Value": "a"}]
    assert "OnStackFailure" not in change_set_kwargs(request(), plan_source(), "UPDATE")


@pytest.mark.usefixtures("aws")
def test_unchanged_stack_plans_no_changes() -> None:
    client = moto_client()
    execute_plan(client, plan_deploy(client, request()))
    plan = plan_deploy(client, request())
    assert plan.action == "none" and not plan.has_changes and plan.changes == ()


@pytest.mark.usefixtures("aws")
def test_changed_template_plans_a_modify_of_that_resource() -> None:
    client = moto_client()
    execute_plan(client, plan_deploy(client, request()))
    plan = plan_deploy(client, request(modified_template()))
    assert plan.action == "update"
    assert [(c.action, c.logical_id) for c in plan.changes] == [("Modify", "DataProcessorDeadLetterQueue")]


@pytest.mark.usefixtures("aws")
def test_diff_of_new_stack_leaves_no_stack_behind() -> None:
    client = moto_client()
    plan = plan_deploy(client, request())
    discard_plan(client, plan)
    assert client.find_stack(STACK) is None
    cfn = boto3.client("cloudformation", region_name=REGION)
    assert cfn.list_change_sets(StackName=STACK).get("Summaries", []) == []


@pytest.mark.usefixtures("aws")
def test_rollback_complete_plans_a_recreate_without_touching_the_stack() -> None:
    client = moto_client()
    execute_plan(client, plan_deploy(client, request()))
    _set_status("ROLLBACK_COMPLETE")
    plan = plan_deploy(client, request())
    assert plan.action == "recreate"
    assert {c.logical_id for c in plan.changes} == {"RawDataBucket", "DataProcessorDeadLetterQueue"}
    stack = client.find_stack(STACK)
    assert stack is not None and stack.status == "ROLLBACK_COMPLETE"


@pytest.mark.parametrize(("status", "hint"), [
    ("UPDATE_ROLLBACK_FAILED", "continue-update-rollback --stack-name iotpipe-dev"),
    ("DELETE_FAILED", "iotpipe destroy --env dev"),
    ("CREATE_FAILED", "iotpipe destroy --env dev"),
])
@pytest.mark.usefixtures("aws")
def test_broken_states_are_refused_with_the_fix(status: str, hint: str) -> None:
    client = moto_client()
    execute_plan(client, plan_deploy(client, request()))
    _set_status(status)
    with pytest.raises(DeployError, match=status) as excinfo:
        plan_deploy(client, request())
    assert hint in str(excinfo.value)


@pytest.mark.usefixtures("aws")
def test_in_progress_stack_is_waited_for_then_refused_at_the_timeout() -> None:
    clock = FakeClock()
    client = moto_client(clock)
    execute_plan(client, plan_deploy(client, request()))
    _set_status("UPDATE_IN_PROGRESS")
    messages: list[str] = []
    with pytest.raises(DeployError, match=r"still in progress.*not racing"):
        plan_deploy(client, request(timeout_minutes=1), messages.append)
    assert clock.t >= 60 and len(clock.sleeps) <= 10
    assert any("UPDATE_IN_PROGRESS" in m and "waiting" in m for m in messages)


@pytest.mark.usefixtures("aws")
def test_in_progress_stack_that_settles_is_then_planned() -> None:
    client = moto_client()
    execute_plan(client, plan_deploy(client, request()))
    _set_status("UPDATE_IN_PROGRESS")
    calls = {"n": 0}

    def settle(_seconds: float) -> None:
        calls["n"] += 1
        _set_status("UPDATE_COMPLETE")

    client.clock = type(client.clock)(now=client.clock.now, sleep=settle)
    stack = wait_until_settled(client, STACK, 600)
    assert stack is not None and stack.status == "UPDATE_COMPLETE" and calls["n"] == 1


@pytest.mark.usefixtures("aws")
def test_unknown_parameter_is_a_config_error_naming_the_declared_ones() -> None:
    with pytest.raises(ConfigError, match=r"Colour.*declares AlarmEmail, EnvironmentSuffix"):
        plan_deploy(moto_client(), request(parameters=(("Colour", "red"),)))


@pytest.mark.usefixtures("aws")
def test_not_a_template_is_a_template_error() -> None:
    with pytest.raises(TemplateError):
        plan_deploy(moto_client(), request("just: [a, list]\n"))


@pytest.mark.usefixtures("aws")
def test_large_template_goes_through_a_private_encrypted_artefact_bucket() -> None:
    client = moto_client()
    messages: list[str] = []
    plan = plan_deploy(client, request(large_template()), messages.append)
    bucket = artefact_bucket_name("123456789012", REGION)
    assert plan.source.url and plan.source.body is None and plan.source.bucket == bucket
    s3 = boto3.client("s3", region_name=REGION)
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 1 and keys[0].startswith(f"templates/{STACK}/")
    assert any("created artefacts bucket" in m for m in messages)
    # second need: the bucket is reused, not created again
    discard_plan(client, plan)
    messages.clear()
    plan_deploy(client, request(large_template()), messages.append)
    assert not any("created artefacts bucket" in m for m in messages)


@pytest.mark.usefixtures("aws")
def test_small_template_is_sent_inline() -> None:
    plan = plan_deploy(moto_client(), request())
    assert plan.source.url is None
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []


@pytest.mark.usefixtures("aws")
def test_termination_protection_change_is_planned_from_config() -> None:
    client: DeployClient = moto_client()
    assert plan_deploy(client, request(termination_protection=True)).termination_protection_change is True
    assert plan_deploy(client, request()).termination_protection_change is None


ACCOUNT = "123456789012"
IDENTITY = {"Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:user/deployer", "UserId": "AIDAEXAMPLE"}
ARTEFACT = Artefact(key="processor/abc.zip", body=b"zip")


def _owned_s3(head_bucket_error: str | None) -> tuple[DeployClient, Stubber]:
    """A client whose every S3 call is checked: each must name ACCOUNT as ExpectedBucketOwner."""
    sts = boto3.client("sts", region_name=REGION)
    sts_stub = Stubber(sts)
    sts_stub.add_response("get_caller_identity", IDENTITY)
    sts_stub.activate()
    s3 = boto3.client("s3", region_name=REGION)
    stub = Stubber(s3)
    bucket = artefact_bucket_name(ACCOUNT, REGION)
    mine = {"Bucket": bucket, "ExpectedBucketOwner": ACCOUNT}
    if head_bucket_error:
        stub.add_client_error("head_bucket", head_bucket_error, http_status_code=int(head_bucket_error),
                              expected_params=mine)
    else:
        stub.add_client_error("head_bucket", "404", http_status_code=404, expected_params=mine)
        stub.add_response("create_bucket", {}, {"Bucket": bucket})
        for operation in ("put_public_access_block", "put_bucket_encryption", "put_bucket_ownership_controls",
                          "put_bucket_lifecycle_configuration"):
            stub.add_response(operation, {}, {**mine, **{key: ANY for key in {
                "put_public_access_block": ["PublicAccessBlockConfiguration"],
                "put_bucket_encryption": ["ServerSideEncryptionConfiguration"],
                "put_bucket_ownership_controls": ["OwnershipControls"],
                "put_bucket_lifecycle_configuration": ["LifecycleConfiguration"]}[operation]}})
        stub.add_client_error("head_object", "404", http_status_code=404,
                              expected_params={**mine, "Key": ARTEFACT.key})
        stub.add_response("put_object", {}, {**mine, "Key": ARTEFACT.key, "Body": ARTEFACT.body,
                                             "ServerSideEncryption": "AES256"})
    return DeployClient(cloudformation=None, s3=s3, sts=sts, region=REGION), stub


def test_every_artefact_bucket_call_names_the_account_as_expected_owner() -> None:
    client, stub = _owned_s3(None)
    with stub:
        assert upload_artefacts(client, [ARTEFACT]) is True
    stub.assert_no_pending_responses()


def test_an_artefact_bucket_owned_by_another_account_is_refused_before_any_upload() -> None:
    # HeadBucket with ExpectedBucketOwner answers 403 when another account owns the (guessable) name.
    client, stub = _owned_s3("403")
    with stub, pytest.raises(DeployError, match=f"exists but account {ACCOUNT} does not own it.*Nothing was "
                                                "uploaded"):
        upload_artefacts(client, [ARTEFACT])
    stub.assert_no_pending_responses()  # no create_bucket, no put_object were asked for


def test_a_bucket_name_taken_between_head_and_create_is_refused() -> None:
    sts = boto3.client("sts", region_name=REGION)
    sts_stub = Stubber(sts)
    sts_stub.add_response("get_caller_identity", IDENTITY)
    s3 = boto3.client("s3", region_name=REGION)
    stub = Stubber(s3)
    stub.add_client_error("head_bucket", "404", http_status_code=404)
    stub.add_client_error("create_bucket", "BucketAlreadyExists", http_status_code=409)
    client = DeployClient(cloudformation=None, s3=s3, sts=sts, region=REGION)
    with sts_stub, stub, pytest.raises(DeployError, match="does not own it"):
        upload_artefacts(client, [ARTEFACT])
