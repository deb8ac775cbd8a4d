"""Monitoring group: alarms that notify an encrypted SNS topic, and the pipeline dashboard."""

from __future__ import annotations

import json
from dataclasses import dataclass

import awacs.sns as sns
from awacs.aws import Allow, ArnLike, Condition, Principal, Statement, StringEquals
from troposphere import AccountId, AWSObject, Output, Ref, Sub, Tags
from troposphere import cloudwatch as cw
from troposphere import sns as tpsns

from iotpipe import naming, policies
from iotpipe.config import PipelineConfig
from iotpipe.groups.ingest import IngestGroup
from iotpipe.groups.keys import KeyGroup
from iotpipe.groups.processor import ProcessorGroup
from iotpipe.groups.stream import StreamGroup
from iotpipe.naming import DEFAULT_NAMES, Names


@dataclass(frozen=True)
class MonitoringGroup:
    """What the monitoring group made."""

    resources: tuple[AWSObject, ...]
    outputs: tuple[Output, ...]
    # The topic every alarm notifies: an extra group's alarms notify it too.
    alarm_topic: Ref


@dataclass(frozen=True)
class AlarmSpec:
    """One alarm: what it watches and when it fires."""

    logical_id: str
    name: str
    description: str
    namespace: str
    metric: str
    statistic: str
    threshold: float
    dimensions: tuple[tuple[str, object], ...]
    # Further dimension sets of the same metric: the alarm then watches their sum (metric math).
    alternatives: tuple[tuple[tuple[str, object], ...], ...] = ()


def build_monitoring(cfg: PipelineConfig, names: Names = DEFAULT_NAMES, *, keys: KeyGroup, stream: StreamGroup,
                     processor: ProcessorGroup, ingest: IngestGroup) -> MonitoringGroup:
    """The encrypted alarm topic (optional e-mail subscription), every alarm and the dashboard."""
    topic = tpsns.Topic(names.id(naming.ALARM_TOPIC), TopicName=names.alarm_topic_name(),
                        KmsMasterKeyId=keys.key_arn, Tags=Tags(Environment=Ref(naming.ENV_PARAM)))
    subscription = tpsns.SubscriptionResource(
        names.id(naming.ALARM_SUBSCRIPTION), Condition=naming.HAS_ALARM_EMAIL, Protocol="email",
        TopicArn=Ref(topic), Endpoint=Ref(naming.ALARM_EMAIL_PARAM))
    alarms = tuple(_alarm(spec, names, cfg.alarms.period_seconds, Ref(topic))
                   for spec in alarm_specs(cfg, names, stream=stream, processor=processor, ingest=ingest))
    resources = (topic, _topic_policy(names, topic), subscription, *alarms, _dashboard(cfg, names, processor))
    outputs = (Output(names.output(naming.OUT_ALARM_TOPIC), Description="SNS topic every alarm notifies",
                      Value=Ref(topic)),)
    return MonitoringGroup(resources, outputs, Ref(topic))


def alarm_specs(cfg: PipelineConfig, names: Names = DEFAULT_NAMES, *, stream: StreamGroup, processor: ProcessorGroup,
                ingest: IngestGroup) -> tuple[AlarmSpec, ...]:
    """The seed's three alarms (same logical ids and names) and the ones iotpipe adds."""
    env = names.metric_environment()
    function = (("FunctionName", processor.function_name),)
    limits = cfg.alarms
    return (
        AlarmSpec(naming.LAMBDA_ERROR_ALARM, "IoT-Lambda-Errors", "Alert when Lambda function has high error rate",
                  "AWS/Lambda", "Errors", "Sum", limits.lambda_errors, function),
        AlarmSpec(naming.ANOMALY_ALARM, "IoT-High-Anomalies", "Alert when anomaly detection rate is high",
                  naming.METRIC_NAMESPACE, naming.METRIC_ANOMALIES, "Sum", limits.anomalies, (("Environment", env),)),
        # Seed watched AWS/Kinesis "IteratorAge", a metric that does not exist, so it never fired.
        AlarmSpec(naming.ITERATOR_AGE_ALARM, "IoT-Kinesis-Iterator-Age",
                  "Alert when Kinesis iterator age is high indicating processing lag",
                  "AWS/Lambda", "IteratorAge", "Maximum", limits.iterator_age_ms, function),
        AlarmSpec("DeadLetterQueueAlarm", "IoT-Processor-Dead-Letters",
                  "Records exhausted their retries and wait in the dead-letter queue",
                  "AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", 0,
                  (("QueueName", processor.queue_name),)),
        AlarmSpec("ProcessorThrottleAlarm", "IoT-Processor-Throttles", "The processor is being throttled",
                  "AWS/Lambda", "Throttles", "Sum", limits.throttles, function),
        AlarmSpec("KinesisWriteThrottleAlarm", "IoT-Kinesis-Write-Throttled",
                  "The stream refused writes: add shards or use on-demand mode",
                  "AWS/Kinesis", "WriteProvisionedThroughputExceeded", "Sum", 0,
                  (("StreamName", stream.stream_name),)),
        AlarmSpec("RuleActionFailureAlarm", "IoT-Rule-Action-Failures",
                  # The error action writes to the raw bucket, not a log group: point operators there.
                  "The topic rule failed to put readings into Kinesis (see rule-errors/ in the raw bucket)",
                  "AWS/IoT", "Failure", "Sum", 0, (("RuleName", ingest.rule_name),
                                                   ("ActionType", naming.KINESIS_ACTION_TYPES[0])),
                  tuple((("RuleName", ingest.rule_name), ("ActionType", kind))
                        for kind in naming.KINESIS_ACTION_TYPES[1:])),
        # A payload that is not JSON fails the rule's SQL before any action runs: the error action never sees it,
        # and ParseError is the only trace (AWS IoT rule metrics).
        AlarmSpec("RuleParseErrorAlarm", "IoT-Rule-Parse-Errors",
                  "Devices published payloads that are not JSON; the rule dropped them without running its error "
                  "action", "AWS/IoT", "ParseError", "Sum", 0, (("RuleName", ingest.rule_name),)),
        AlarmSpec("RuleNotFoundAlarm", "IoT-Rule-Not-Found",
                  "Messages were sent to the rule (Basic Ingest) while it did not exist or was disabled",
                  "AWS/IoT", "RuleNotFound", "Sum", 0, (("RuleName", ingest.rule_name),)),
        AlarmSpec(naming.QUARANTINE_ALARM, "IoT-Records-Quarantined",
                  "The processor quarantined records it could not understand",
                  naming.METRIC_NAMESPACE, naming.METRIC_QUARANTINED, "Sum", limits.quarantined_records,
                  (("Environment", env),)),
    )


