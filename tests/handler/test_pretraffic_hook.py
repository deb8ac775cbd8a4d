"""The rollout's pre-traffic hook (iotpipe.pretraffic), its rendered source run in-process: the Python processor
answers its invocations (against a moto server, which also holds the raw archive the hook samples recent traffic
from), botocore's Stubber stands in for Lambda and CodeDeploy."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from processor_support import (
    BUCKET,
    VECTORS_DIR,
    clients,
    create_resources,
    kinesis_event,
    load_handler,
    make_runtime,
    rule_records,
    scan_items,
)

from iotpipe import pretraffic

VERSION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:iot-processor:7"
EVENT = {"DeploymentId": "d-ABC123", "LifecycleEventHookExecutionId": "hook-exec-1"}
ENV: dict[str, Any] = {"ENVIRONMENT": "prod", "THRESHOLDS": {"temperature": {"min": 10, "max": 80, "unit": "celsius"}},
                       "UNKNOWN_SENSOR": "store"}  # stores what it does not know: the sample still stores nothing


@pytest.fixture(scope="module")
def sample() -> dict[str, Any]:
    vectors = [json.loads(path.read_text()) for path in sorted(VECTORS_DIR.glob("*.json"))]
    assert vectors == pretraffic.shipped_vectors()
    return pretraffic.hook_sample(vectors)


@pytest.fixture()
def hook(sample: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The hook's module namespace, from the source the template deploys."""
    monkeypatch.setenv("NEW_VERSION", VERSION_ARN)
    monkeypatch.setenv("ARCHIVE_BUCKET", BUCKET)
    namespace: dict[str, Any] = {}
    exec(compile(pretraffic.hook_code(sample), "index.py", "exec"), namespace)
    return namespace


def invoke_answer(payload: Any, log_lines: list[str], *, error: bool = False) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    answer: dict[str, Any] = {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(body), len(body)),
                              "LogResult": base64.b64encode("\n".join(log_lines).encode()).decode()}
    if error:
        answer["FunctionError"] = "Unhandled"
    return answer


@pytest.fixture()
def aws(moto_endpoint: str) -> tuple[Any, Any]:
    """(s3, dynamodb) on a moto server with the readings table and the raw bucket (empty)."""
    s3, dynamodb = clients(moto_endpoint)
    create_resources(s3, dynamodb)
    return s3, dynamodb


@pytest.fixture()
def stubs(aws: tuple[Any, Any]) -> Iterator[tuple[Any, Any, Stubber, Stubber, Any]]:
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    lam, codedeploy = session.client("lambda"), session.client("codedeploy")
    with Stubber(lam) as lam_stub, Stubber(codedeploy) as cd_stub:
        yield lam, codedeploy, lam_stub, cd_stub, aws[0]
        lam_stub.assert_no_pending_responses()
        cd_stub.assert_no_pending_responses()


def expect_invoke(stubs: Any, event: dict[str, Any], answer: dict[str, Any]) -> None:
    stubs[2].add_response("invoke", answer, {"FunctionName": VERSION_ARN, "LogType": "Tail",
                                             "Payload": json.dumps(event).encode()})


def run(hook: dict[str, Any], sample: dict[str, Any], stubs: Any, answer: dict[str, Any], status: str,
        then: tuple[dict[str, Any], dict[str, Any]] | None = None) -> str:
    """The hook's run: the vectors' invocation answered with ``answer``, then (``then``) the recent records'
    event and its answer."""
    lam, codedeploy, _lam_stub, cd_stub, s3 = stubs
    expect_invoke(stubs, pretraffic.kinesis_event(sample), answer)
    if then:
        expect_invoke(stubs, *then)
    cd_stub.add_response("put_lifecycle_event_hook_execution_status", {"lifecycleEventHookExecutionId": "hook-exec-1"},
                         {"deploymentId": "d-ABC123", "lifecycleEventHookExecutionId": "hook-exec-1",
                          "status": status})
    return str(hook["handler"](EVENT, None, (lam, codedeploy, s3)))


def test_the_sample_takes_whole_record_rejections_from_the_vectors(sample: dict[str, Any]) -> None:
    assert len(sample["records"]) == 4
    assert sample["log"] == {"records": 4, "stored": 0, "quarantined": 4, "failed": 0}


@pytest.mark.parametrize("prefix", ["", "2026-12-07T02:40:00.000Z\t8f1c-request\tINFO\t"],
                         ids=["plain", "console-log-prefix"])  # Node's console.log lines carry a text prefix
def test_a_matching_version_succeeds_and_writes_nothing_to_the_table(
        hook: dict[str, Any], sample: dict[str, Any], stubs: Any, aws: tuple[Any, Any], prefix: str) -> None:
    index = load_handler()
    s3, dynamodb = aws
    lines: list[str] = []
    response = index.process(pretraffic.kinesis_event(sample), None, make_runtime(index, ENV, s3, dynamodb,
                                                                                  emit=lines.append))

    tail = ["START RequestId: 1", *(prefix + line for line in lines), "END RequestId: 1"]
    assert run(hook, sample, stubs, invoke_answer(response, tail),
               "Succeeded") == "Succeeded"
    assert scan_items(dynamodb) == []


@pytest.mark.parametrize(("payload", "log", "error"), [
    ({"batchItemFailures": [{"itemIdentifier": "2"}]}, {"records": 4, "stored": 0, "quarantined": 3, "failed": 1},
     False),
    ({"batchItemFailures": []}, {"records": 4, "stored": 1, "quarantined": 3, "failed": 0}, False),
    ({"errorMessage": "boom", "errorType": "KeyError"}, None, True),
    ({"batchItemFailures": []}, None, False),  # no summary line: nothing to compare
], ids=["fails-a-record", "stores-a-record", "raises", "no-summary"])
def test_a_version_that_differs_is_refused(hook: dict[str, Any], sample: dict[str, Any], stubs: Any,
                                           payload: dict[str, Any], log: dict[str, Any] | None,
                                           error: bool) -> None:
    lines = [json.dumps({"level": "INFO", "message": "batch processed", **log})] if log else []
    assert run(hook, sample, stubs, invoke_answer(payload, lines, error=error), "Failed") == "Failed"


