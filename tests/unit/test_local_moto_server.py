"""The emulator of ``iotpipe local`` answers only the run's access key; moto's own API only the supervisor."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from iotpipe.local.moto_server import API_TOKEN_HEADER
from iotpipe.local.processes import free_port
from iotpipe.local.state import LocalClientFactory, LocalCredentials, new_credentials
from iotpipe.local.supervisor import MotoServer


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoServer, LocalCredentials]]:
    credentials = new_credentials()
    server = MotoServer(free_port(), Path(tmp_path_factory.mktemp("moto")) / "aws.log", credentials)
    try:
        server.wait_ready(60)  # the supervisor's own readiness probe passes the moto-api guard
        yield server, credentials
    finally:
        server.stop()


def client(server: MotoServer, service: str, key: str, secret: str = "anything") -> object:
    return boto3.client(service, endpoint_url=server.url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret)


@pytest.mark.parametrize(("service", "call", "code"), [
    ("dynamodb", lambda c: c.list_tables(), "UnrecognizedClientException"),
    ("kinesis", lambda c: c.list_streams(), "UnrecognizedClientException"),
    ("iot", lambda c: c.list_topic_rules(), "UnrecognizedClientException"),
    ("s3", lambda c: c.list_buckets(), "InvalidAccessKeyId"),
    ("cloudformation", lambda c: c.list_stacks(), "InvalidClientTokenId"),
])
def test_any_other_access_key_gets_aws_403(guarded: tuple[MotoServer, LocalCredentials], service: str,
                                           call: object, code: str) -> None:
    server, credentials = guarded
    for key in ("local", "AKIAIOSFODNN7EXAMPLE"):
        with pytest.raises(ClientError) as refused:
            call(client(server, service, key))  # type: ignore[operator]
        assert refused.value.response["Error"]["Code"] == code
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    call(client(server, service, credentials.aws_access_key_id, credentials.aws_secret_access_key))  # type: ignore


def test_the_runs_factory_reads_and_writes(guarded: tuple[MotoServer, LocalCredentials]) -> None:
    server, credentials = guarded
    factory = LocalClientFactory(region="us-east-1", endpoint_url=server.url,
                                 access_key_id=credentials.aws_access_key_id,
                                 secret_access_key=credentials.aws_secret_access_key)
    s3 = factory.client("s3")
    s3.create_bucket(Bucket="guarded")
    s3.put_object(Bucket="guarded", Key="k", Body=b"v")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "guarded", "Key": "k"})
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.read() == b"v"
    other = client(server, "s3", "OTHERKEY").generate_presigned_url(  # type: ignore[attr-defined]
        "get_object", Params={"Bucket": "guarded", "Key": "k"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(other, timeout=10)
    assert refused.value.code == 403 and b"InvalidAccessKeyId" in refused.value.read()


def test_unsigned_requests_and_moto_api_without_the_token_are_refused(
        guarded: tuple[MotoServer, LocalCredentials]) -> None:
    server, credentials = guarded
    for request in (urllib.request.Request(f"{server.url}/"),
                    urllib.request.Request(f"{server.url}/moto-api/reset", method="POST"),
                    urllib.request.Request(f"{server.url}/moto-api/data.json",
                                           headers={API_TOKEN_HEADER: "guess"})):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
    token = urllib.request.Request(f"{server.url}/moto-api/data.json",
                                   headers={API_TOKEN_HEADER: credentials.aws_secret_access_key})
    with urllib.request.urlopen(token, timeout=10) as answer:
        assert answer.status == 200