def _metric(spec: AlarmSpec, period: int) -> dict[str, object]:
    """The alarm's metric properties: one metric, or the sum of its dimension sets (missing data as 0)."""
    if not spec.alternatives:
        return {"Namespace": spec.namespace, "MetricName": spec.metric, "Statistic": spec.statistic,
                "Period": period,
                "Dimensions": [cw.MetricDimension(Name=name, Value=value) for name, value in spec.dimensions]}
    sets = (spec.dimensions, *spec.alternatives)
    queries = [cw.MetricDataQuery(
        Id=f"m{i}", ReturnData=False,
        MetricStat=cw.MetricStat(Period=period, Stat=spec.statistic, Metric=cw.Metric(
            Namespace=spec.namespace, MetricName=spec.metric,
            Dimensions=[cw.MetricDimension(Name=name, Value=value) for name, value in dimensions])))
        for i, dimensions in enumerate(sets)]
    total = cw.MetricDataQuery(Id="total", Label=spec.metric, ReturnData=True,
                               Expression=" + ".join(f"FILL(m{i}, 0)" for i in range(len(sets))))
    return {"Metrics": [total, *queries]}


def _alarm(spec: AlarmSpec, names: Names, period: int, topic: Ref) -> cw.Alarm:
    return cw.Alarm(
        names.id(spec.logical_id),
        AlarmName=names.alarm_name(spec.name),
        AlarmDescription=spec.description,
        **_metric(spec, period),
        EvaluationPeriods=1,
        Threshold=spec.threshold,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
        # Seed alarms had no actions, so they notified nobody.
        AlarmActions=[topic],
        OKActions=[topic],
    )


def _topic_policy(names: Names, topic: tpsns.Topic) -> tpsns.TopicPolicy:
    publish = Statement(Sid="CloudWatchAlarmsPublish", Effect=Allow,
                        Principal=Principal("Service", ["cloudwatch.amazonaws.com"]),
                        Action=[sns.Publish], Resource=[Ref(topic)],
                        # Without these, another account's alarms could page this account's on-call (confused deputy).
                        Condition=Condition([
                            ArnLike("aws:SourceArn",
                                    Sub("arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:*")),
                            StringEquals("aws:SourceAccount", AccountId),
                        ]))
    return tpsns.TopicPolicy(names.id(naming.ALARM_TOPIC_POLICY), Topics=[Ref(topic)],
                             PolicyDocument=policies.document(publish))


def _dashboard(cfg: PipelineConfig, names: Names, processor: ProcessorGroup) -> cw.Dashboard:
    sensors = list(cfg.thresholds)
    # Fn::Sub variables bound to the processor group's handles (no logical id spelled here).
    env, fn, queue = "${MetricEnvironment}", "${ProcessorFunctionName}", "${DeadLetterQueueName}"

    def per_sensor(metric: str) -> list[list[object]]:
        return [[naming.METRIC_NAMESPACE, metric, "Environment", env, "SensorType", s] for s in sensors]

    widgets = [
        _widget("Readings processed by sensor type", per_sensor(naming.METRIC_READINGS), 0, 0),
        _widget("Anomalies by sensor type", per_sensor(naming.METRIC_ANOMALIES), 12, 0),
        _widget("Quarantined records",
                [[naming.METRIC_NAMESPACE, naming.METRIC_QUARANTINED, "Environment", env]], 0, 6),
        _widget("Iterator age (ms)", [["AWS/Lambda", "IteratorAge", "FunctionName", fn, {"stat": "Maximum"}]],
                12, 6),
        _widget("Processor errors, throttles and duration",
                [["AWS/Lambda", "Errors", "FunctionName", fn], ["AWS/Lambda", "Throttles", "FunctionName", fn],
                 ["AWS/Lambda", "Duration", "FunctionName", fn, {"stat": "Average", "yAxis": "right"}]], 0, 12),
        _widget("Dead-letter queue depth",
                [["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", queue, {"stat": "Maximum"}]],
                12, 12),
    ]
    body = json.dumps({"widgets": widgets}, sort_keys=True, separators=(",", ":"))
    return cw.Dashboard(names.id(naming.DASHBOARD), DashboardName=names.dashboard_name(),
                        DashboardBody=Sub(body, MetricEnvironment=names.metric_environment(),
                                          ProcessorFunctionName=processor.function_name,
                                          DeadLetterQueueName=processor.queue_name))


def _widget(title: str, metrics: list[list[object]], x: int, y: int) -> dict[str, object]:
    return {
        "type": "metric", "x": x, "y": y, "width": 12, "height": 6,
        "properties": {"title": title, "metrics": metrics, "region": "${AWS::Region}", "stat": "Sum",
                       "period": 300, "view": "timeSeries"},
    }
