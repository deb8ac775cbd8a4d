"""E9103: every CloudWatch alarm notifies an SNS topic when it fires."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from cfnlint.rules import CloudFormationLintRule, RuleMatch

from iotpipe.lintrules._template import SOURCE_URL, as_list, properties, resources

ALARM_TYPES = frozenset({"AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm"})
TOPIC_TYPE = "AWS::SNS::Topic"


def is_topic(action: Any, types: Mapping[str, str], parameters: Mapping[str, Any]) -> bool:
    """Whether an alarm action is an SNS topic: a Ref to a topic of the template or to a parameter (a topic ARN
    given at deploy time), an SNS ARN, or an ``Fn::If`` whose every branch is one of these."""
    if isinstance(action, str):
        return ":sns:" in action
    if not isinstance(action, Mapping) or len(action) != 1:
        return False
    [(function, argument)] = action.items()
    if function == "Ref":
        return types.get(str(argument)) == TOPIC_TYPE or str(argument) in parameters
    if function == "Fn::Sub":
        return ":sns:" in str(argument[0] if isinstance(argument, list) else argument)
    if function == "Fn::GetAtt":
        target = argument if isinstance(argument, list) else str(argument).split(".")
        return types.get(str(target[0])) == TOPIC_TYPE and str(target[-1]) == "TopicArn"
    if function == "Fn::If" and isinstance(argument, list) and len(argument) == 3:
        return all(is_topic(branch, types, parameters) for branch in argument[1:])
    return False


class AlarmNotifiesTopic(CloudFormationLintRule):
    """An alarm nobody hears is a graph; each one must reach an SNS topic."""

    id = "E9103"
    shortdesc = "Every alarm notifies an SNS topic"
    description = (
        "Each AWS::CloudWatch::Alarm and CompositeAlarm has ActionsEnabled (or leaves it at its default, true) and "
        "an AlarmActions entry that is an SNS topic: a Ref to an AWS::SNS::Topic of the template or to a "
        "parameter, or an SNS topic ARN."
    )
    source_url = SOURCE_URL
    tags: ClassVar[list[str]] = ["iotpipe", "alarms", "observability"]

    def match(self, cfn: Any) -> list[RuleMatch]:
        """A match per alarm that notifies no topic."""
        types = {logical_id: resource_type for logical_id, resource_type, _ in resources(cfn.template)}
        parameters = cfn.template.get("Parameters") or {}
        matches = []
        for logical_id, resource_type, resource in resources(cfn.template):
            if resource_type not in ALARM_TYPES:
                continue
            props = properties(resource)
            path = ["Resources", logical_id, "Properties"]
            if props.get("ActionsEnabled") is False or str(props.get("ActionsEnabled")).lower() == "false":
                matches.append(RuleMatch([*path, "ActionsEnabled"], f"{logical_id}: ActionsEnabled is false, so "
                                         "the alarm notifies nobody; remove it or set it to true"))
                continue
            actions = props.get("AlarmActions")
            if not any(is_topic(action, types, parameters) for action in as_list(actions) if action is not None):
                matches.append(RuleMatch(path + (["AlarmActions"] if actions is not None else []),
                                         f"{logical_id}: the alarm notifies no SNS topic; add AlarmActions with a "
                                         "Ref to the alarm topic (AlarmTopic in iotpipe's template)"))
        return matches
