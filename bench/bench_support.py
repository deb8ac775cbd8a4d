"""What the processor benchmark needs to drive a processor against a moto server: this checkout's handler, clients
configured as the handler's own, the contract's table and bucket, Lambda Kinesis events and a runtime.

Used by bench/ only (the tests have their own helpers in tests/handler/processor_support.py; neither imports the
other)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
from botocore.config import Config

from iotpipe.archive import load_processor

REPO = Path(__file__).resolve().parents[1]
HANDLER_PATH = REPO / "handler" / "python" / "index.py"
TABLE = "SensorReadings-bench"
BUCKET = "iot-raw-data-bench-processor"
SHARD = "shardId-000000000000"
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/iot-sensor-data-stream-bench"


def load_handler() -> ModuleType:
    """A fresh copy of this checkout's handler/python/index.py: a change to it is measured before it is
    installed."""
    return load_processor(HANDLER_PATH)


def clients(endpoint: str, pool: int = 16) -> tuple[Any, Any]:
    """(s3, dynamodb) clients pointed at ``endpoint``, configured as the handler's own (Runtime.from_env)."""
    config = Config(max_pool_connections=pool, retries={"mode": "standard", "total_max_attempts": 1},
                    parameter_validation=False)
    session = boto3.session.Session(region_name="us-east-1")
    return (session.client("s3", endpoint_url=endpoint, config=config),
            session.client("dynamodb", endpoint_url=endpoint, config=config))


def create_resources(s3: Any, dynamodb: Any) -> None:
    """The contract's readings table (with the sparse anomaly index) and the raw bucket."""
    dynamodb.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"}
                              for name in ("deviceId", "sk", "anomalyDay", "anomalySk")],
        KeySchema=[{"AttributeName": "deviceId", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{
            "IndexName": "AnomaliesByDay",
            "KeySchema": [{"AttributeName": "anomalyDay", "KeyType": "HASH"},
                          {"AttributeName": "anomalySk", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
    )
    s3.create_bucket(Bucket=BUCKET)


def settings_env(env: Mapping[str, Any]) -> dict[str, str]:
    """Lambda environment variables: ``env`` (values JSON-encoded unless strings) plus the table and bucket."""
    return {"DYNAMODB_TABLE": TABLE, "S3_BUCKET": BUCKET,
            **{k: v if isinstance(v, str) else json.dumps(v) for k, v in env.items()}}


def make_runtime(index: ModuleType, env: Mapping[str, Any], s3: Any, dynamodb: Any, *,
                 emit: Callable[[str], None]) -> Any:
    """An ``index.Runtime`` on the given clients; ``emit`` receives every stdout line."""
    return index.Runtime(settings=index.Settings.from_env(settings_env(env)), s3=s3, dynamodb=dynamodb,
                         pool=ThreadPoolExecutor(max_workers=index.POOL_SIZE), emit=emit)


def kinesis_event(records: Iterable[Mapping[str, Any]], shard_id: str = SHARD) -> dict[str, Any]:
    """A Lambda Kinesis event; each record has sequenceNumber, partitionKey, arrivedAt (ms) and a JSON payload."""
    return {"Records": [{
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": spec["partitionKey"],
            "sequenceNumber": spec["sequenceNumber"],
            "data": base64.b64encode(json.dumps(spec["payload"]).encode()).decode(),
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
