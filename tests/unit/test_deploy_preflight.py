"""Preflight: what AWS refuses later (moto accepts it all) is refused before the change set.

ListImports and GetAccountSettings are answered through botocore's Stubber where moto cannot produce the case.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from cfnlint.decode import decode_str

from iotpipe.config import build_config
from iotpipe.deploy.preflight import (
    account_concurrency,
    changing_outputs,
    check_account_concurrency,
    check_environment_suffix,
    check_exports,
    check_replacements,
    importers,
    replacements,
)
from iotpipe.errors import AwsError, ConfigError, DeployError
from iotpipe.render import render_template

SEED = Path(__file__).resolve().parents[1] / "data" / "seed_TapStack.yml"


def decoded(text: str) -> dict[str, Any]:
    template, errors = decode_str(text)
    assert not errors, errors
    return json.loads(json.dumps(template))


@pytest.fixture(scope="module")
def seed() -> dict[str, Any]:
    return decoded(SEED.read_text(encoding="utf-8"))


def ours(**processor: Any) -> dict[str, Any]:
    return decoded(render_template(build_config({"env": {"dev": {"processor": processor}}}, "dev", {})))


# ---------------------------------------------------------------- EnvironmentSuffix

def test_environment_suffix_must_be_the_env() -> None:
    check_environment_suffix([("EnvironmentSuffix", "dev"), ("AlarmEmail", "")], "dev")
    with pytest.raises(ConfigError, match="EnvironmentSuffix='prod' differs from --env dev"):
        check_environment_suffix([("EnvironmentSuffix", "prod")], "dev")
    with pytest.raises(ConfigError, match="differs"):
        check_environment_suffix([("EnvironmentSuffix", "Dev")], "dev")


# ---------------------------------------------------------------- replacements

def test_seed_mapping_replacement_is_refused_with_the_fix(seed: dict[str, Any]) -> None:
    # StartingPosition is create-only (resource schema); Lambda refuses a second mapping for the same stream and
    # function ("The event source arn ... and function ... provided mapping already exists", AWS SAM issue 1320).
    with pytest.raises(DeployError) as caught:
        check_replacements(seed, ours(), "dev")
    message = str(caught.value)
    assert "KinesisEventSourceMapping" in message and "provided mapping already exists" in message
    assert 'starting_position = "LATEST" in [env.dev.processor]' in message


def test_keeping_latest_replaces_only_renamed_resources(seed: dict[str, Any]) -> None:
    found = {r.logical_id: r for r in check_replacements(seed, ours(starting_position="LATEST"), "dev")}
    assert set(found) == {"RawDataBucket", "SensorDataTable", "DataProcessorRole", "IoTRuleRole"}
    assert found["SensorDataTable"].properties == ("TableName", "KeySchema")
    assert all(not r.refusal for r in found.values())


def test_a_custom_named_resource_replaced_under_its_name_is_refused() -> None:
    # "CloudFormation cannot update a stack when a custom-named resource requires replacing"
    old = {"Resources": {"T": {"Type": "AWS::DynamoDB::Table", "Properties": {
        "TableName": "readings", "KeySchema": [{"AttributeName": "a", "KeyType": "HASH"}]}}}}
    new = {"Resources": {"T": {"Type": "AWS::DynamoDB::Table", "Properties": {
        "TableName": "readings", "KeySchema": [{"AttributeName": "b", "KeyType": "HASH"}]}}}}
    [item] = replacements(old, new)
    assert "custom-named" in item.refusal
    renamed = {"Resources": {"T": {**new["Resources"]["T"], "Properties": {
        **new["Resources"]["T"]["Properties"], "TableName": "readings2"}}}}
    assert [r.refusal for r in replacements(old, renamed)] == [""]


def test_an_unchanged_template_replaces_nothing() -> None:
    template = ours()
    assert replacements(template, template) == ()


# ---------------------------------------------------------------- exports

def test_seed_exports_whose_values_change(seed: dict[str, Any]) -> None:
    wanted = ours(starting_position="LATEST")
    changing = changing_outputs(seed, wanted, replacements(seed, wanted))
    # RawDataBucket and SensorDataTable are replaced under new names; IoTEndpoint becomes the real endpoint.
    assert {"RawDataBucketName", "SensorDataTableName", "IoTEndpoint"} <= set(changing)
    assert "KinesisStreamName" not in changing and "DataProcessorFunctionName" not in changing


def stubbed_cloudformation() -> tuple[Any, Stubber]:
    client = boto3.client("cloudformation", region_name="us-east-1")
    return client, Stubber(client)


def test_an_imported_changing_export_is_refused_naming_the_importers() -> None:
    client, stub = stubbed_cloudformation()
    stub.add_response("list_imports", {"Imports": ["analytics"], "NextToken": "t"},
                      {"ExportName": "iot-manufacturing-dev-RawDataBucket"})
    stub.add_response("list_imports", {"Imports": ["reports"]},
                      {"ExportName": "iot-manufacturing-dev-RawDataBucket", "NextToken": "t"})
    stub.add_client_error("list_imports", "ValidationError",
                          "Export 'iot-manufacturing-dev-SensorDataTable' is not imported by any stack.")
    outputs = [{"OutputKey": "RawDataBucketName", "ExportName": "iot-manufacturing-dev-RawDataBucket"},
               {"OutputKey": "SensorDataTableName", "ExportName": "iot-manufacturing-dev-SensorDataTable"},
               {"OutputKey": "KinesisStreamName", "ExportName": "iot-manufacturing-dev-KinesisStream"}]
    with stub, pytest.raises(DeployError) as caught:
        check_exports(client, outputs, ["RawDataBucketName", "SensorDataTableName"])
    assert "iot-manufacturing-dev-RawDataBucket (output RawDataBucketName) is imported by analytics, reports" \
        in str(caught.value)
    assert "SensorDataTable" not in str(caught.value)


def test_list_imports_denied_is_an_error_that_says_which_permission() -> None:
    client, stub = stubbed_cloudformation()
    stub.add_client_error("list_imports", "AccessDenied", "not authorized to perform: cloudformation:ListImports")
    with stub, pytest.raises(AwsError, match="allow cloudformation:ListImports"):
        importers(client, "x-RawDataBucket")


# ---------------------------------------------------------------- account concurrency

def stubbed_lambda(limit: int, unreserved: int, current: int | None) -> tuple[Any, Stubber]:
    client = boto3.client("lambda", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_response("get_account_settings", {"AccountLimit": {
        "ConcurrentExecutions": limit, "UnreservedConcurrentExecutions": unreserved}, "AccountUsage": {}})
    if current is None:
        stub.add_client_error("get_function_concurrency", "ResourceNotFoundException", "Function not found")
    else:
        stub.add_response("get_function_concurrency", {"ReservedConcurrentExecutions": current})
    return client, stub


def test_a_new_account_with_limit_10_cannot_reserve_and_is_told_which_quota() -> None:
    # Lambda guide: "You can reserve up to the Unreserved account concurrency value minus 100"; new accounts
    # can start at 10, where the deploy fails with "decreases account's UnreservedConcurrentExecution below its
    # minimum value".
    client, stub = stubbed_lambda(10, 10, None)
    with stub, pytest.raises(DeployError) as caught:
        check_account_concurrency(client, "iot-data-processor-dev", 10)
    message = str(caught.value)
    assert "Concurrent executions (L-B99A9384) to at least 110" in message
    assert "reserved_concurrency = 0" in message


def test_a_standard_account_fits_and_an_existing_reservation_counts() -> None:
    client, stub = stubbed_lambda(1000, 1000, None)
    with stub:
        assert check_account_concurrency(client, "f", 10).allowed == 900
    # 110 limit, 10 already reserved by this very function: unreserved 100, and re-reserving 10 still fits.
    client, stub = stubbed_lambda(110, 100, 10)
    with stub:
        assert account_concurrency(client, "f", 10).ok
    client, stub = stubbed_lambda(110, 100, 0)
    with stub:
        assert not account_concurrency(client, "f", 10).ok