def test_a_failed_invocation_still_reports_to_codedeploy(hook: dict[str, Any], stubs: Any) -> None:
    lam, codedeploy, lam_stub, cd_stub, _s3 = stubs
    lam_stub.add_client_error("invoke", "AccessDeniedException")
    cd_stub.add_response("put_lifecycle_event_hook_execution_status", {},
                         {"deploymentId": "d-ABC123", "lifecycleEventHookExecutionId": "hook-exec-1",
                          "status": "Failed"})
    assert hook["handler"](EVENT, None, (lam, codedeploy, _s3)) == "Failed"


def processed(index: Any, event: dict[str, Any], s3: Any, dynamodb: Any, env: dict[str, Any] = ENV) -> dict[str, Any]:
    """The processor's invoke answer for ``event`` (its response and its log as Lambda's tail)."""
    lines: list[str] = []
    response = index.process(event, None, make_runtime(index, env, s3, dynamodb, emit=lines.append))
    return invoke_answer(response, lines)


def live_batch(index: Any, s3: Any, dynamodb: Any, values: list[Any], first_sequence: int) -> None:
    """A batch the running version processed (and archived) a moment ago."""
    now = int(time.time() * 1000)
    records = rule_records([{"deviceId": "press-07", "sensorType": "temperature", "value": v, "timestamp": now - 5000}
                            for v in values], now, first_sequence)
    assert index.process(kinesis_event(records), None, make_runtime(index, ENV, s3, dynamodb,
                                                                    emit=lambda _: None)) == {"batchItemFailures": []}


def test_the_new_version_replays_the_newest_clean_archived_batch_and_rewrites_the_same_items(
        hook: dict[str, Any], sample: dict[str, Any], stubs: Any, aws: tuple[Any, Any]) -> None:
    index = load_handler()
    s3, dynamodb = aws
    live_batch(index, s3, dynamodb, [20.5, 85.0, 30.25], 49_700_000_000)
    stored = scan_items(dynamodb)
    recent = pretraffic.recent_sample(s3, BUCKET, time.time())
    assert recent is not None and [r[3] for r in recent["records"]] == ["49700000000", "49700000001", "49700000002"]
    vectors = processed(load_handler(), pretraffic.kinesis_event(sample), s3, dynamodb)
    event = pretraffic.kinesis_event(recent)
    again = processed(load_handler(), event, s3, dynamodb)

    assert run(hook, sample, stubs, vectors, "Succeeded", then=(event, again)) == "Succeeded"
    assert scan_items(dynamodb) == stored  # the same keys and contents: nothing stored twice


def test_a_version_that_quarantines_recent_traffic_is_refused(
        hook: dict[str, Any], sample: dict[str, Any], stubs: Any, aws: tuple[Any, Any]) -> None:
    index = load_handler()
    s3, dynamodb = aws
    live_batch(index, s3, dynamodb, [20.5, 30.25], 49_700_000_100)
    recent = pretraffic.recent_sample(s3, BUCKET, time.time())
    assert recent is not None
    vectors = processed(load_handler(), pretraffic.kinesis_event(sample), s3, dynamodb)
    event = pretraffic.kinesis_event(recent)
    # A release that no longer knows temperature (a stand-in for a parsing bug): it quarantines live records. Its
    # answer is made on a table and bucket of its own, so the live batch's archive stays without a quarantine.
    create_resources(s3, dynamodb, table="broken", bucket="broken")
    broken = processed(load_handler(), event, s3, dynamodb, {**ENV, "THRESHOLDS": {}, "UNKNOWN_SENSOR": "quarantine",
                                                             "DYNAMODB_TABLE": "broken", "S3_BUCKET": "broken"})

    assert run(hook, sample, stubs, vectors, "Failed", then=(event, broken)) == "Failed"


def test_the_recent_sample_skips_batches_the_running_version_quarantined_from(aws: tuple[Any, Any]) -> None:
    index = load_handler()
    s3, dynamodb = aws
    live_batch(index, s3, dynamodb, [20.5], 49_700_000_200)
    time.sleep(1.1)  # S3's LastModified has a second's resolution: the next object is the newer one
    live_batch(index, s3, dynamodb, [20.5, "hot"], 49_700_000_300)  # "hot" is quarantined

    recent = pretraffic.recent_sample(s3, BUCKET, time.time())

    assert recent is not None and [r[3] for r in recent["records"]] == ["49700000200"]
    assert pretraffic.recent_sample(s3, BUCKET, time.time() + 3 * 3600) is None  # nothing in the last two hours


def test_the_hooks_invocations_end_in_time_to_report_to_codedeploy(
        hook: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # A new version that hangs until its timeout: botocore's default 60 s read timeout and retried invoke outlast
    # the hook's own 120 s, which then dies unreported and CodeDeploy waits an hour for it.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    lam, codedeploy, s3 = hook["hook_clients"](120_000)
    assert lam.meta.config.retries["total_max_attempts"] == 1  # no second invoke of a hung version
    assert 2 * lam.meta.config.read_timeout + pretraffic.REPORT_MARGIN_S <= 120
    assert codedeploy.meta.service_model.service_name == "codedeploy" and s3.meta.service_model.service_name == "s3"
    assert hook["hook_clients"](5_000)[0].meta.config.read_timeout == 1.0
