"""boto3 clients pointed at the emulator: the factory with the run's endpoint, region and access key, and the
Kinesis reader whose GetRecords answer is parsed for less (botocore's private parser factory, declared as
:data:`RAW_KINESIS_PARSER`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from iotpipe.aws import ClientFactory
from iotpipe.local.emulator.moto_compat.base import Patch
from iotpipe.local.emulator.moto_compat.versions import TestedRange

LOCAL_REGION = "us-east-1"
# only for code that talks to an emulator without iotpipe local's check (the tests' moto server)
LOCAL_CREDENTIALS = ("local", "local")

RAW_KINESIS_PARSER = Patch(
    "botocore.kinesis_raw_parser", "speed",
    "a mapping runner's Kinesis client leaves Data as base64 text and arrival times as epoch seconds",
    None, upstream="not filed (botocore's private Endpoint._response_parser_factory)",
    tested=TestedRange("botocore", minimum="1.34", below="1.45"))
RAW_DYNAMODB_READS = Patch(
    "botocore.dynamodb_raw_reads", "speed",
    "the console's DynamoDB client takes Query and Scan answers without binary attributes as parsed JSON",
    None, upstream="not filed (botocore's private Endpoint._response_parser_factory)",
    tested=TestedRange("botocore", minimum="1.34", below="1.45"))
# A binary attribute (B, BS) is the one part of a read answer botocore's parser changes (base64 text to bytes).
_BINARY_ATTRIBUTE = re.compile(rb'"BS?"\s*:')
_RAW_READS = ("QueryOutput", "ScanOutput")


@dataclass(frozen=True)
class LocalClientFactory(ClientFactory):
    """Clients for the emulator: its endpoint, its region and the run's access key (the only one it accepts)."""

    access_key_id: str = LOCAL_CREDENTIALS[0]
    secret_access_key: str = LOCAL_CREDENTIALS[1]

    def session(self) -> Any:
        """A boto3 session with the run's credentials."""
        import boto3

        return boto3.session.Session(aws_access_key_id=self.access_key_id,
                                     aws_secret_access_key=self.secret_access_key,
                                     region_name=self.region or LOCAL_REGION)


def raw_kinesis_client(kinesis: Any) -> Any:
    """``kinesis`` made to leave GetRecords' ``Data`` as base64 text and arrival times as epoch seconds: exactly
    what the Lambda event holds. boto3's default (decode then re-encode the data, parse each timestamp into a
    local-time datetime) costs 40 us of the ~50 us per record that parsing takes. The client gets its own parser
    factory, so clients sharing its session keep the defaults; a botocore without that attribute is left as is.
    Only for a client nobody else uses: its other callers would get text where boto3 gives bytes."""
    from botocore.parsers import ResponseParserFactory

    endpoint = getattr(kinesis, "_endpoint", None)
    if endpoint is None or not hasattr(endpoint, "_response_parser_factory"):
        return kinesis
    factory = ResponseParserFactory()
    factory.set_parser_defaults(blob_parser=str, timestamp_parser=_epoch_seconds)
    endpoint._response_parser_factory = factory
    return kinesis


def raw_dynamodb_reads(dynamodb: Any) -> Any:
    """``dynamodb`` made to take its Query and Scan answers as ``json.loads`` gives them: botocore's parser walks
    the model for every attribute of every item (0.1 s to 0.2 s for a 1 MB page of packed readings) and changes
    nothing in an answer without binary attributes (numbers stay text, as on the wire). An answer holding one, an
    error and every other operation are parsed by botocore. Only for a client of its own (the console's): it
    gets its own parser factory; a botocore without that attribute is left as is."""
    from botocore.parsers import JSONParser, ResponseParserFactory

    class RawReads(JSONParser):
        def _handle_json_body(self, raw_body: Any, shape: Any) -> Any:
            if shape is not None and shape.name in _RAW_READS and raw_body and \
                    not _BINARY_ATTRIBUTE.search(raw_body):
                return self._parse_body_as_json(raw_body)
            return super()._handle_json_body(raw_body, shape)

    class Factory(ResponseParserFactory):
        def create_parser(self, protocol_name: str) -> Any:
            if protocol_name == "json":
                return RawReads(**self._defaults)
            return super().create_parser(protocol_name)

    endpoint = getattr(dynamodb, "_endpoint", None)
    if endpoint is None or not hasattr(endpoint, "_response_parser_factory"):
        return dynamodb
    endpoint._response_parser_factory = Factory()
    return dynamodb


def _epoch_seconds(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    from botocore.utils import parse_timestamp

    return float(parse_timestamp(value).timestamp())
