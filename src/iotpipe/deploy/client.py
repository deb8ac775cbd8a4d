"""A thin facade over the boto3 CloudFormation, S3 and STS clients used by deploy.

Every AWS error is mapped to an :class:`~iotpipe.errors.IotpipeError` subclass whose message names the call,
the reason and what to do; plan and execute never see a botocore exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from iotpipe.aws import aws_error, call_aws
from iotpipe.errors import AwsError, DeployError

T = TypeVar("T")

NO_CHANGE_REASONS = ("didn't contain changes", "No updates are to be performed")
MAX_PAGES = 1000
DELETE_BATCH = 1000


class StackNotFound(AwsError):
    """The named stack does not exist (describe-stacks said so)."""


@dataclass(frozen=True)
class Stack:
    """What describe-stacks says about one stack."""

    name: str
    stack_id: str
    status: str
    status_reason: str = ""
    termination_protection: bool = False
    outputs: tuple[tuple[str, str], ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    exports: tuple[tuple[str, str], ...] = ()  # (OutputKey, ExportName)

    @property
    def output_map(self) -> dict[str, str]:
        """Outputs as ``{OutputKey: OutputValue}``."""
        return dict(self.outputs)

    def as_dict(self) -> dict[str, Any]:
        """The stack as JSON-friendly data."""
        return {"stackName": self.name, "stackId": self.stack_id, "status": self.status,
                "statusReason": self.status_reason, "terminationProtection": self.termination_protection,
                "outputs": dict(self.outputs), "parameters": dict(self.parameters), "tags": dict(self.tags),
                "exports": dict(self.exports)}


@dataclass(frozen=True)
class Change:
    """One row of a change set: what CloudFormation will do to one resource."""

    action: str
    logical_id: str
    resource_type: str
    replacement: str = ""
    physical_id: str = ""

    def as_dict(self) -> dict[str, str]:
        """The row as JSON-friendly data."""
        return {"action": self.action, "logicalId": self.logical_id, "type": self.resource_type,
                "replacement": self.replacement, "physicalId": self.physical_id}


@dataclass(frozen=True)
class ChangeSet:
    """A described change set; ``no_changes`` when CloudFormation found nothing to do."""

    change_set_id: str
    stack_id: str
    status: str
    status_reason: str = ""
    execution_status: str = ""
    changes: tuple[Change, ...] = ()

    @property
    def no_changes(self) -> bool:
        """True for the FAILED change set CloudFormation makes when the template and parameters are unchanged."""
        return self.status == "FAILED" and any(reason in self.status_reason for reason in NO_CHANGE_REASONS)

    def as_dict(self) -> dict[str, Any]:
        """The change set as JSON-friendly data."""
        return {"changeSetId": self.change_set_id, "stackId": self.stack_id, "status": self.status,
                "statusReason": self.status_reason, "executionStatus": self.execution_status,
                "noChanges": self.no_changes, "changes": [change.as_dict() for change in self.changes]}


@dataclass(frozen=True)
class StackEvent:
    """One stack event."""

    event_id: str
    timestamp: datetime | None
    logical_id: str
    resource_type: str
    status: str
    reason: str = ""

    @property
    def failed(self) -> bool:
        """True for a resource that failed (the events whose reasons explain a failed deploy)."""
        return self.status.endswith("_FAILED") and "cancelled" not in self.reason.lower()

    def as_dict(self) -> dict[str, str]:
        """The event as JSON-friendly data."""
        return {"eventId": self.event_id, "timestamp": self.timestamp.isoformat() if self.timestamp else "",
                "logicalId": self.logical_id, "type": self.resource_type, "status": self.status,
                "reason": self.reason}


@dataclass(frozen=True)
class Clock:
    """Time source and sleep, injectable so tests of bounded waits need not wait."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


STACK_READS = frozenset({"describe-stacks", "describe-stack-events", "list-stack-resources", "get-template"})
SERVICES = {"create-bucket": "s3", "put-public-access-block": "s3", "put-bucket-encryption": "s3",
            "put-bucket-ownership-controls": "s3", "put-bucket-lifecycle-configuration": "s3", "put-object": "s3",
            "head-object": "s3", "head-bucket": "s3", "list-object-versions": "s3", "delete-objects": "s3",
            "get-caller-identity": "sts"}


