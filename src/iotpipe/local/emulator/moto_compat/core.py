"""moto's core, shared by every service: its dispatch, backends and service models."""

from __future__ import annotations

from typing import Any

from iotpipe.local.emulator.moto_compat.base import Patch, Recorder

# Services whose moto backends keep state in plain dicts that iotpipe local writes from several threads at once.
SERIALIZED_SERVICES = ("dynamodb", "kinesis", "logs", "cloudwatch")


def _service_model_herd(patches: Recorder) -> None:
    """moto caches each service's botocore model, but the first requests of a service all load it at once (one
    load per server thread, 100-300 ms of CPU each for DynamoDB): load it once, under a lock."""
    import threading

    import moto.core.responses as moto_responses
    import moto.core.utils as moto_utils

    original = moto_utils.get_service_model
    lock = threading.Lock()

    def get_service_model(service_name: str) -> Any:
        with lock:
            return original(service_name)

    patches.setattr(moto_utils, "get_service_model", get_service_model)
    patches.setattr(moto_responses, "get_service_model", get_service_model)


def _dispatch_module_scan(patches: Recorder) -> None:
    """moto's server finds the service of each request by listing its package directory and testing every entry
    with ``isdir`` (about 200 file-system calls per AWS call, a tenth of the server's CPU under load). The list
    does not change while the server runs: compute it once."""
    import moto.backends as moto_backends

    modules = tuple(moto_backends.list_of_moto_modules())

    def list_of_moto_modules() -> tuple[str, ...]:
        return modules

    patches.setattr(moto_backends, "list_of_moto_modules", list_of_moto_modules)


def _backend_lookup_lock(patches: Recorder) -> None:
    """Every request looks its service backend up through ``BackendDict[account]``, which takes a process-wide
    lock and lists the known accounts each time, so the server's request threads queue on it. An account that
    already has its backends needs neither."""
    from moto.core.base_backend import BackendDict

    original = BackendDict.__getitem__

    def getitem(self: Any, account_id: str) -> Any:
        if dict.__contains__(self, account_id):
            return dict.__getitem__(self, account_id)
        return original(self, account_id)

    patches.setattr(BackendDict, "__getitem__", getitem)


def _serialized_backends(patches: Recorder) -> None:
    """moto's backends are not written for concurrent requests, and its server serves each request on a thread of
    its own (waitress's pool of ``iotpipe local``, Werkzeug's thread per request in the tests). Two requests that
    race lose writes: Kinesis ``Shard.put_record`` reads the last sequence number and stores under the next one
    (moto's comment: "this function is not safe for concurrency"), so two PutRecords on one shard can store two
    records under one number; a DynamoDB table keeps ``items`` in a ``defaultdict``, so two BatchWriteItem calls
    that store the first items of a new partition key can each create its inner dict, and one call's items vanish
    (a local run once stored 105 of 180 readings). One lock per service of :data:`SERIALIZED_SERVICES` runs each
    request's action alone: the request is parsed before and the HTTP answer written after, outside the lock.
    Their actions never wait (SQS, whose ReceiveMessage long-polls, is not among them); S3 writes a new object
    per key, which is safe as it is."""
    import threading

    from moto.core.responses import BaseResponse

    locks = {service: threading.Lock() for service in SERIALIZED_SERVICES}
    original = BaseResponse.call_action

    def call_action(self: Any) -> Any:
        lock = locks.get(self.service_name or "")
        if lock is None:
            return original(self)
        with lock:
            return original(self)

    patches.setattr(BaseResponse, "call_action", call_action)


def _request_id_check(patches: Recorder) -> None:
    """Every answer's body goes through a regular expression that puts the request id into an XML
    ``<RequestId>`` element: a scan of the whole body with a look-behind at every character (about 15 ms for a
    1 MB DynamoDB page). A text body without ``<RequestId>`` has nothing to replace: it is returned as it is,
    as the substitution would; any other body is moto's."""
    from moto.core.responses import BaseResponse

    original = BaseResponse._enrich_response

    def enrich_response(headers: dict[str, str], body: Any) -> tuple[dict[str, str], Any]:
        if type(body) is str and "<RequestId>" not in body:
            enriched, _ = original(headers, "")
            return enriched, body
        return original(headers, body)

    patches.setattr(BaseResponse, "_enrich_response", staticmethod(enrich_response))


PATCHES: tuple[Patch, ...] = (
    Patch("core.service_model_herd", "speed",
          "each service's botocore model loaded once, under a lock",
          _service_model_herd),
    Patch("core.dispatch_module_scan", "speed",
          "moto's module list computed once, not per request",
          _dispatch_module_scan),
    Patch("core.backend_lookup_lock", "speed",
          "a known account's backends found without the global lock",
          _backend_lookup_lock),
    Patch("core.serialized_backends", "parity",
          "one lock per service for DynamoDB, Kinesis, Logs and CloudWatch actions (no lost writes)",
          _serialized_backends),
    Patch("core.request_id_check", "speed",
          "an answer without an XML RequestId element is not searched for one",
          _request_id_check),
)
