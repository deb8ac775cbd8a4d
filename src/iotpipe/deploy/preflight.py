"""Checks that refuse, before a change set is made, what CloudFormation or the services would refuse later.

moto accepts all of these; AWS does not. Each check quotes the AWS behaviour it rests on:

- replacing a resource whose create-only property changes, when the replacement cannot coexist with the old
  one (an event source mapping for the same stream and function; a custom-named resource keeping its name);
- changing the value of an export another stack imports;
- reserving more Lambda concurrency than the account may;
- an ``EnvironmentSuffix`` parameter that is not the env's own (it would give one env another's names).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from iotpipe import contract
from iotpipe.aws import call_aws
from iotpipe.errors import AwsError, ConfigError, DeployError

# Create-only properties (CloudFormation resource schemas, "createOnlyProperties") of the types iotpipe and the
# seed use: a change to any of them replaces the resource.
CREATE_ONLY: Mapping[str, tuple[str, ...]] = {
    "AWS::Lambda::EventSourceMapping": ("EventSourceArn", "StartingPosition", "StartingPositionTimestamp",
                                        "SelfManagedEventSource", "AmazonManagedKafkaEventSourceConfig"),
    "AWS::DynamoDB::Table": ("TableName", "KeySchema"),
    "AWS::Kinesis::Stream": ("Name",),
    "AWS::S3::Bucket": ("BucketName",),
    "AWS::IAM::Role": ("RoleName", "Path"),
    "AWS::Lambda::Function": ("FunctionName",),
    "AWS::Logs::LogGroup": ("LogGroupName",),
    "AWS::SQS::Queue": ("QueueName", "FifoQueue"),
    "AWS::SNS::Topic": ("TopicName", "FifoTopic"),
    "AWS::IoT::Policy": ("PolicyName",),
    "AWS::IoT::Thing": ("ThingName",),
    "AWS::IoT::TopicRule": ("RuleName",),
    "AWS::CloudWatch::Alarm": ("AlarmName",),
    "AWS::CloudWatch::Dashboard": ("DashboardName",),
    "AWS::KMS::Alias": ("AliasName",),
}
# The property that names each custom-named type (the one that makes a replacement impossible if unchanged).
NAME_PROPERTY: Mapping[str, str] = {
    "AWS::DynamoDB::Table": "TableName", "AWS::Kinesis::Stream": "Name", "AWS::S3::Bucket": "BucketName",
    "AWS::IAM::Role": "RoleName", "AWS::Lambda::Function": "FunctionName", "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::SQS::Queue": "QueueName", "AWS::SNS::Topic": "TopicName", "AWS::IoT::Policy": "PolicyName",
    "AWS::IoT::Thing": "ThingName", "AWS::IoT::TopicRule": "RuleName", "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::CloudWatch::Dashboard": "DashboardName", "AWS::KMS::Alias": "AliasName",
}
# Lambda: "You can reserve up to the Unreserved account concurrency value minus 100" (Lambda developer guide,
# reserved concurrency).
UNRESERVED_MINIMUM = 100
CONCURRENCY_QUOTA = "Service Quotas > AWS Lambda > Concurrent executions (L-B99A9384)"
NOT_IMPORTED = "is not imported by any stack"


@dataclass(frozen=True)
class Replacement:
    """A resource an update would replace, and why CloudFormation would refuse it (empty: it may)."""

    logical_id: str
    resource_type: str
    properties: tuple[str, ...]
    refusal: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The replacement as JSON-friendly data."""
        return {"logicalId": self.logical_id, "type": self.resource_type, "properties": list(self.properties),
                "refusal": self.refusal}


def check_environment_suffix(parameters: Iterable[tuple[str, str]], env: str) -> None:
    """ConfigError unless an ``EnvironmentSuffix`` parameter, if given, is the env itself (and lowercase).

    The suffix names every resource; ``--param EnvironmentSuffix=prod`` on ``--env dev`` would give the dev stack
    the prod names.
    """
    for key, value in parameters:
        if key != contract.ENV_PARAM:
            continue
        if value != env:
            raise ConfigError(f"parameter {contract.ENV_PARAM}={value!r} differs from --env {env}: it names every "
                              f"resource, so it must be the env itself; drop it, or use --env {value.lower()}")


