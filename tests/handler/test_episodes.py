"""One SNS notification per anomaly episode of a series (docs/contract.md 12, "Episodes and notifications"):
handler/vectors/episodes/*.json through the Python processor against a moto server, the topic subscribed by an
SQS queue as an e-mail subscription would be; handler/node/test/episodes.test.js runs the same files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from processor_support import (
    VECTORS_DIR,
    clients,
    create_resources,
    kinesis_event,
    load_handler,
    make_runtime,
    scan_items,
)

index = load_handler()
SCENARIOS = sorted((VECTORS_DIR / "episodes").glob("*.json"))


class Recorder:
    """The SNS client, recording each Publish it passes on."""

    def __init__(self, client: Any) -> None:
        self.client, self.published = client, []

    def publish(self, **kwargs: Any) -> Any:
        self.published.append(kwargs)
        return self.client.publish(**kwargs)


def expected_message(spec: dict[str, Any], items: list[dict[str, Any]]) -> str:
    [item] = [i for i in items if i["sk"] == spec["sk"]]
    message = spec["message"]
    for name in ("score", "expectedLow", "expectedHigh"):
        message = message.replace("{" + name + "}", index.format_number(item[name]))
    return str(message)


def subscribed_topic(endpoint: str) -> tuple[Any, str, Any, str]:
    session = boto3.session.Session(region_name="us-east-1")
    sns, sqs = session.client("sns", endpoint_url=endpoint), session.client("sqs", endpoint_url=endpoint)
    topic = sns.create_topic(Name="iot-pipeline-alarms-test")["TopicArn"]
    queue = sqs.create_queue(QueueName="alarm-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return sns, topic, sqs, queue


def delivered(sqs: Any, queue: str) -> list[dict[str, Any]]:
    """The notifications the queue received (SNS envelopes), read until it is empty (bounded)."""
    received: list[dict[str, Any]] = []
    for _ in range(50):
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            break
        received += [json.loads(m["Body"]) for m in messages]
        sqs.delete_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)])
    return received


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: Path(p).stem)
def test_one_notification_per_episode_and_none_on_a_retry(moto_endpoint: str, path: Path) -> None:
    scenario = json.loads(path.read_text())
    s3, dynamodb = clients(moto_endpoint)
    create_resources(s3, dynamodb)
    sns, topic, sqs, queue = subscribed_topic(moto_endpoint)
    for batch in scenario["batches"]:
        recorder = Recorder(sns)
        runtime = make_runtime(index, {**scenario["env"], "ALARM_TOPIC_ARN": topic}, s3, dynamodb,
                               emit=lambda _line: None)
        runtime = index.replace(runtime, sns=recorder)
        assert index.process(kinesis_event(batch["records"]), None, runtime) == {"batchItemFailures": []}
        items = scan_items(dynamodb)
        expected = [{"TopicArn": topic, "Subject": spec["subject"], "Message": expected_message(spec, items)}
                    for spec in batch["notifications"]]
        assert recorder.published == expected
        assert [(n["Subject"], n["Message"]) for n in delivered(sqs, queue)] == [
            (e["Subject"], e["Message"]) for e in expected]
        [state] = [i for i in items if i["sk"] == index.STATE_SORT_KEY]
        assert json.loads(state["episodes"]) == batch["episodes"]


def test_without_a_topic_nothing_is_published_and_the_state_item_has_no_episodes(moto_endpoint: str) -> None:
    [scenario] = [json.loads(p.read_text()) for p in SCENARIOS if p.stem == "notifications"]
    s3, dynamodb = clients(moto_endpoint)
    create_resources(s3, dynamodb)
    runtime = make_runtime(index, scenario["env"], s3, dynamodb, emit=lambda _line: None)
    assert runtime.sns is None
    index.process(kinesis_event(scenario["batches"][0]["records"]), None, runtime)
    [state] = [i for i in scan_items(dynamodb) if i["sk"] == index.STATE_SORT_KEY]
    assert "episodes" not in state and "prevEpisodes" not in state


def test_a_failed_publish_is_logged_with_its_message_and_the_batch_still_commits(moto_endpoint: str) -> None:
    [scenario] = [json.loads(p.read_text()) for p in SCENARIOS if p.stem == "notifications"]
    s3, dynamodb = clients(moto_endpoint)
    create_resources(s3, dynamodb)
    lines: list[str] = []
    missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    runtime = make_runtime(index, {**scenario["env"], "ALARM_TOPIC_ARN": missing}, s3, dynamodb, emit=lines.append)
    runtime = index.replace(runtime, sns=boto3.session.Session(region_name="us-east-1").client(
        "sns", endpoint_url=moto_endpoint))
    assert index.process(kinesis_event(scenario["batches"][0]["records"]), None, runtime) == {"batchItemFailures": []}
    failures = [json.loads(line) for line in lines if '"anomaly notification failed"' in line]
    assert [f["subject"] for f in failures] == ["[test] anomaly: press-1 temperature"]
    assert "Anomaly on device press-1, sensor temperature" in failures[0]["notification"]
    [state] = [i for i in scan_items(dynamodb) if i["sk"] == index.STATE_SORT_KEY]
    assert state["seq"] == "1039" and json.loads(state["episodes"]) == {"temperature": 1767225630000}


@pytest.mark.parametrize("quiet", [-1, 1.5, 604_801, "60", True])
def test_an_episode_quiet_outside_the_contract_fails_the_start_naming_it(quiet: Any) -> None:
    thresholds = {"temperature": {"min": 10, "max": 80, "unit": "celsius", "detector": "onset",
                                  "episodeQuiet": quiet}}
    with pytest.raises(ValueError, match="episodeQuiet"):
        index.Settings.from_env({"DYNAMODB_TABLE": "t", "S3_BUCKET": "b", "THRESHOLDS": json.dumps(thresholds)})
