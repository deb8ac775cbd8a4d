"""Deploy planning: find out what a deploy would do and return it as a frozen plan, executing nothing.

The plan describes the stack (exists? in which state?) and asks CloudFormation what a change set would do.
Creating a change set (and, for a large template, uploading it to the artefacts bucket) is the one write
planning makes: it is how CloudFormation answers the question, and nothing in the stack changes until an
executor runs the change set. Both executors (execute.py) delete the change set when they do not run it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from iotpipe import naming
from iotpipe.deploy.client import Change, DeployClient, Stack
from iotpipe.deploy.preflight import (
    CONCURRENCY_QUOTA,
    changing_outputs,
    check_account_concurrency,
    check_environment_suffix,
    check_exports,
    check_replacements,
)
from iotpipe.deploy.waiters import CREATE_STATES, wait_change_set, wait_until_settled
from iotpipe.errors import AwsError, ConfigError, DeployError, LintError, ParameterError, TemplateError
from iotpipe.package import Artefact, artefact_bucket_name

TEMPLATE_BODY_LIMIT = 51_200
RETAIN_POLICIES = frozenset({"Retain", "RetainExceptOnCreate", "Snapshot"})
ON_FAILURE_CHOICES = ("rollback", "delete", "do-nothing")
CAPABILITIES = ("CAPABILITY_IAM", "CAPABILITY_NAMED_IAM")
RECREATE_STATES = frozenset({"ROLLBACK_COMPLETE"})
REFUSED_STATES: Mapping[str, str] = {
    "CREATE_FAILED": "its creation failed and rollback was disabled; delete it (iotpipe destroy --env {env}) "
                     "and deploy again",
    "ROLLBACK_FAILED": "its rollback failed; delete it (iotpipe destroy --env {env}, or the CloudFormation "
                       "console, retaining the resources that cannot be deleted) and deploy again",
    "DELETE_FAILED": "a delete failed; run iotpipe destroy --env {env} again (it empties the buckets first)",
    "UPDATE_ROLLBACK_FAILED": "an update rollback failed; run `aws cloudformation continue-update-rollback "
                              "--stack-name {stack}` and deploy again",
    "IMPORT_ROLLBACK_FAILED": "an import rollback failed; fix it in the CloudFormation console and deploy again",
}

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class DeployRequest:
    """What the user asked for: one template, its parameters and tags, and how to run the deploy."""

    stack_name: str
    template_body: str
    env: str = "dev"
    parameters: tuple[tuple[str, str], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    termination_protection: bool = False
    on_failure: str = "rollback"
    timeout_minutes: float = 30.0
    reserved_concurrency: int = 0
    artefacts: tuple[Artefact, ...] = ()  # uploaded to the artefacts bucket before the change set

    @property
    def timeout_s(self) -> float:
        """The bound of every wait, in seconds."""
        return self.timeout_minutes * 60.0

    def as_dict(self) -> dict[str, Any]:
        """The request as JSON-friendly data: the template by size and digest, artefacts by key and size."""
        body = self.template_body.encode("utf-8")
        return {"stackName": self.stack_name, "env": self.env,
                "template": {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()},
                "parameters": dict(self.parameters), "tags": dict(self.tags),
                "terminationProtection": self.termination_protection, "onFailure": self.on_failure,
                "timeoutMinutes": self.timeout_minutes, "reservedConcurrency": self.reserved_concurrency,
                "artefacts": [{"key": a.key, "bytes": len(a.body)} for a in self.artefacts]}


@dataclass(frozen=True)
class TemplateSource:
    """How CloudFormation gets the template: inline body, or a URL in the artefacts bucket."""

    body: str | None = None
    url: str | None = None
    bucket: str | None = None
    bucket_created: bool = False

    def as_kwargs(self) -> dict[str, str]:
        """``TemplateBody`` or ``TemplateURL``."""
        return {"TemplateURL": self.url} if self.url else {"TemplateBody": self.body or ""}

    def as_dict(self) -> dict[str, Any]:
        """The source as JSON-friendly data (an inline body by its size)."""
        return {"inlineBytes": None if self.body is None else len(self.body.encode("utf-8")), "url": self.url,
                "bucket": self.bucket, "bucketCreated": self.bucket_created}


@dataclass(frozen=True)
class DeployPlan:
    """What a deploy would do. ``action``: create, update, recreate (delete a ROLLBACK_COMPLETE stack first) or none."""

    request: DeployRequest
    action: str
    stack: Stack | None
    changes: tuple[Change, ...]
    source: TemplateSource
    change_set_id: str | None = None
    stack_id: str | None = None
    created_review_stack: bool = False

    @property
    def has_changes(self) -> bool:
        """False when CloudFormation found nothing to do."""
        return self.action != "none"

    @property
    def termination_protection_change(self) -> bool | None:
        """The termination protection value to set, or None when the stack already has it."""
        wanted = self.request.termination_protection
        fresh = self.stack is None or self.action == "recreate" or self.stack.status in CREATE_STATES
        current = False if fresh or self.stack is None else self.stack.termination_protection
        return None if wanted == current else wanted

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-friendly data."""
        return {"request": self.request.as_dict(), "action": self.action,
                "stack": self.stack.as_dict() if self.stack else None,
                "changes": [change.as_dict() for change in self.changes], "source": self.source.as_dict(),
                "changeSetId": self.change_set_id, "stackId": self.stack_id,
                "createdReviewStack": self.created_review_stack}


