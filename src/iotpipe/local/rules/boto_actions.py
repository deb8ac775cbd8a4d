"""The rule engine's actions against AWS (the emulator, for ``iotpipe local``) with boto3: an :class:`ActionSink`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from iotpipe.local.rules.sink import ActionError, KinesisRecord

if TYPE_CHECKING:
    from botocore.client import BaseClient

T = TypeVar("T")


class ClientSource(Protocol):
    """Makes boto3 clients by service name, as :class:`iotpipe.aws.ClientFactory` does."""

    def client(self, service: str) -> BaseClient:
        """A client for ``service`` (``"kinesis"``, ``"s3"``)."""
        ...


class BotoActions:
    """Delivers the engine's actions with one boto3 client per service, made on first use from ``clients``.

    PutRecords for the Kinesis action (the engine batches), PutRecord for a Kinesis error action, PutObject for S3.
    A failed call raises :class:`ActionError` with AWS's ``Code: Message`` (or the exception's type and text).
    """

    def __init__(self, clients: ClientSource) -> None:
        self._clients = clients
        self._service_clients: dict[str, BaseClient] = {}

    def put_records(self, stream: str, records: Sequence[KinesisRecord]) -> list[str | None]:
        """PutRecords; per record None or ``ErrorCode: ErrorMessage``."""
        response = _call(self._client("kinesis").put_records, StreamName=stream,
                         Records=[{"Data": r.data, "PartitionKey": r.partition_key} for r in records])
        return [f"{result['ErrorCode']}: {result.get('ErrorMessage', '')}" if "ErrorCode" in result else None
                for result in response["Records"]]

    def put_record(self, stream: str, record: KinesisRecord) -> None:
        """PutRecord."""
        _call(self._client("kinesis").put_record, StreamName=stream, PartitionKey=record.partition_key,
              Data=record.data)

    def put_object(self, bucket: str, key: str, body: bytes, *, canned_acl: str | None = None) -> None:
        """PutObject, with the action's canned ACL if it has one."""
        extra = {"ACL": canned_acl} if canned_acl else {}
        _call(self._client("s3").put_object, Bucket=bucket, Key=key, Body=body, **extra)

    def _client(self, service: str) -> BaseClient:
        client = self._service_clients.get(service)
        if client is None:
            client = self._service_clients[service] = self._clients.client(service)
        return client


def _call(method: Callable[..., T], **kwargs: Any) -> T:
    try:
        return method(**kwargs)
    except Exception as exc:
        raise ActionError(_reason(exc)) from exc


def _reason(exc: Exception) -> str:
    """AWS's ``Code: Message`` for a service error (what AWS's error-action message quotes), else type and text."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping) and isinstance(response.get("Error"), Mapping):
        error = response["Error"]
        return f"{error.get('Code', 'Error')}: {error.get('Message', '')}"
    return f"{type(exc).__name__}: {exc}"
