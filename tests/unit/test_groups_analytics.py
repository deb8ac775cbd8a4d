"""The analytics group: Glue tables with partition projection over the archive keys, the Athena workgroup, the
results bucket and the query policy, asserted on the rendered template."""

from __future__ import annotations

import re
from typing import Any

import pytest
from cfnlint.decode import decode_str

from iotpipe.config import build_config
from iotpipe.render import render_template

# The table properties Athena documents for partition projection (partition-projection-setting-up.html and
# partition-projection-supported-types.html): per column type/range/digits, the switch and the path template.
DOCUMENTED_INTEGER_KEYS = {"type", "range", "interval", "digits"}
ARCHIVE_KEY = re.compile(r"^(raw|quarantine)/year=(\d{4})/month=(\d{2})/day=(\d{2})/hour=(\d{2})/[^/]+/[^/]+$")


def _template(**sections: Any) -> dict[str, Any]:
    text = render_template(build_config({"defaults": sections} if sections else {}, "dev", {}))
    template, matches = decode_str(text)
    assert not matches
    return template


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    return _template()["Resources"]


def _projected_location(parameters: dict[str, Any], year: int, month: int, day: int, hour: int) -> str:
    """What Athena does with storage.location.template: substitute each partition column's formatted value."""
    pattern, variables = parameters["storage.location.template"]["Fn::Sub"]
    assert variables == {"Bucket": {"Ref": "RawDataBucket"}}  # the storage group's handle
    template = pattern.replace("${Bucket}", "bucket")
    values = {}
    for column, value in (("year", year), ("month", month), ("day", day), ("hour", hour)):
        digits = int(parameters.get(f"projection.{column}.digits", "1"))
        low, high = (int(v) for v in parameters[f"projection.{column}.range"].split(","))
        assert low <= value <= high, f"{column} {value} outside the projected range"
        values[column] = f"{value:0{digits}d}"
    return template.replace("${!year}", values["year"]).replace("${!month}", values["month"]).replace(
        "${!day}", values["day"]).replace("${!hour}", values["hour"])


@pytest.mark.parametrize("logical_id,prefix", [("RawArchiveTable", "raw"), ("QuarantineArchiveTable", "quarantine")])
def test_projection_covers_the_processor_archive_keys(resources: dict[str, Any], logical_id: str,
                                                      prefix: str) -> None:
    table = resources[logical_id]["Properties"]["TableInput"]
    parameters = table["Parameters"]
    assert parameters["projection.enabled"] == "true"
    assert [key["Name"] for key in table["PartitionKeys"]] == ["year", "month", "day", "hour"]
    for column in ("year", "month", "day", "hour"):
        assert parameters[f"projection.{column}.type"] == "integer"
        used = {key.split(".")[2] for key in parameters if key.startswith(f"projection.{column}.")}
        assert used <= DOCUMENTED_INTEGER_KEYS
    # A key the processor writes (batch_suffix) falls under the projected location of its own partition values.
    key = f"{prefix}/year=2026/month=03/day=07/hour=05/shardId-000000000001/49-50.jsonl.gz"
    year, month, day, hour = (int(v) for v in ARCHIVE_KEY.match(key).groups()[1:])  # type: ignore[union-attr]
    location = _projected_location(parameters, year, month, day, hour)
    assert f"s3://bucket/{key}".startswith(location)
    assert location.endswith("/hour=05/")  # the shard level below is read recursively
    assert table["StorageDescriptor"]["Location"]["Fn::Sub"] == ["s3://${Bucket}/" + prefix + "/",
                                                                 {"Bucket": {"Ref": "RawDataBucket"}}]
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"


def test_raw_table_columns_are_the_archive_line_fields(resources: dict[str, Any]) -> None:
    columns = resources["RawArchiveTable"]["Properties"]["TableInput"]["StorageDescriptor"]["Columns"]
    assert [(c["Name"], c["Type"]) for c in columns] == [
        ("sequencenumber", "string"), ("partitionkey", "string"), ("arrivedat", "bigint"), ("data", "string"),
        ("database64", "string")]


def test_workgroup_enforces_engine_v3_encrypted_results_cutoff_and_metrics() -> None:
    template = _template(analytics={"bytes_scanned_cutoff_mb": 100})
    config = template["Resources"]["AnalyticsWorkGroup"]["Properties"]["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["PublishCloudWatchMetricsEnabled"] is True
    assert config["BytesScannedCutoffPerQuery"] == 100 * 1024 * 1024
    assert config["EngineVersion"] == {"SelectedEngineVersion": "Athena engine version 3"}
    assert config["ResultConfiguration"]["EncryptionConfiguration"] == {"EncryptionOption": "SSE_S3"}
    assert config["ResultConfiguration"]["OutputLocation"] == {
        "Fn::Sub": "s3://${AnalyticsResultsBucket}/results/"}


def test_results_bucket_expires_results_and_refuses_plain_http() -> None:
    resources = _template(analytics={"results_expiry_days": 3})["Resources"]
    bucket = resources["AnalyticsResultsBucket"]["Properties"]
    rule = bucket["LifecycleConfiguration"]["Rules"][0]
    assert rule["ExpirationInDays"] == 3
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"}
    statement = resources["AnalyticsResultsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert statement["Effect"] == "Deny" and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_disabled_analytics_adds_nothing() -> None:
    template = _template(analytics={"enabled": False})
    assert not [k for k in template["Resources"] if k.startswith(("Analytics", "RawArchive", "QuarantineArchive"))]
    assert not [k for k in template["Outputs"] if k.startswith("Analytics")]


def test_outputs_name_what_iotpipe_sql_needs() -> None:
    outputs = _template()["Outputs"]
    assert outputs["AnalyticsWorkGroupName"]["Value"] == {"Ref": "AnalyticsWorkGroup"}
    assert outputs["AnalyticsDatabaseName"]["Value"] == {"Ref": "AnalyticsDatabase"}
    assert outputs["AnalyticsQueryPolicyArn"]["Value"] == {"Ref": "AnalyticsQueryPolicy"}


def test_no_statement_of_the_query_policy_grants_a_wildcard_resource(resources: dict[str, Any]) -> None:
    statements = resources["AnalyticsQueryPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    for statement in statements:
        assert "*" not in statement["Resource"]
        assert all(not str(action).endswith("*") for action in statement["Action"])


def test_projected_years_are_a_narrow_configured_range() -> None:
    # AWS advises against projection ranges that leave most partitions empty: 2020-2099 projected 80 years of
    # hours for an archive that starts when the stack is deployed.
    default = _template()["Resources"]["RawArchiveTable"]["Properties"]["TableInput"]["Parameters"]
    assert default["projection.year.range"] == "2024,2035"
    narrowed = _template(analytics={"first_year": 2026, "last_year": 2027})["Resources"]
    for table in ("RawArchiveTable", "QuarantineArchiveTable"):
        assert narrowed[table]["Properties"]["TableInput"]["Parameters"]["projection.year.range"] == "2026,2027"


def test_last_year_before_first_year_is_a_config_error() -> None:
    from iotpipe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"analytics.last_year: 2025 is before first_year \(2026\)"):
        build_config({"defaults": {"analytics": {"first_year": 2026, "last_year": 2025}}}, "dev", {})
