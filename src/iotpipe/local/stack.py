"""The deployed stack as the local runners need it: its template with every intrinsic function resolved.

moto's CloudFormation skips ``AWS::IoT::TopicRule`` and keeps only part of an event source mapping's settings, so
the rule engine, the mapping runner and the function runner read the deployed template (GetTemplate) and resolve
``Ref``, ``Fn::GetAtt``, ``Fn::Sub``, ``Fn::Join``, ``Fn::If`` and ``Fn::Select`` against the stack's parameters
and physical resource ids, as CloudFormation would have.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from iotpipe.errors import LocalError
from iotpipe.local.clients import Clients

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")
# Physical id -> ARN for the resource types whose Arn attribute the pipeline template reads.
_ARN_FORMATS = {
    "AWS::Kinesis::Stream": "arn:{partition}:kinesis:{region}:{account}:stream/{id}",
    "AWS::Lambda::Function": "arn:{partition}:lambda:{region}:{account}:function:{id}",
    "AWS::IAM::Role": "arn:{partition}:iam::{account}:role/{id}",
    "AWS::KMS::Key": "arn:{partition}:kms:{region}:{account}:key/{id}",
    "AWS::DynamoDB::Table": "arn:{partition}:dynamodb:{region}:{account}:table/{id}",
    "AWS::S3::Bucket": "arn:{partition}:s3:::{id}",
    "AWS::SNS::Topic": "{id}",
    "AWS::Logs::LogGroup": "arn:{partition}:logs:{region}:{account}:log-group:{id}:*",
}


@dataclass(frozen=True)
class DeployedStack:
    """A stack's template, parameters and physical resource ids, able to resolve intrinsic functions."""

    name: str
    region: str
    account_id: str
    template: Mapping[str, Any]
    parameters: Mapping[str, str]
    physical_ids: Mapping[str, str]
    last_updated: str
    source_digest: str = ""
    stack_id: str = ""

    @property
    def digest(self) -> str:
        """A fingerprint of what was deployed (template body and parameters), shown when the runners rewire."""
        return self.source_digest

    def resources_of_type(self, resource_type: str) -> dict[str, Mapping[str, Any]]:
        """Logical id -> resource definition, for every resource of ``resource_type``."""
        return {logical_id: resource for logical_id, resource in self.template.get("Resources", {}).items()
                if resource.get("Type") == resource_type}

    def properties(self, logical_id: str) -> Any:
        """The resource's Properties with every intrinsic function resolved."""
        return self.resolve(self.template["Resources"][logical_id].get("Properties", {}))

    def resolve(self, value: Any) -> Any:
        """``value`` with intrinsic functions replaced by what CloudFormation would have made of them."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, Mapping):
            return value
        if len(value) == 1:
            (key, argument), = value.items()
            if key == "Ref":
                return self._ref(argument)
            if key.startswith("Fn::") or key == "Condition":
                return self._function(key, argument)
        return {key: self.resolve(item) for key, item in value.items()}

    def _pseudo(self, name: str) -> str | None:
        return {"AWS::Region": self.region, "AWS::AccountId": self.account_id, "AWS::Partition": "aws",
                "AWS::StackName": self.name, "AWS::URLSuffix": "amazonaws.com"}.get(name)

    def _ref(self, name: str) -> str:
        pseudo = self._pseudo(name)
        if pseudo is not None:
            return pseudo
        if name in self.parameters:
            return self.parameters[name]
        if name in self.physical_ids:
            return self.physical_ids[name]
        raise LocalError(f"stack {self.name}: Ref {name} names no parameter or deployed resource")

    def _get_att(self, logical_id: str, attribute: str) -> str:
        resource = self.template.get("Resources", {}).get(logical_id)
        if resource is None or logical_id not in self.physical_ids:
            raise LocalError(f"stack {self.name}: Fn::GetAtt {logical_id}.{attribute} names no deployed resource")
        physical_id = self.physical_ids[logical_id]
        kind = resource.get("Type", "")
        if kind == "AWS::SQS::Queue" and attribute == "Arn":
            queue_name = physical_id.rstrip("/").rsplit("/", 1)[-1]  # Ref of a queue is its URL
            return f"arn:aws:sqs:{self.region}:{self.account_id}:{queue_name}"
        if kind == "AWS::SQS::Queue" and attribute == "QueueName":
            return physical_id.rstrip("/").rsplit("/", 1)[-1]
        if attribute == "Arn" and kind in _ARN_FORMATS:
            return _ARN_FORMATS[kind].format(partition="aws", region=self.region, account=self.account_id,
                                             id=physical_id)
        raise LocalError(f"stack {self.name}: Fn::GetAtt {logical_id}.{attribute} ({kind}) is not resolved by "
                         "iotpipe local")

    def _function(self, key: str, argument: Any) -> Any:
        if key == "Fn::GetAtt":
            logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
            return self._get_att(logical_id, attribute)
        if key == "Fn::Sub":
            return self._sub(argument)
        if key == "Fn::Join":
            separator, items = argument
            return separator.join(str(item) for item in self.resolve(items))
        if key == "Fn::Select":
            index, items = self.resolve(argument)
            return items[int(index)]
        if key == "Fn::If":
            condition, when_true, when_false = argument
            return self.resolve(when_true if self.condition(condition) else when_false)
        if key in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition"):
            return self._evaluate_condition({key: argument})
        raise LocalError(f"stack {self.name}: {key} is not resolved by iotpipe local")

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
        given = {name: self.resolve(value) for name, value in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in given:
                return str(given[name])
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return self._get_att(logical_id, attribute)
            return self._ref(name)

        return _SUB_VARIABLE.sub(replace, text)

    def condition(self, name: str) -> bool:
        """The value of the template's condition ``name``."""
        return self._evaluate_condition(self.template.get("Conditions", {})[name])

    def _evaluate_condition(self, expression: Any) -> bool:
        (key, argument), = expression.items()
        if key == "Condition":
            return self.condition(argument)
        if key == "Fn::Equals":
            left, right = self.resolve(argument)
            return bool(left == right)
        if key == "Fn::Not":
            return not self._evaluate_condition(argument[0])
        if key == "Fn::And":
            return all(self._evaluate_condition(item) for item in argument)
        if key == "Fn::Or":
            return any(self._evaluate_condition(item) for item in argument)
        raise LocalError(f"stack {self.name}: condition function {key} is not resolved by iotpipe local")


