"""Stream group: the Kinesis data stream between the IoT rule and the processor."""

from __future__ import annotations

from dataclasses import dataclass

from troposphere import AWSObject, GetAtt, Output, Ref, Tags
from troposphere import kinesis as tpkinesis

from iotpipe import naming
from iotpipe.config import StreamConfig
from iotpipe.naming import DEFAULT_NAMES, Names

AWS_MANAGED_KINESIS_KEY = "alias/aws/kinesis"


@dataclass(frozen=True)
class StreamGroup:
    """What the stream group made, and the handles later groups need."""

    resources: tuple[AWSObject, ...]
    outputs: tuple[Output, ...]
    stream_arn: GetAtt
    stream_name: Ref
    customer_key_arn: str


def build_stream(cfg: StreamConfig, names: Names = DEFAULT_NAMES) -> StreamGroup:
    """An encrypted Kinesis stream, provisioned (shard count) or on-demand."""
    properties: dict[str, object] = {
        "Name": names.stream_name(),
        "RetentionPeriodHours": cfg.retention_hours,
        "StreamModeDetails": tpkinesis.StreamModeDetails(StreamMode=cfg.mode),
        # Seed stored readings unencrypted at rest.
        "StreamEncryption": tpkinesis.StreamEncryption(EncryptionType="KMS",
                                                      KeyId=cfg.kms_key_arn or AWS_MANAGED_KINESIS_KEY),
        "Tags": Tags(Environment=Ref(naming.ENV_PARAM), Purpose="IoT-Data-Ingestion"),
    }
    if cfg.mode == "PROVISIONED":
        properties["ShardCount"] = cfg.shard_count
    stream = tpkinesis.Stream(names.id(naming.STREAM), DeletionPolicy="Delete", UpdateReplacePolicy="Delete",
                              **properties)
    outputs = (Output(names.output(naming.OUT_STREAM_NAME), Description="Kinesis stream name for sensor data",
                      Value=Ref(stream), Export=names.export(naming.OUT_STREAM_NAME)),)
    return StreamGroup((stream,), outputs, GetAtt(stream, "Arn"), Ref(stream), cfg.kms_key_arn)