def replacements(deployed: Mapping[str, Any], wanted: Mapping[str, Any]) -> tuple[Replacement, ...]:
    """Resources present in both templates whose create-only properties differ (CloudFormation replaces them).

    ``refusal`` says why AWS would refuse the replacement: an event source mapping replaced for the same stream
    and function ("The event source arn ... and function ... provided mapping already exists", AWS SAM issue
    1320), or a custom-named resource that keeps its name ("CloudFormation cannot update a stack when a
    custom-named resource requires replacing").
    """
    old_resources = deployed.get("Resources") or {}
    new_resources = wanted.get("Resources") or {}
    found = []
    for logical_id, new in sorted(new_resources.items()):
        old = old_resources.get(logical_id)
        if not isinstance(old, Mapping) or old.get("Type") != new.get("Type"):
            continue
        resource_type = str(new.get("Type"))
        old_props, new_props = old.get("Properties") or {}, new.get("Properties") or {}
        changed = tuple(name for name in CREATE_ONLY.get(resource_type, ())
                        if _canonical(old_props.get(name)) != _canonical(new_props.get(name)))
        if changed:
            found.append(Replacement(logical_id, resource_type, changed,
                                     _refusal(logical_id, resource_type, old_props, new_props)))
    return tuple(found)


def _refusal(logical_id: str, resource_type: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    if resource_type == "AWS::Lambda::EventSourceMapping":
        same_source = _canonical(old.get("EventSourceArn")) == _canonical(new.get("EventSourceArn"))
        same_function = _canonical(old.get("FunctionName")) == _canonical(new.get("FunctionName"))
        if same_source and same_function:
            return (f"{logical_id}: replacing it creates a second mapping for the same stream and function before "
                    "the old one is deleted, and Lambda refuses that (\"provided mapping already exists\")")
        return ""
    name = NAME_PROPERTY.get(resource_type)
    if name and new.get(name) is not None and _canonical(old.get(name)) == _canonical(new.get(name)):
        return (f"{logical_id}: a custom-named {resource_type} cannot be replaced under the same {name} "
                "(CloudFormation cannot update a stack when a custom-named resource requires replacing)")
    return ""


def check_replacements(deployed: Mapping[str, Any], wanted: Mapping[str, Any], env: str) -> tuple[Replacement, ...]:
    """The replacements an update makes; DeployError (before any write) if AWS would refuse one of them."""
    found = replacements(deployed, wanted)
    refused = [r for r in found if r.refusal]
    if not refused:
        return found
    hints = []
    for item in refused:
        if item.resource_type == "AWS::Lambda::EventSourceMapping" and "StartingPosition" in item.properties:
            position = (deployed["Resources"][item.logical_id].get("Properties") or {}).get("StartingPosition")
            hints.append(f"set starting_position = \"{position}\" in [env.{env}.processor] of iotpipe.toml to keep "
                         "the deployed mapping (docs/migrating.md)")
    listed = "; ".join(item.refusal for item in refused)
    fix = ("; to fix: " + "; ".join(hints)) if hints else ""
    raise DeployError(f"the update would replace resources AWS refuses to replace: {listed}{fix}")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# --- exports -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportChange:
    """An export of the stack whose value the update changes, and the stacks that import it."""

    export_name: str
    output_key: str
    importers: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The export change as JSON-friendly data."""
        return {"exportName": self.export_name, "outputKey": self.output_key, "importers": list(self.importers)}


def changing_outputs(deployed: Mapping[str, Any], wanted: Mapping[str, Any],
                     replaced: Iterable[Replacement]) -> tuple[str, ...]:
    """Output keys whose value changes: a different expression, or one that refers to a replaced resource."""
    replaced_ids = {item.logical_id for item in replaced}
    old_outputs = deployed.get("Outputs") or {}
    changing = []
    for key, output in (wanted.get("Outputs") or {}).items():
        old = old_outputs.get(key)
        if old is None:
            continue
        if _canonical(old.get("Value")) != _canonical(output.get("Value")) or \
                _references(output.get("Value")) & replaced_ids:
            changing.append(str(key))
    removed = [str(key) for key in old_outputs if key not in (wanted.get("Outputs") or {})]
    return tuple(sorted(changing + removed))


def _references(value: Any) -> set[str]:
    """Logical ids a value refers to through Ref, Fn::GetAtt or ${...} in Fn::Sub."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= _references(item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::GetAtt":
                found.add(str(item[0] if isinstance(item, list) else str(item).split(".")[0]))
            elif key == "Fn::Sub":
                text = item[0] if isinstance(item, list) else item
                found |= {name.split(".")[0] for name in re.findall(r"\$\{([^!}][^}]*)\}", str(text))}
                found |= _references(item)
            else:
                found |= _references(item)
    return found


def importers(cloudformation: Any, export_name: str) -> tuple[str, ...]:
    """Stacks importing ``export_name`` (ListImports, paginated); empty when none does."""
    names: list[str] = []
    kwargs: dict[str, str] = {"ExportName": export_name}
    for _ in range(100):
        try:
            page = call_aws("cloudformation", "list-imports", cloudformation.list_imports, **kwargs)
        except AwsError as exc:
            if NOT_IMPORTED in exc.aws_message:
                return ()
            if not exc.code:
                raise
            raise AwsError(f"{exc} (export {export_name}); CloudFormation refuses to change an export another "
                           "stack imports, so deploy checks it first: allow cloudformation:ListImports",
                           service=exc.service, operation=exc.operation, code=exc.code,
                           aws_message=exc.aws_message) from None
        names.extend(page.get("Imports", []))
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    return tuple(sorted(set(names)))


def export_changes(cloudformation: Any, stack_outputs: Iterable[Mapping[str, Any]],
                   changing: Iterable[str]) -> tuple[ExportChange, ...]:
    """The changing outputs that are exports imported elsewhere (``stack_outputs`` as describe-stacks gives)."""
    keys = set(changing)
    found = []
    for output in stack_outputs:
        export = output.get("ExportName")
        if not export or output.get("OutputKey") not in keys:
            continue
        stacks = importers(cloudformation, str(export))
        if stacks:
            found.append(ExportChange(str(export), str(output["OutputKey"]), stacks))
    return tuple(found)


def check_exports(cloudformation: Any, stack_outputs: Iterable[Mapping[str, Any]], changing: Iterable[str]) -> None:
    """DeployError if the update changes an export another stack imports.

    CloudFormation: "you can't modify or remove an output value that is referenced by another stack".
    """
    conflicts = export_changes(cloudformation, stack_outputs, changing)
    if conflicts:
        listed = "; ".join(f"{c.export_name} (output {c.output_key}) is imported by {', '.join(c.importers)}"
                           for c in conflicts)
        raise DeployError(f"the update changes exports other stacks import, which CloudFormation refuses: {listed}; "
                          "update those stacks to stop importing them first (docs/migrating.md)")


# --- account concurrency -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConcurrencyCheck:
    """What the account allows for the processor's reservation."""

    account_limit: int
    unreserved: int
    current_reservation: int
    requested: int

    def as_dict(self) -> dict[str, Any]:
        """The check as JSON-friendly data."""
        return {"accountLimit": self.account_limit, "unreserved": self.unreserved,
                "currentReservation": self.current_reservation, "requested": self.requested,
                "allowed": self.allowed, "ok": self.ok, "message": self.message()}

    @property
    def allowed(self) -> int:
        """The most this function may reserve: unreserved (plus what it already holds) minus 100."""
        return self.unreserved + self.current_reservation - UNRESERVED_MINIMUM

    @property
    def ok(self) -> bool:
        """True when the requested reservation fits (nothing requested always fits)."""
        return self.requested == 0 or self.requested <= self.allowed

    def message(self) -> str:
        """One line: what fits, and what to do when it does not."""
        if self.ok:
            return (f"account concurrency {self.account_limit}, unreserved {self.unreserved}: reserving "
                    f"{self.requested} fits (at most {max(self.allowed, 0)})")
        needed = self.account_limit + (self.requested - self.allowed)
        return (f"processor.reserved_concurrency {self.requested} does not fit: the account's concurrency limit "
                f"is {self.account_limit} with {self.unreserved} unreserved, and Lambda keeps "
                f"{UNRESERVED_MINIMUM} unreserved (\"You can reserve up to the Unreserved account concurrency value "
                f"minus 100\"). Raise {CONCURRENCY_QUOTA} to at least {needed}, or set reserved_concurrency = 0 "
                "for this env")


def account_concurrency(lambda_client: Any, function_name: str, requested: int) -> ConcurrencyCheck:
    """GetAccountSettings and the function's current reservation (0 when the function does not exist yet)."""
    limits = call_aws("lambda", "get-account-settings", lambda_client.get_account_settings)["AccountLimit"]
    current = 0
    try:
        current = int(call_aws("lambda", "get-function-concurrency", lambda_client.get_function_concurrency,
                               FunctionName=function_name).get("ReservedConcurrentExecutions") or 0)
    except AwsError as exc:
        if exc.code != "ResourceNotFoundException":
            raise
    return ConcurrencyCheck(account_limit=int(limits.get("ConcurrentExecutions", 0)),
                            unreserved=int(limits.get("UnreservedConcurrentExecutions", 0)),
                            current_reservation=current, requested=requested)


def check_account_concurrency(lambda_client: Any, function_name: str, requested: int) -> ConcurrencyCheck:
    """DeployError naming the quota to raise when the reservation does not fit the account."""
    result = account_concurrency(lambda_client, function_name, requested)
    if not result.ok:
        raise DeployError(result.message())
    return result
