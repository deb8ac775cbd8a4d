"""Helpers of the processor tests: load the handler, build Kinesis events, create the contract's table and bucket
on a moto server, read back what the processor wrote."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer
from botocore.config import Config

from iotpipe.archive import load_processor

REPO = Path(__file__).resolve().parents[2]
HANDLER_PATH = REPO / "handler" / "python" / "index.py"
VECTORS_DIR = REPO / "handler" / "vectors"
TABLE = "SensorReadings-test"
BUCKET = "iot-raw-data-test"
SHARD = "shardId-000000000000"
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/iot-sensor-data-stream-test"


def load_handler() -> ModuleType:
    """A fresh copy of this checkout's handler/python/index.py (fresh module state: no cached Lambda runtime)."""
    return load_processor(HANDLER_PATH)


def clients(endpoint: str, pool: int = 16) -> tuple[Any, Any]:
    """(s3, dynamodb) clients pointed at ``endpoint``."""
    config = Config(max_pool_connections=pool, retries={"mode": "standard", "total_max_attempts": 1},
                    parameter_validation=False)  # as the handler's own clients (Runtime.from_env)
    session = boto3.session.Session(region_name="us-east-1")
    return (session.client("s3", endpoint_url=endpoint, config=config),
            session.client("dynamodb", endpoint_url=endpoint, config=config))


def create_resources(s3: Any, dynamodb: Any, table: str = TABLE, bucket: str = BUCKET) -> None:
    """The contract's readings table (with the sparse anomaly index) and the raw bucket."""
    dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"}
                              for name in ("deviceId", "sk", "anomalyDay", "anomalySk")],
        KeySchema=[{"AttributeName": "deviceId", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{
            "IndexName": "AnomaliesByDay",
            "KeySchema": [{"AttributeName": "anomalyDay", "KeyType": "HASH"},
                          {"AttributeName": "anomalySk", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
    )
    s3.create_bucket(Bucket=bucket)


def settings_env(env: Mapping[str, Any], table: str = TABLE, bucket: str = BUCKET) -> dict[str, str]:
    """Lambda environment variables: ``env`` (values JSON-encoded unless strings) plus table and bucket."""
    out = {"DYNAMODB_TABLE": table, "S3_BUCKET": bucket}
    out.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in env.items()})
    return out


def make_runtime(index: ModuleType, env: Mapping[str, Any], s3: Any, dynamodb: Any, *,
                 emit: Callable[[str], None], sleep: Callable[[float], None] | None = None,
                 clock_ms: Callable[[], int] | None = None) -> Any:
    """An ``index.Runtime`` on the given clients; ``emit`` receives every stdout line."""
    extra = {k: v for k, v in (("sleep", sleep), ("clock_ms", clock_ms)) if v is not None}
    return index.Runtime(settings=index.Settings.from_env(settings_env(env)), s3=s3, dynamodb=dynamodb,
                         pool=ThreadPoolExecutor(max_workers=index.POOL_SIZE), emit=emit, **extra)


def record_data(spec: Mapping[str, Any]) -> str:
    """Base64 Kinesis data of a vector record: ``payload`` (JSON), ``text`` (verbatim) or ``base64``."""
    if "payload" in spec:
        return base64.b64encode(json.dumps(spec["payload"]).encode()).decode()
    if "text" in spec:
        return base64.b64encode(spec["text"].encode()).decode()
    return str(spec["base64"])


def rule_records(payloads: Iterable[Mapping[str, Any]], arrived_at: int,
                 first_sequence: int = 49_700_000_000) -> list[dict[str, Any]]:
    """Record specs for :func:`kinesis_event` as the topic rule forwards device payloads: each payload plus
    ``receivedAt`` and ``topicDeviceId``, partitioned by the device id."""
    return [{"payload": {**payload, "receivedAt": arrived_at, "topicDeviceId": payload["deviceId"]},
             "partitionKey": str(payload["deviceId"]), "sequenceNumber": str(first_sequence + index),
             "arrivedAt": arrived_at} for index, payload in enumerate(payloads)]


def kinesis_event(records: Iterable[Mapping[str, Any]], shard_id: str = SHARD) -> dict[str, Any]:
    """A Lambda Kinesis event; each spec has sequenceNumber, partitionKey, arrivedAt (ms) and data."""
    return {"Records": [{
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": spec["partitionKey"],
            "sequenceNumber": spec["sequenceNumber"],
            "data": record_data(spec),
            "approximateArrivalTimestamp": spec["arrivedAt"] / 1000,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{spec['sequenceNumber']}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/processor",
        "awsRegion": "us-east-1",
        "eventSourceARN": STREAM_ARN,
    } for spec in records]}


def _plain(value: Any) -> Any:
    """Decimal -> int or float, recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def scan_items(dynamodb: Any, table: str = TABLE) -> list[dict[str, Any]]:
    """Every item of ``table`` as plain JSON values, ordered by key."""
    deserializer = TypeDeserializer()
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table}
    for _ in range(1000):
        page = dynamodb.scan(**kwargs)
        items += [_plain({k: deserializer.deserialize(v) for k, v in item.items()}) for item in page["Items"]]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return sorted(items, key=lambda item: (item["deviceId"], item["sk"]))


def objects(s3: Any, prefix: str, bucket: str = BUCKET) -> dict[str, bytes]:
    """``{key: body}`` of every object under ``prefix``."""
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def jsonl_gz(body: bytes) -> list[dict[str, Any]]:
    """The JSON lines of a gzip object."""
    return [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]


def stdout_documents(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Every stdout line parsed as JSON (each must be a JSON object)."""
    return [json.loads(line) for line in lines]


def emf_documents(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The EMF documents among the stdout lines."""
    return [doc for doc in stdout_documents(lines) if "_aws" in doc]


def metric_totals(documents: Iterable[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Metric values of EMF documents: (dimension Environment, {SensorType: values})."""
    environment: dict[str, float] = {}
    by_type: dict[str, dict[str, float]] = {}
    for doc in documents:
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for dimensions in directive["Dimensions"]:
                target = (by_type.setdefault(doc["SensorType"], {}) if "SensorType" in dimensions
                          else environment)
                for metric in directive["Metrics"]:
                    target[metric["Name"]] = target.get(metric["Name"], 0) + doc[metric["Name"]]
    return environment, by_type