def _stack_not_found(error: AwsError) -> AwsError:
    """StackNotFound for a stack read that AWS answered with "does not exist"; otherwise ``error`` itself."""
    if error.operation in STACK_READS and "does not exist" in error.aws_message:
        return StackNotFound(f"{error.operation}: {error.aws_message}", service=error.service,
                             operation=error.operation, code=error.code, aws_message=error.aws_message)
    return error


def map_error(operation: str, exc: BaseException) -> AwsError:
    """The :class:`AwsError` a user should see for the botocore error ``exc`` raised by ``operation``."""
    error = aws_error(exc, SERVICES.get(operation, "cloudformation"), operation)
    return _stack_not_found(error or AwsError(f"{operation} failed: {exc}", operation=operation))


def _call(operation: str, func: Callable[..., T], **kwargs: Any) -> T:
    """``func(**kwargs)`` through :func:`iotpipe.aws.call_aws`; a missing stack is StackNotFound."""
    try:
        return call_aws(SERVICES.get(operation, "cloudformation"), operation, func, **kwargs)
    except AwsError as exc:
        raise _stack_not_found(exc) from None


@dataclass
class DeployClient:
    """The AWS calls deploy needs, on injected boto3 clients (tests pass Stubber-wrapped or moto clients)."""

    cloudformation: Any
    s3: Any = None
    sts: Any = None
    region: str = ""
    clock: Clock = field(default_factory=Clock)
    lambda_: Any = None
    page_size: int = DELETE_BATCH

    @classmethod
    def from_factory(cls, factory: Any) -> DeployClient:
        """Build from an :class:`iotpipe.aws.ClientFactory`."""
        cloudformation = factory.client("cloudformation")
        return cls(cloudformation=cloudformation, s3=factory.client("s3"), sts=factory.client("sts"),
                   region=cloudformation.meta.region_name or "", lambda_=factory.client("lambda"))

    # --- stacks -------------------------------------------------------------------------------------
    def find_stack(self, name_or_id: str) -> Stack | None:
        """The stack, or ``None`` when it does not exist (or was deleted, when looked up by id)."""
        try:
            stacks = _call("describe-stacks", self.cloudformation.describe_stacks, StackName=name_or_id)["Stacks"]
        except StackNotFound:
            return None
        if not stacks:
            return None
        raw = stacks[0]
        if raw.get("StackStatus") == "DELETE_COMPLETE" and not name_or_id.startswith("arn:"):
            return None
        return Stack(
            name=raw["StackName"], stack_id=raw["StackId"], status=raw["StackStatus"],
            status_reason=raw.get("StackStatusReason", "") or "",
            termination_protection=bool(raw.get("EnableTerminationProtection", False)),
            outputs=tuple((o["OutputKey"], o.get("OutputValue", "")) for o in raw.get("Outputs", []) or []),
            parameters=tuple((p["ParameterKey"], p.get("ParameterValue", ""))
                             for p in raw.get("Parameters", []) or []),
            tags=tuple((t["Key"], t["Value"]) for t in raw.get("Tags", []) or []),
            exports=tuple((o["OutputKey"], o["ExportName"]) for o in raw.get("Outputs", []) or []
                          if o.get("ExportName")),
        )

    def delete_stack(self, stack_id: str) -> None:
        """Start deleting the stack."""
        _call("delete-stack", self.cloudformation.delete_stack, StackName=stack_id)

    def set_termination_protection(self, stack_name: str, enabled: bool) -> None:
        """Enable or disable termination protection."""
        _call("update-termination-protection", self.cloudformation.update_termination_protection,
              StackName=stack_name, EnableTerminationProtection=enabled)

    def stack_resources(self, stack_name: str) -> list[dict[str, Any]]:
        """All resource summaries of the stack (paginated)."""
        resources: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StackName": stack_name}
        for _ in range(MAX_PAGES):
            page = _call("list-stack-resources", self.cloudformation.list_stack_resources, **kwargs)
            resources.extend(page.get("StackResourceSummaries", []))
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        return resources

    def get_template(self, stack_name: str) -> Any:
        """The stack's current template body (a string, or a mapping for JSON templates)."""
        return _call("get-template", self.cloudformation.get_template, StackName=stack_name).get("TemplateBody")

    def events_since(self, stack_id: str, last_seen: str | None, limit_pages: int = 20) -> list[StackEvent]:
        """Events newer than the event ``last_seen`` (all of the first pages if None), oldest first."""
        events: list[StackEvent] = []
        kwargs: dict[str, Any] = {"StackName": stack_id}
        for _ in range(limit_pages):
            page = _call("describe-stack-events", self.cloudformation.describe_stack_events, **kwargs)
            for raw in page.get("StackEvents", []):
                if last_seen is not None and raw["EventId"] == last_seen:
                    return list(reversed(events))
                events.append(StackEvent(
                    event_id=raw["EventId"], timestamp=raw.get("Timestamp"),
                    logical_id=raw.get("LogicalResourceId", ""), resource_type=raw.get("ResourceType", ""),
                    status=raw.get("ResourceStatus", ""), reason=raw.get("ResourceStatusReason", "") or ""))
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        return list(reversed(events))

    def latest_event_id(self, stack_id: str) -> str | None:
        """The id of the newest event, used as the point after which events are streamed."""
        page = _call("describe-stack-events", self.cloudformation.describe_stack_events, StackName=stack_id)
        events = page.get("StackEvents", [])
        return str(events[0]["EventId"]) if events else None

    # --- change sets --------------------------------------------------------------------------------
    def create_change_set(self, **kwargs: Any) -> tuple[str, str] | None:
        """Create a change set; ``(id, stack id)``, or None when CloudFormation refuses it as unchanged."""
        try:
            response = _call("create-change-set", self.cloudformation.create_change_set, **kwargs)
        except AwsError as exc:
            if any(reason in exc.aws_message for reason in NO_CHANGE_REASONS):
                return None
            raise
        return str(response["Id"]), str(response["StackId"])

    def describe_change_set(self, change_set_id: str) -> ChangeSet:
        """The change set with all its changes (paginated)."""
        changes: list[Change] = []
        kwargs: dict[str, Any] = {"ChangeSetName": change_set_id}
        first: dict[str, Any] = {}
        for _ in range(MAX_PAGES):
            page = _call("describe-change-set", self.cloudformation.describe_change_set, **kwargs)
            first = first or page
            for item in page.get("Changes", []):
                rc = item.get("ResourceChange", {})
                changes.append(Change(
                    action=rc.get("Action", ""), logical_id=rc.get("LogicalResourceId", ""),
                    resource_type=rc.get("ResourceType", ""), replacement=rc.get("Replacement", "") or "",
                    physical_id=rc.get("PhysicalResourceId", "") or ""))
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        return ChangeSet(change_set_id=change_set_id, stack_id=str(first.get("StackId", "")),
                         status=str(first.get("Status", "")), status_reason=str(first.get("StatusReason", "") or ""),
                         execution_status=str(first.get("ExecutionStatus", "") or ""), changes=tuple(changes))

    def delete_change_set(self, change_set_id: str) -> None:
        """Delete the change set."""
        _call("delete-change-set", self.cloudformation.delete_change_set, ChangeSetName=change_set_id)

    def execute_change_set(self, change_set_id: str, disable_rollback: bool = False) -> None:
        """Start executing the change set."""
        kwargs: dict[str, Any] = {"ChangeSetName": change_set_id}
        if disable_rollback:
            kwargs["DisableRollback"] = True
        _call("execute-change-set", self.cloudformation.execute_change_set, **kwargs)

    # --- S3 -----------------------------------------------------------------------------------------
    def account_id(self) -> str:
        """The caller's account id."""
        return str(_call("get-caller-identity", self.sts.get_caller_identity)["Account"])

    def ensure_artefact_bucket(self, bucket: str, owner: str) -> bool:
        """Create the artefacts bucket (encrypted, private, public access blocked) unless ``owner`` (an account id)
        has it already; True if made. DeployError when another account owns the name: its guessable name
        (``iotpipe-artefacts-<account>-<region>``) can be taken by anyone, and deploy must never upload the
        processor's code into a bucket someone else controls."""
        if self.bucket_exists(bucket, owner=owner):
            return False
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.region and self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            _call("create-bucket", self.s3.create_bucket, **kwargs)
        except AwsError as exc:
            if exc.code != "BucketAlreadyExists":
                raise
            raise _foreign_bucket(bucket, owner) from None
        mine = {"ExpectedBucketOwner": owner}
        _call("put-public-access-block", self.s3.put_public_access_block, Bucket=bucket, **mine,
              PublicAccessBlockConfiguration={"BlockPublicAcls": True, "IgnorePublicAcls": True,
                                              "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
        _call("put-bucket-encryption", self.s3.put_bucket_encryption, Bucket=bucket, **mine,
              ServerSideEncryptionConfiguration={"Rules": [
                  {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]})
        _call("put-bucket-ownership-controls", self.s3.put_bucket_ownership_controls, Bucket=bucket, **mine,
              OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
        # Templates are only needed while a change set is created; old ones need not pile up.
        _call("put-bucket-lifecycle-configuration", self.s3.put_bucket_lifecycle_configuration, Bucket=bucket,
              **mine, LifecycleConfiguration={"Rules": [{"ID": "expire-templates", "Status": "Enabled",
                                                         "Filter": {"Prefix": "templates/"},
                                                         "Expiration": {"Days": 30}}]})
        return True

    def put_object(self, bucket: str, key: str, body: bytes, *, owner: str = "") -> None:
        """Upload one object (server-side encrypted); with ``owner``, only into a bucket that account owns."""
        _call("put-object", self.s3.put_object, Bucket=bucket, Key=key, Body=body, ServerSideEncryption="AES256",
              **_owned_by(owner))

    def object_exists(self, bucket: str, key: str, *, owner: str = "") -> bool:
        """True when the object exists (HeadObject); False on 404."""
        try:
            _call("head-object", self.s3.head_object, Bucket=bucket, Key=key, **_owned_by(owner))
            return True
        except AwsError as exc:
            if exc.code in ("404", "NoSuchKey", "NotFound"):
                return False
            if owner and exc.code in ("403", "AccessDenied", "Forbidden"):
                raise _foreign_bucket(bucket, owner) from None
            raise

    def object_url(self, bucket: str, key: str) -> str:
        """The virtual-hosted https URL CloudFormation reads a TemplateURL from.

        Emulators (moto, LocalStack) resolve this AWS form too, so it is used with --endpoint-url as well.
        """
        region = self.region or "us-east-1"
        suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        return f"https://{bucket}.s3.{region}.{suffix}/{key}"

    def first_versions(self, bucket: str) -> list[dict[str, str]]:
        """The first page of ``{"Key", "VersionId"}`` over every object version and delete marker.

        Emptying deletes each page it lists, so it always asks for the first page again rather than
        following markers that point at versions it has just deleted.
        """
        page = _call("list-object-versions", self.s3.list_object_versions, Bucket=bucket, MaxKeys=self.page_size)
        return [{"Key": v["Key"], "VersionId": v.get("VersionId") or "null"}
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]]

    def delete_versions(self, bucket: str, items: list[dict[str, str]]) -> int:
        """Delete up to 1000 versions in one call; AwsError naming the first failure if any failed."""
        deleted = 0
        size = min(self.page_size, DELETE_BATCH)
        for start in range(0, len(items), size):
            batch = items[start:start + size]
            response = _call("delete-objects", self.s3.delete_objects, Bucket=bucket,
                             Delete={"Objects": batch, "Quiet": True})
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise AwsError(f"delete-objects {bucket}: {len(errors)} objects not deleted, e.g. "
                               f"{first.get('Key')} ({first.get('Code')}: {first.get('Message')}); "
                               "fix the permission or object lock and run destroy again")
            deleted += len(batch)
        return deleted

    def bucket_exists(self, bucket: str, *, owner: str = "") -> bool:
        """True when the bucket exists (and we may see it); with ``owner``, DeployError when the bucket exists
        but that account does not own it (HeadBucket with ExpectedBucketOwner answers 403)."""
        try:
            _call("head-bucket", self.s3.head_bucket, Bucket=bucket, **_owned_by(owner))
            return True
        except AwsError as exc:
            if exc.code in ("404", "NoSuchBucket", "NotFound"):
                return False
            if owner and exc.code in ("403", "AccessDenied", "Forbidden"):
                raise _foreign_bucket(bucket, owner) from None
            raise


def _owned_by(owner: str) -> dict[str, str]:
    """``ExpectedBucketOwner``: S3 refuses the request (403) when another account owns the bucket."""
    return {"ExpectedBucketOwner": owner} if owner else {}


def _foreign_bucket(bucket: str, owner: str) -> DeployError:
    return DeployError(f"S3 bucket {bucket} exists but account {owner} does not own it (or may not read it): "
                       "deploy uploads the processor's code and large templates there, and will not upload into a "
                       "bucket another account controls. Nothing was uploaded. If the bucket is yours, give this "
                       "principal s3:ListBucket on it; otherwise its name is taken, and deploys from this account "
                       "and region need it deleted by its owner")
