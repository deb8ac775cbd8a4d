"""The processor rollout's pre-traffic hook (CodeDeploy ``BeforeAllowTraffic``), run as a Lambda.

Before CodeDeploy moves any traffic to the new processor version, the hook invokes that version (``NEW_VERSION``,
the Version's ``Ref``, as SAM passes it) twice:

1. With a Kinesis event made from the shared vectors' records that the contract quarantines whole whatever the
   configuration, comparing its partial-batch response and its ``batch processed`` log line with the vectors'
   expectations. Such records never reach the table.
2. With recent live traffic: the newest raw archive object of the last two hours (``ARCHIVE_BUCKET``) that is
   small (at most ``RECENT_MAX_BYTES``) and that the running version quarantined nothing of (no quarantine object
   beside it), sent whole with its own shard, sequence numbers and arrival times, so every key it writes is the
   key the running version wrote (contract section 6: the same batch gives the same items, in both layouts; the
   detector learns nothing from records at or below its absorbed sequence number, section 12). The new version
   must fail nothing, quarantine nothing and store or drop as a repeat at least one reading per record. With no
   such object (a quiet or new stack) this check is skipped and the log says so.

It then reports Succeeded or Failed to CodeDeploy, which rolls the alias back on Failed.

This file is the hook's source: :func:`hook_code` makes it (stdlib + boto3 only) with the sample appended.
"""

import ast
import base64
import gzip
import json
import os
import time
from pathlib import Path
from typing import Any

SAMPLE: dict[str, Any] = {}  # {"shard", "records", "response", "log"}; hook_code appends the rendered one
RECENT_MAX_BYTES = 262_144  # a compressed archive object; the event stays far under Lambda's 6 MB
REPORT_MARGIN_S = 15  # of the hook's own time, kept to report to CodeDeploy after the invocations


def hook_clients(remaining_ms: int) -> tuple[Any, Any, Any]:
    """(lambda, codedeploy, s3) clients whose calls end in time for the report to CodeDeploy.

    A hook that dies before PutLifecycleEventHookExecutionStatus leaves the deployment waiting for it for an
    hour. botocore's defaults (a 60 s read timeout, then retries of the invoke) outlast the hook's own timeout
    on a new version that hangs, so each of the two invocations gets half of the time left, once.
    """
    import boto3
    from botocore.config import Config

    budget_s = max(1.0, (remaining_ms / 1000 - REPORT_MARGIN_S) / 2)
    invoking = Config(read_timeout=budget_s, connect_timeout=min(10.0, budget_s), retries={"total_max_attempts": 1})
    return boto3.client("lambda", config=invoking), boto3.client("codedeploy"), boto3.client("s3")


def invoke_and_summarise(lambda_client: Any, function: str, event: dict[str, Any], response: dict[str, Any],
                         what: str) -> tuple[str, dict[str, Any]]:
    """Invoke ``function`` with ``event``: why it failed ("" when it answered ``response``) and its ``batch
    processed`` log line ({} when it failed); ``what`` names the records in the reason."""
    answer = lambda_client.invoke(FunctionName=function, Payload=json.dumps(event).encode(), LogType="Tail")
    body = answer["Payload"].read().decode("utf-8", "replace")
    if answer.get("FunctionError"):
        return f"the new version failed on {what}: {body[:500]}", {}
    if json.loads(body) != response:
        return f"its response to {what}, {body[:500]}, is not {json.dumps(response)}", {}
    tail = base64.b64decode(answer.get("LogResult") or "").decode("utf-8", "replace")
    summary = next((line for line in map(_document, tail.splitlines())
                    if line.get("message") == "batch processed"), None)
    if summary is None:
        return "no 'batch processed' line in the new version's log", {}
    return "", summary


def verdict(lambda_client: Any, function: str, sample: dict[str, Any]) -> str:
    """Why ``function`` (a version's ARN) disagrees with the sample's expectations; "" when it agrees."""
    problem, summary = invoke_and_summarise(lambda_client, function, kinesis_event(sample), sample["response"],
                                            "the vectors' records")
    if problem:
        return problem
    differ = {key: summary.get(key) for key, want in sample["log"].items() if summary.get(key) != want}
    return f"batch processed {differ} is not {sample['log']}" if differ else ""