def parse_assignments(values: Iterable[str], option: str) -> tuple[tuple[str, str], ...]:
    """``K=V`` strings from the command line as pairs; ConfigError (exit 2) on a value without ``=``."""
    pairs = []
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {value!r}: expected KEY=VALUE, e.g. {option} Owner=plant-7")
        pairs.append((key.strip(), val))
    return tuple(pairs)


def merge_pairs(base: Iterable[tuple[str, str]], overrides: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``base`` (config file) overridden key by key by ``overrides`` (command line); keys sorted."""
    merged = dict(base)
    merged.update(dict(overrides))
    return tuple(sorted(merged.items()))


def parse_template(body: str) -> dict[str, Any]:
    """The template as data (JSON or YAML with short-form intrinsics); TemplateError if it is neither."""
    from cfn_flip import load

    try:
        data, _ = load(body)
    except Exception as exc:  # cfn_flip raises yaml and json errors of several types
        raise TemplateError(f"the template is neither JSON nor YAML: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("Resources"), Mapping):
        raise TemplateError("the template has no Resources section; is it a CloudFormation template?")
    return dict(data)


def compact_json(body: str) -> str:
    """The template ``body`` as JSON without whitespace (the same template, about 15% smaller than our YAML)."""
    return json.dumps(parse_template(body), separators=(",", ":"), default=str)


def check_parameters(template: Mapping[str, Any], parameters: Iterable[tuple[str, str]]) -> None:
    """ConfigError (exit 2) for a parameter the template does not declare, naming the ones it does."""
    declared = sorted((template.get("Parameters") or {}).keys())
    unknown = [key for key, _ in parameters if key not in declared]
    if unknown:
        raise ConfigError(f"parameter(s) {', '.join(unknown)} not declared by the template; it declares "
                          f"{', '.join(declared) or 'none'} (check [env.<name>.parameters] and --param)")


def create_changes(template: Mapping[str, Any]) -> tuple[Change, ...]:
    """The change table of a create: every resource is Added (used when no change set can be made yet)."""
    resources = template.get("Resources") or {}
    return tuple(Change(action="Add", logical_id=str(logical_id), resource_type=str(spec.get("Type", "")))
                 for logical_id, spec in sorted(resources.items()))


def prepare_template(cfg: Any, parameters: Iterable[tuple[str, str]] = (), *, region: str = "",
                     checkov: bool = False, blueprint: Any = None) -> tuple[str, list[Any]]:
    """Render the template for ``cfg`` (customised by ``blueprint``, an :class:`iotpipe.blueprint.Blueprint`)
    and pass it through ``iotpipe lint``'s gate; (text, reported findings).

    The gate is the one ``iotpipe lint`` applies: cfn-lint with iotpipe's rules for the target ``region``
    (and checkov when asked and installed); any error or warning is a LintError, raised before any AWS call.
    ``parameters`` are checked against the template first (ConfigError), so a typo never waits for the linter.
    """
    from iotpipe import lint
    from iotpipe.render import render_template

    text = render_template(cfg, blueprint)
    given = tuple(parameters)
    if given:
        check_parameters(parse_template(text), given)
        check_environment_suffix(given, cfg.env)
    regions = (region or lint.DEFAULT_REGION,)
    findings = lint.lint_template(text, regions, checkov=checkov)
    failing = lint.blocking(findings)
    if failing:
        raise LintError(lint.gate_message(failing, regions, "not deploying it") + "\nFix the configuration "
                        f"(`iotpipe lint --env {cfg.env} --region {regions[0]}` shows every finding).")
    return text, [f for f in findings if f not in failing]


def _artefact_bucket(client: DeployClient, progress: Progress) -> tuple[str, bool, str]:
    """The artefacts bucket of the caller's account and region, created on first need; (name, created, owner).

    Every call on it passes the account as ``ExpectedBucketOwner``: a bucket of that name owned by anyone else is
    refused (DeployError) before anything is uploaded.
    """
    owner = client.account_id()
    bucket = artefact_bucket_name(owner, client.region)
    created = client.ensure_artefact_bucket(bucket, owner)
    if created:
        progress(f"created artefacts bucket {bucket} (encrypted, private, public access blocked)")
    return bucket, created, owner


def upload_artefacts(client: DeployClient, artefacts: Iterable[Artefact], progress: Progress = _quiet) -> bool:
    """Put each artefact in the artefacts bucket unless its content-addressed key is there already.

    True when the bucket had to be created.
    """
    wanted = tuple(artefacts)
    if not wanted:
        return False
    bucket, created, owner = _artefact_bucket(client, progress)
    for artefact in wanted:
        if client.object_exists(bucket, artefact.key, owner=owner):
            progress(f"artefact s3://{bucket}/{artefact.key} is already there (same content, same key)")
            continue
        client.put_object(bucket, artefact.key, artefact.body, owner=owner)
        progress(f"uploaded {len(artefact.body):,} bytes to s3://{bucket}/{artefact.key}")
    return created


def template_source(client: DeployClient, request: DeployRequest, progress: Progress = _quiet, *,
                    read_only: str = "") -> TemplateSource:
    """Inline body when it fits CloudFormation's 51,200-byte limit, else an upload to the artefacts bucket.

    ``read_only`` names a command that uploads no code and never creates the artefacts bucket (``diff``,
    ``status``): an oversized template goes into the bucket only when it exists already (its key is the template's
    hash, so an unchanged template is not written again, and ``templates/`` expires after 30 days), as ``cdk diff``
    uploads to its bootstrap bucket; without the bucket it is a DeployError that says how to go on.
    """
    data = request.template_body.encode("utf-8")
    if len(data) <= TEMPLATE_BODY_LIMIT:
        return TemplateSource(body=request.template_body)
    compact = compact_json(request.template_body)
    if len(compact.encode("utf-8")) <= TEMPLATE_BODY_LIMIT:
        progress(f"template is {len(data):,} bytes as YAML, over the {TEMPLATE_BODY_LIMIT:,}-byte TemplateBody "
                 f"limit; sent as compact JSON ({len(compact.encode('utf-8')):,} bytes)")
        return TemplateSource(body=compact)
    if read_only:
        owner = client.account_id()
        bucket, created = artefact_bucket_name(owner, client.region), False
        if not client.bucket_exists(bucket, owner=owner):
            raise DeployError(f"the template is {len(data):,} bytes, over CloudFormation's "
                              f"{TEMPLATE_BODY_LIMIT:,}-byte TemplateBody limit, so it must be passed as a TemplateURL "
                              "from the artefacts bucket "
                              f"{bucket}, which `{read_only}` never creates and which does not exist yet: run "
                              "`iotpipe deploy --no-execute` once (it creates the bucket and uploads the template), or "
                              "package the processor as a zip (processor.packaging = \"zip\", the default)")
    else:
        bucket, created, owner = _artefact_bucket(client, progress)
    key = f"templates/{request.stack_name}/{hashlib.sha256(data).hexdigest()}.yaml"
    if read_only and client.object_exists(bucket, key, owner=owner):
        progress(f"template is {len(data):,} bytes (> {TEMPLATE_BODY_LIMIT:,}): s3://{bucket}/{key} is already there")
    else:
        client.put_object(bucket, key, data, owner=owner)
        progress(f"template is {len(data):,} bytes (> {TEMPLATE_BODY_LIMIT:,}): uploaded to s3://{bucket}/{key}")
    return TemplateSource(url=client.object_url(bucket, key), bucket=bucket, bucket_created=created)


def change_set_name(now: datetime | None = None) -> str:
    """A fresh change set name, ``iotpipe-<UTC timestamp>``."""
    moment = now or datetime.now(UTC)
    return "iotpipe-" + moment.strftime("%Y%m%d%H%M%S%f")


def change_set_kwargs(request: DeployRequest, source: TemplateSource, change_set_type: str) -> dict[str, Any]:
    """The create-change-set arguments for ``request``."""
    kwargs: dict[str, Any] = {
        "StackName": request.stack_name,
        "ChangeSetName": change_set_name(),
        "ChangeSetType": change_set_type,
        "Capabilities": list(CAPABILITIES),
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in request.parameters],
        "Tags": [{"Key": k, "Value": v} for k, v in request.tags],
        "Description": f"iotpipe deploy of {request.stack_name}",
        **source.as_kwargs(),
    }
    if change_set_type == "CREATE":
        kwargs["OnStackFailure"] = {"rollback": "ROLLBACK", "delete": "DELETE",
                                    "do-nothing": "DO_NOTHING"}[request.on_failure]
    return kwargs


def plan_deploy(client: DeployClient, request: DeployRequest, progress: Progress = _quiet, *,
                read_only: str = "") -> DeployPlan:
    """Describe the stack and create (never execute) a change set for ``request``; the plan says what would change.

    The request's artefacts are uploaded first, unless ``read_only`` names the command asking (``diff``,
    ``status``): those upload no code (at most an oversized template, :func:`template_source`). A change set needs
    no artefact to exist (CloudFormation reads the code when it creates or updates the function), and a
    content-addressed key shows a code change without it.
    """
    if request.on_failure not in ON_FAILURE_CHOICES:
        raise ParameterError("on_failure", request.on_failure,
                             f"is not allowed; choose one of {', '.join(ON_FAILURE_CHOICES)}")
    template = parse_template(request.template_body)
    check_parameters(template, request.parameters)
    check_environment_suffix(request.parameters, request.env)
    stack = wait_until_settled(client, request.stack_name, request.timeout_s, progress)
    if stack is not None and stack.status in REFUSED_STATES:
        reason = REFUSED_STATES[stack.status].format(env=request.env, stack=request.stack_name)
        raise DeployError(f"stack {request.stack_name} is in {stack.status}: {reason}")
    preflight(client, request, template, stack, progress)
    if not read_only:
        upload_artefacts(client, request.artefacts, progress)
    source = template_source(client, request, progress, read_only=read_only)
    if stack is not None and stack.status in RECREATE_STATES:
        return DeployPlan(request=request, action="recreate", stack=stack, changes=create_changes(template),
                          source=source, stack_id=stack.stack_id)
    creating = stack is None or stack.status in CREATE_STATES
    change_set_type = "CREATE" if creating else "UPDATE"
    progress(f"creating {change_set_type} change set for stack {request.stack_name}")
    created = client.create_change_set(**change_set_kwargs(request, source, change_set_type))
    if created is None:
        return DeployPlan(request=request, action="none", stack=stack, changes=(), source=source,
                          stack_id=stack.stack_id if stack else None)
    change_set_id, stack_id = created
    described = wait_change_set(client, change_set_id, request.timeout_s, progress)
    if described.no_changes or (described.status == "CREATE_COMPLETE" and not described.changes and not creating):
        return DeployPlan(request=request, action="none", stack=stack, changes=(), source=source,
                          change_set_id=change_set_id, stack_id=stack_id)
    if described.status != "CREATE_COMPLETE":
        client.delete_change_set(change_set_id)
        if creating:
            _delete_review_stack(client, stack_id)
        raise DeployError(f"CloudFormation could not create the change set for {request.stack_name} "
                          f"({described.status}): {described.status_reason or 'no reason given'}")
    return DeployPlan(request=request, action="create" if creating else "update", stack=stack,
                      changes=described.changes, source=source, change_set_id=change_set_id, stack_id=stack_id,
                      created_review_stack=creating)


def preflight(client: DeployClient, request: DeployRequest, template: Mapping[str, Any], stack: Stack | None,
              progress: Progress = _quiet) -> None:
    """What AWS would refuse later, refused now (before the template upload and the change set).

    An update: no replacement AWS refuses, no change to an export another stack imports. Any deploy: the
    processor's reserved concurrency fits the account.
    """
    if stack is not None and stack.status not in CREATE_STATES and stack.status not in RECREATE_STATES:
        deployed = _deployed_template(client, stack)
        replaced = check_replacements(deployed, template, request.env)
        if replaced:
            progress("the update replaces " + ", ".join(f"{r.logical_id} ({', '.join(r.properties)})"
                                                       for r in replaced))
        outputs = [{"OutputKey": key, "ExportName": name} for key, name in stack.exports]
        check_exports(client.cloudformation, outputs, changing_outputs(deployed, template, replaced))
    if request.reserved_concurrency and client.lambda_ is not None:
        function = naming.function_name_pattern().replace(naming.ENV_REF, request.env)
        try:
            checked = check_account_concurrency(client.lambda_, function, request.reserved_concurrency)
        except AwsError as exc:
            progress(f"warning: could not check the account's Lambda concurrency ({exc}); if the deploy fails "
                     "with \"decreases account's UnreservedConcurrentExecution below its minimum value\", raise "
                     f"{CONCURRENCY_QUOTA} or set processor.reserved_concurrency = 0")
            return
        progress(checked.message())


def _deployed_template(client: DeployClient, stack: Stack) -> dict[str, Any]:
    body = client.get_template(stack.stack_id)
    return dict(body) if isinstance(body, Mapping) else parse_template(str(body))


def _delete_review_stack(client: DeployClient, stack_id: str) -> None:
    """A CREATE change set leaves an empty REVIEW_IN_PROGRESS stack behind; remove it."""
    stack = client.find_stack(stack_id)
    if stack is not None and stack.status in CREATE_STATES:
        client.delete_stack(stack_id)


# --- destroy ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DestroyPlan:
    """What destroy would delete: the stack (None: nothing to do) and the buckets it empties first."""

    stack_name: str
    stack: Stack | None
    buckets: tuple[str, ...] = ()
    retained_buckets: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-friendly data."""
        return {"stackName": self.stack_name, "stack": self.stack.as_dict() if self.stack else None,
                "buckets": list(self.buckets), "retainedBuckets": list(self.retained_buckets)}


