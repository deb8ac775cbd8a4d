"""The rollout's pre-traffic hook (iotpipe.pretraffic), its rendered inline source run in-process: the Python
processor answers its invocation (against a moto server), botocore's Stubber stands in for Lambda and CodeDeploy."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from processor_support import VECTORS_DIR, clients, create_resources, load_handler, make_runtime, scan_items

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
    """The hook's module namespace, from the source the template inlines."""
    monkeypatch.setenv("NEW_VERSION", VERSION_ARN)
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
def stubs() -> Iterator[tuple[Any, Any, Stubber, Stubber]]:
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    lam, codedeploy = session.client("lambda"), session.client("codedeploy")
    with Stubber(lam) as lam_stub, Stubber(codedeploy) as cd_stub:
        yield lam, codedeploy, lam_stub, cd_stub
        lam_stub.assert_no_pending_responses()
        cd_stub.assert_no_pending_responses()


def run(hook: dict[str, Any], sample: dict[str, Any], stubs: Any, answer: dict[str, Any], status: str) -> str:
    lam, codedeploy, lam_stub, cd_stub = stubs
    lam_stub.add_response("invoke", answer, {"FunctionName": VERSION_ARN, "LogType": "Tail",
                                             "Payload": json.dumps(pretraffic.kinesis_event(sample)).encode()})
    cd_stub.add_response("put_lifecycle_event_hook_execution_status", {"lifecycleEventHookExecutionId": "hook-exec-1"},
                         {"deploymentId": "d-ABC123", "lifecycleEventHookExecutionId": "hook-exec-1",
                          "status": status})
    return str(hook["handler"](EVENT, None, (lam, codedeploy)))


def test_the_sample_takes_whole_record_rejections_from_the_vectors(sample: dict[str, Any]) -> None:
    assert len(sample["records"]) == 4
    assert sample["log"] == {"records": 4, "stored": 0, "quarantined": 4, "failed": 0}


@pytest.mark.parametrize("prefix", ["", "2026-12-07T02:40:00.000Z\t8f1c-request\tINFO\t"],
                         ids=["plain", "console-log-prefix"])  # Node's console.log lines carry a text prefix
def test_a_matching_version_succeeds_and_writes_nothing_to_the_table(
        hook: dict[str, Any], sample: dict[str, Any], stubs: Any, moto_endpoint: str, prefix: str) -> None:
    index = load_handler()
    s3, dynamodb = clients(moto_endpoint)
    create_resources(s3, dynamodb)
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
    lam, codedeploy, lam_stub, cd_stub = stubs
    lam_stub.add_client_error("invoke", "AccessDeniedException")
    cd_stub.add_response("put_lifecycle_event_hook_execution_status", {},
                         {"deploymentId": "d-ABC123", "lifecycleEventHookExecutionId": "hook-exec-1",
                          "status": "Failed"})
    assert hook["handler"](EVENT, None, (lam, codedeploy)) == "Failed"
