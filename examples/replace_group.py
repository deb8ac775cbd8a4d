"""Blueprint: replace a built-in group's builder.

    iotpipe render --blueprint examples/replace_group.py:customise

The monitoring group is rebuilt by a builder of our own, called exactly like the built-in one: it keeps
everything the built-in makes and adds an alarm on the processor's p99 duration that notifies the same topic
(the monitoring group's ``alarm_topic`` handle, the processor group's ``function_name`` handle).
"""

from __future__ import annotations

from troposphere import cloudwatch as cw

from iotpipe import Composition, Names, PipelineConfig
from iotpipe.groups.ingest import IngestGroup
from iotpipe.groups.keys import KeyGroup
from iotpipe.groups.monitoring import MonitoringGroup, build_monitoring
from iotpipe.groups.processor import ProcessorGroup
from iotpipe.groups.stream import StreamGroup


def monitoring_with_duration_alarm(cfg: PipelineConfig, names: Names, *, keys: KeyGroup, stream: StreamGroup,
                                   processor: ProcessorGroup, ingest: IngestGroup) -> MonitoringGroup:
    """The built-in monitoring group plus a p99 duration alarm at 80 % of the processor's timeout."""
    group = build_monitoring(cfg, names, keys=keys, stream=stream, processor=processor, ingest=ingest)
    alarm = cw.Alarm(
        names.id("ProcessorDurationAlarm"),
        AlarmName=names.alarm_name("IoT-Processor-Slow"),
        AlarmDescription="The processor's p99 duration is above 80 % of its timeout",
        Namespace="AWS/Lambda",
        MetricName="Duration",
        ExtendedStatistic="p99",
        Dimensions=[cw.MetricDimension(Name="FunctionName", Value=processor.function_name)],
        Period=cfg.alarms.period_seconds,
        EvaluationPeriods=3,
        Threshold=cfg.processor.timeout_seconds * 1000 * 0.8,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
        AlarmActions=[group.alarm_topic],
        OKActions=[group.alarm_topic],
    )
    return MonitoringGroup((*group.resources, alarm), group.outputs, group.alarm_topic)


def customise(composition: Composition) -> Composition:
    """The default pipeline with the monitoring group replaced."""
    return composition.recompose(overrides={"monitoring": monitoring_with_duration_alarm})