def lift_protection_hint(stack_name: str) -> str:
    """How to turn termination protection off."""
    return (f"run `aws cloudformation update-termination-protection --no-enable-termination-protection "
            f"--stack-name {stack_name}`, or set termination_protection = false for this env in iotpipe.toml "
            "and run iotpipe deploy, then destroy again")


def plan_destroy(client: DeployClient, stack_name: str, timeout_s: float,
                 progress: Progress = _quiet) -> DestroyPlan:
    """Describe what destroy would delete; DeployError under termination protection (saying how to lift it)."""
    stack = wait_until_settled(client, stack_name, timeout_s, progress)
    if stack is None:
        return DestroyPlan(stack_name=stack_name, stack=None)
    if stack.termination_protection:
        raise DeployError(f"stack {stack_name} has termination protection; not deleting it. To lift it, "
                          + lift_protection_hint(stack_name))
    resources = client.stack_resources(stack.stack_id) if stack.status not in CREATE_STATES else []
    buckets = [r for r in resources if r.get("ResourceType") == "AWS::S3::Bucket" and r.get("PhysicalResourceId")
               and r.get("ResourceStatus") != "DELETE_COMPLETE"]
    retained = _retained_logical_ids(client, stack.stack_id) if buckets else set()
    return DestroyPlan(
        stack_name=stack_name, stack=stack,
        buckets=tuple(r["PhysicalResourceId"] for r in buckets if r["LogicalResourceId"] not in retained),
        retained_buckets=tuple(r["PhysicalResourceId"] for r in buckets if r["LogicalResourceId"] in retained))


def _retained_logical_ids(client: DeployClient, stack_id: str) -> set[str]:
    """Buckets the template keeps on delete are left alone: emptying them would destroy what they keep."""
    body = client.get_template(stack_id)
    template = body if isinstance(body, dict) else parse_template(str(body))
    return {str(logical_id) for logical_id, spec in (template.get("Resources") or {}).items()
            if spec.get("DeletionPolicy") in RETAIN_POLICIES}