def recent_sample(s3: Any, bucket: str, now: float) -> dict[str, Any] | None:
    """The newest small raw archive object of the last two hours that has no quarantine object beside it, as
    ``{"key", "shard", "records": [[partitionKey, base64 data, arrival ms, sequence number], ...]}``."""
    found = []
    for hours_ago in (0, 1):
        prefix = ARCHIVE_PREFIXES[0] + time.strftime("year=%Y/month=%m/day=%d/hour=%H/",
                                                      time.gmtime(now - hours_ago * 3600))
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found += [item for item in page.get("Contents", []) if item["Size"] <= RECENT_MAX_BYTES]
    for item in sorted(found, key=lambda item: item["LastModified"], reverse=True)[:20]:
        quarantine = ARCHIVE_PREFIXES[1] + item["Key"][len(ARCHIVE_PREFIXES[0]):]
        if s3.list_objects_v2(Bucket=bucket, Prefix=quarantine, MaxKeys=1).get("KeyCount"):
            continue
        lines = gzip.decompress(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()).splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        return {"key": item["Key"], "shard": item["Key"].split("/")[5], "records": [
            [r.get("partitionKey", ""), r.get("dataBase64") or base64.b64encode(r["data"].encode()).decode(),
             r["arrivedAt"], str(r["sequenceNumber"])] for r in records]}
    return None


def recent_verdict(lambda_client: Any, function: str, recent: dict[str, Any]) -> str:
    """Why ``function`` mishandles the recent records the running version stored whole; "" when it does not."""
    problem, summary = invoke_and_summarise(lambda_client, function, kinesis_event(recent),
                                            {"batchItemFailures": []}, recent["key"])
    if problem:
        return problem
    count = len(recent["records"])
    kept = int(summary.get("stored") or 0) + int(summary.get("duplicates") or 0)
    if summary.get("records") != count or summary.get("quarantined") or summary.get("failed") or kept < count:
        return (f"on {recent['key']}, which the running version stored whole, the new version logged {summary}: "
                f"expected {count} records, none quarantined or failed, at least one reading each")
    return ""


def kinesis_event(sample: dict[str, Any]) -> dict[str, Any]:
    """The Lambda Kinesis event of the sample's ``[partitionKey, base64 data, arrival ms(, sequence number)]``
    records (numbered from 1 when they carry no sequence number)."""
    return {"Records": [{
        "kinesis": {"partitionKey": spec[0], "sequenceNumber": (spec[3:] or [str(index)])[0], "data": spec[1],
                    "approximateArrivalTimestamp": spec[2] / 1000},
        "eventSource": "aws:kinesis", "eventID": f"{sample['shard']}:{(spec[3:] or [str(index)])[0]}",
    } for index, spec in enumerate(sample["records"], 1)]}


def _document(line: str) -> dict[str, Any]:
    """A log line's JSON object (Lambda's JSON log format nests the printed line under ``message``)."""
    for text in (line, line[line.find("{"):]):
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("message"), str) and value["message"][:1] == "{":
            return _document(value["message"])
        return value if isinstance(value, dict) else {}
    return {}


def handler(event: dict[str, Any], context: Any, clients: Any = None) -> str:
    """Lambda entry point: check the new version, report to CodeDeploy, return the status."""
    lambda_client, codedeploy, s3 = clients or hook_clients(context.get_remaining_time_in_millis())
    recent = None
    try:
        reason = verdict(lambda_client, os.environ["NEW_VERSION"], SAMPLE)
        recent = None if reason else recent_sample(s3, os.environ["ARCHIVE_BUCKET"], time.time())
        reason = reason or (recent_verdict(lambda_client, os.environ["NEW_VERSION"], recent) if recent else "")
    except Exception as exc:  # any failure refuses the rollout, and CodeDeploy must hear of it
        reason = f"the check failed: {exc!r}"
    status = "Failed" if reason else "Succeeded"
    print(json.dumps({"message": "pre-traffic check", "status": status, "reason": reason,
                      "recent": recent["key"] if recent else "none in the last two hours"}))
    codedeploy.put_lifecycle_event_hook_execution_status(
        deploymentId=event["DeploymentId"], lifecycleEventHookExecutionId=event["LifecycleEventHookExecutionId"],
        status=status)
    return status