def load_deployed_stack(clients: Clients, stack_name: str,
                        previous: DeployedStack | None = None) -> DeployedStack | None:
    """The deployed stack ``stack_name`` (None when it does not exist or is being deleted).

    When the template body and parameters equal those of ``previous``, ``previous`` itself is returned without
    parsing the template again (the supervisor asks every second).
    """
    from iotpipe.aws import call_aws
    from iotpipe.errors import AwsError

    cloudformation = clients.client("cloudformation")
    try:
        stack = call_aws("cloudformation", "describe-stacks", cloudformation.describe_stacks,
                         StackName=stack_name)["Stacks"][0]
    except AwsError as exc:
        if "does not exist" in exc.aws_message:
            return None
        raise
    if stack["StackStatus"] in ("REVIEW_IN_PROGRESS", "DELETE_COMPLETE", "DELETE_IN_PROGRESS"):
        return None
    body = cloudformation.get_template(StackName=stack_name, TemplateStage="Original")["TemplateBody"]
    given = {p["ParameterKey"]: p.get("ResolvedValue", p.get("ParameterValue", ""))
             for p in stack.get("Parameters", [])}
    source = json.dumps([body, given], sort_keys=True, default=str).encode("utf-8")
    source_digest = hashlib.sha256(source).hexdigest()
    if previous is not None and previous.source_digest == source_digest and previous.stack_id == stack["StackId"]:
        return previous
    template = body if isinstance(body, Mapping) else _parse_template(body)
    resources = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name)
    physical_ids = {summary["LogicalResourceId"]: summary["PhysicalResourceId"]
                    for page in resources for summary in page["StackResourceSummaries"]
                    if summary.get("PhysicalResourceId")}
    parameters = dict(given)
    for name, spec in template.get("Parameters", {}).items():
        parameters.setdefault(name, str(spec.get("Default", "")))
    account_id = stack["StackId"].split(":")[4]
    region = stack["StackId"].split(":")[3]
    return DeployedStack(name=stack_name, region=region, account_id=account_id, template=template,
                         parameters=parameters, physical_ids=physical_ids,
                         last_updated=str(stack.get("LastUpdatedTime") or stack.get("CreationTime")),
                         source_digest=source_digest, stack_id=stack["StackId"])


def _parse_template(body: str) -> Mapping[str, Any]:
    """A template body (JSON or YAML with short-form tags) as plain data."""
    from iotpipe.deploy.plan import parse_template

    return parse_template(body)