# ---------------------------------------------------------------- render time (not part of the hook)

from iotpipe.naming import ARCHIVE_PREFIXES  # noqa: E402  (hook_code appends its value to the hook)

# The vectors' record-level rejections: the record is quarantined whole before any threshold or
# unknown-sensor setting applies, so no configuration stores it. In order of preference: the sample keeps the
# template small (CloudFormation's 51,200-byte body).
WHOLE_RECORD_REASONS = ("data is not JSON", "data is not UTF-8", "deviceId differs from topic", "invalid deviceId",
                        "missing deviceId", "payload is not a JSON object")
HOOK_SHARD = "shardId-pretraffic-hook"  # its raw/quarantine archive objects stay apart from the stream's


def hook_sample(vectors: list[dict[str, Any]], *, limit: int = 4) -> dict[str, Any]:
    """The hook's records and expectations: the first vector record of each of the first ``limit`` whole-record
    reasons (:data:`WHOLE_RECORD_REASONS`), as ``[partitionKey, base64 data, arrival ms]``."""
    found: dict[str, dict[str, Any]] = {}
    for vector in vectors:
        if "before" in vector:  # its expectations depend on earlier batches
            continue
        reasons = {row["sequenceNumber"]: row["reason"] for row in vector["expect"]["quarantine"]
                   if "sensorType" not in row and "rejected" not in row}
        for record in vector["records"]:
            found.setdefault(reasons.get(record["sequenceNumber"], ""), record)
    chosen = [found[reason] for reason in WHOLE_RECORD_REASONS if reason in found][:limit]
    records = [[spec["partitionKey"], _data(spec), spec["arrivedAt"]] for spec in chosen]
    log = {"records": len(records), "stored": 0, "quarantined": len(records), "failed": 0}
    return {"shard": HOOK_SHARD, "records": records, "response": {"batchItemFailures": []}, "log": log}


def shipped_vectors() -> list[dict[str, Any]]:
    """The shared behaviour vectors shipped with the processors (``handler/vectors/*.json``), by name."""
    from importlib import resources

    folder = resources.files("iotpipe.handlers").joinpath("vectors")
    return [json.loads(entry.read_text(encoding="utf-8"))
            for entry in sorted(folder.iterdir(), key=lambda e: e.name) if entry.name.endswith(".json")]


def _data(spec: dict[str, Any]) -> str:
    if "payload" in spec:
        return base64.b64encode(json.dumps(spec["payload"]).encode()).decode()
    if "text" in spec:
        return base64.b64encode(spec["text"].encode()).decode()
    return str(spec["base64"])


def hook_code(sample: dict[str, Any]) -> str:
    """The hook's inline source: this module up to the render-time part, without docstrings or comments,
    with ``SAMPLE`` set."""
    source = Path(__file__).read_text(encoding="utf-8").split("# ----------------------------------------------")[0]
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            body.pop(0)
            if not body:
                body.append(ast.Pass())
    for node in ast.walk(tree):  # annotations are for mypy here, bytes of the template there
        if isinstance(node, ast.arg):
            node.annotation = None
        elif isinstance(node, ast.FunctionDef):
            node.returns = None
    tree.body = [node for node in tree.body
                 if not isinstance(node, ast.AnnAssign)  # SAMPLE's placeholder: the rendered one follows
                 and not (isinstance(node, ast.Import) and node.names[0].name == "ast")
                 and not (isinstance(node, ast.ImportFrom) and node.module in ("pathlib", "typing"))]
    return ast.unparse(tree) + f"\nSAMPLE = {sample!r}\nARCHIVE_PREFIXES = {ARCHIVE_PREFIXES!r}\n"
