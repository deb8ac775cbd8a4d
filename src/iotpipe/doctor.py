"""``iotpipe doctor``: what stops a deploy, and what the seed's "Common Issues" are, checked automatically.

Each check is a row with pass / warn / fail, what was found and what to do. The seed's troubleshooting list (no
data in DynamoDB, high iterator age, Lambda errors) and issue 12's real-AWS defects (names taken in the account,
concurrency, imported exports, certificates holding the device policy) are each one function returning
:class:`Check` rows. An AWS call that fails makes its row a warning saying so; only missing credentials stop
the report, since every other check would fail the same way.

Against ``iotpipe local`` (``local=True``) the topic rule is not in the emulator (moto's CloudFormation skips it):
the rule runs in iotpipe local's own engine, built from the deployed template, so its row reads the rule from
there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from iotpipe import devices, naming
from iotpipe.aws import EndpointError, aws_call, call_aws, clean_message, json_safe
from iotpipe.config import PipelineConfig, config_warnings, needed_concurrency
from iotpipe.deploy.preflight import UNRESERVED_MINIMUM, account_concurrency, importers
from iotpipe.errors import AwsError, IotpipeError

PASS, WARN, FAIL = "pass", "warn", "fail"
HOUR = timedelta(hours=1)
DRIFT_POLLS = 30


class ClientSource(Protocol):
    """Anything that makes boto3 clients by service name (``iotpipe.aws.ClientFactory``)."""

    def client(self, service: str) -> Any: ...


@dataclass(frozen=True)
class Check:
    """One row of the report."""

    name: str
    status: str
    detail: str
    action: str = ""

    def as_dict(self) -> dict[str, str]:
        """The row as JSON-friendly data."""
        return {"check": self.name, "status": self.status, "detail": self.detail, "action": self.action}


@dataclass(frozen=True)
class Context:
    """What the checks share: the config, the account and region, and the stack (None: not deployed)."""

    config: PipelineConfig
    account: str
    region: str
    stack: dict[str, Any] | None
    resources: tuple[dict[str, Any], ...] = ()

    @property
    def outputs(self) -> dict[str, str]:
        """The stack's outputs (empty when not deployed)."""
        return {o["OutputKey"]: o.get("OutputValue", "") for o in (self.stack or {}).get("Outputs", []) or []}

    def as_dict(self) -> dict[str, Any]:
        """The context as JSON-friendly data (AWS's timestamps as ISO 8601 text)."""
        return {"env": self.config.env, "stackName": self.config.resolved_stack_name, "account": self.account,
                "region": self.region, "stack": json_safe(self.stack), "resources": json_safe(list(self.resources))}

    def physical_ids(self, resource_type: str) -> set[str]:
        """Physical ids of the stack's resources of one type."""
        return {str(r.get("PhysicalResourceId")) for r in self.resources if r.get("ResourceType") == resource_type}

    def name(self, pattern: str) -> str:
        """A ``${EnvironmentSuffix}``/``${AWS::Region}``/``${AWS::AccountId}`` name pattern for this env."""
        return (pattern.replace(naming.ENV_REF, self.config.env).replace("${AWS::Region}", self.region)
                .replace("${AWS::AccountId}", self.account))


@dataclass(frozen=True)
class Report:
    """Every row; ``failed`` when any row failed (the CLI exits 1)."""

    checks: tuple[Check, ...]

    @property
    def failed(self) -> bool:
        """True when a row failed."""
        return any(check.status == FAIL for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly data."""
        return {"failed": self.failed, "checks": [check.as_dict() for check in self.checks]}


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, AwsError) and exc.code:
        return f"{exc.code}: {clean_message(exc.aws_message, 160)}"
    return clean_message(str(exc), 160)


def _guarded(name: str, check: Callable[[], Iterable[Check]]) -> list[Check]:
    """The check's rows, or one warning saying it could not run (an AWS call failed)."""
    try:
        with aws_call("", name):
            return list(check())
    except IotpipeError as exc:
        return [Check(name, WARN, f"could not check: {_error_text(exc)}",
                      "check the credentials' permissions for this call, or the service in this region")]


# --- account ------------------------------------------------------------------------------------------------


def credentials(sts: Any, region: str) -> Check:
    """Who the calls run as, and where; FAIL without credentials or region."""
    if not region:
        return Check("credentials and region", FAIL, "no AWS region",
                     "pass --region, set region in iotpipe.toml, or export AWS_DEFAULT_REGION")
    try:
        identity = call_aws("sts", "get-caller-identity", sts.get_caller_identity)
    except EndpointError:
        raise  # nothing else can be checked either: one line, not a row per check
    except AwsError as exc:
        return Check("credentials and region", FAIL, f"get-caller-identity failed: {_error_text(exc)}",
                     "run `aws configure`, pass --profile, or export AWS_PROFILE")
    return Check("credentials and region", PASS, f"account {identity['Account']} as {identity.get('Arn', '?')}, "
                                                 f"region {region}")


def concurrency(lambda_client: Any, ctx: Context) -> list[Check]:
    """Account concurrency against the processor's reservation (Lambda keeps 100 unreserved)."""
    processor, name = ctx.config.processor, "account concurrency"
    function = ctx.name(naming.function_name_pattern())
    if not processor.reserved_concurrency:
        return [Check(name, PASS, "processor.reserved_concurrency = 0: nothing reserved, nothing to fit")]
    result = account_concurrency(lambda_client, function, processor.reserved_concurrency)
    if not result.ok:
        return [Check(name, FAIL, f"limit {result.account_limit}, unreserved {result.unreserved}: reserving "
                                  f"{result.requested} would leave fewer than {UNRESERVED_MINIMUM} unreserved",
                      result.message().split(". ", 1)[-1])]
    rows = [Check(name, PASS, result.message())]
    needed = needed_concurrency(ctx.config)
    if processor.reserved_concurrency < needed:
        rows.append(Check("processor concurrency", WARN, f"reserved {processor.reserved_concurrency} is below "
                                                         f"shards x parallelization ({needed})",
                          "raise processor.reserved_concurrency"))
    return rows


def config_notes(ctx: Context) -> list[Check]:
    """Configuration that is valid but surprising on AWS (an on-demand stream's shards grow)."""
    return [Check("stream scaling", WARN, note, "watch the iterator age; raise reserved_concurrency with traffic")
            for note in config_warnings(ctx.config)]


def _exists(call: Callable[[], Any], missing: Iterable[str]) -> bool:
    try:
        with aws_call("", "name look-up"):
            call()
    except AwsError as exc:
        if exc.code in set(missing):
            return False
        raise
    return True


def taken_names(factory: ClientSource, ctx: Context) -> list[Check]:
    """Account-wide names the stack creates that exist already and are not the stack's own (a CREATE fails)."""
    iam, cloudwatch = factory.client("iam"), factory.client("cloudwatch")
    s3, dynamodb = factory.client("s3"), factory.client("dynamodb")
    wanted = [
        ("IAM role", ctx.name(naming.processor_role_name().data["Fn::Sub"]), "AWS::IAM::Role",
         lambda n: _exists(lambda: iam.get_role(RoleName=n), ("NoSuchEntity",))),
        ("IAM role", ctx.name(naming.rule_role_name().data["Fn::Sub"]), "AWS::IAM::Role",
         lambda n: _exists(lambda: iam.get_role(RoleName=n), ("NoSuchEntity",))),
        ("dashboard", ctx.name(naming.dashboard_name().data["Fn::Sub"]), "AWS::CloudWatch::Dashboard",
         lambda n: _exists(lambda: cloudwatch.get_dashboard(DashboardName=n),
                           ("ResourceNotFound", "ResourceNotFoundException"))),
        ("bucket", ctx.name(naming.raw_bucket_name().data["Fn::Sub"]), "AWS::S3::Bucket",
         lambda n: _exists(lambda: s3.head_bucket(Bucket=n), ("404", "NoSuchBucket", "NotFound"))),
        ("table", ctx.name(naming.table_name().data["Fn::Sub"]), "AWS::DynamoDB::Table",
         lambda n: _exists(lambda: dynamodb.describe_table(TableName=n), ("ResourceNotFoundException",))),
    ]
    taken = []
    for kind, value, resource_type, exists in wanted:
        if value in ctx.physical_ids(resource_type):
            continue
        if exists(value):
            taken.append(f"{kind} {value}")
    if taken:
        return [Check("names in the account", FAIL, "already exist outside this stack: " + ", ".join(taken),
                      "delete them (a leftover of an earlier deploy?), or deploy under another env name")]
    return [Check("names in the account", PASS, "roles, dashboard, bucket and table names are free or the stack's")]


# --- the stack ----------------------------------------------------------------------------------------------


def imported_exports(cloudformation: Any, ctx: Context) -> list[Check]:
    """Exports of the stack other stacks import: CloudFormation will not let an update change them."""
    rows = []
    for output in (ctx.stack or {}).get("Outputs", []) or []:
        export = output.get("ExportName")
        if not export:
            continue
        stacks = importers(cloudformation, export)
        if stacks:
            rows.append(f"{export} by {', '.join(stacks)}")
    if rows:
        return [Check("imported exports", WARN, "imported: " + "; ".join(rows),
                      "an update that changes these values is refused; move the importers off them first")]
    return [Check("imported exports", PASS, "no export of this stack is imported by another stack")]


def policy_certificates(iot: Any, ctx: Context) -> list[Check]:
    """Certificates the device policy is attached to: destroy refuses (or revokes) while there are any."""
    policy = ctx.outputs.get(naming.OUT_DEVICE_POLICY) or next(iter(ctx.physical_ids("AWS::IoT::Policy")), "")
    if not policy:
        return []
    targets = devices.policy_targets(iot, policy)
    if not targets:
        return [Check("device policy", PASS, f"{policy} is attached to no certificate")]
    things = sorted({thing for target in targets for thing in target.things})
    return [Check("device policy", WARN, f"{policy} is attached to {len(targets)} certificate(s) "
                                         f"(devices: {', '.join(things) or 'none'})",
                  f"destroy needs --revoke-devices, or iotpipe device revoke <id> --env {ctx.config.env} first")]


def event_source_mapping(lambda_client: Any, ctx: Context) -> list[Check]:
    """The processor's Kinesis mapping: enabled, and what its last poll said."""
    # The ARN when the stack says it (ListEventSourceMappings takes a name or an ARN).
    function = ctx.outputs.get(naming.OUT_FUNCTION_ARN) or ctx.outputs.get(naming.OUT_FUNCTION_NAME) \
        or ctx.name(naming.function_name_pattern())
    mappings = lambda_client.list_event_source_mappings(FunctionName=function).get("EventSourceMappings", [])
    if not mappings:
        return [Check("event source mapping", FAIL, f"{function} has no event source mapping",
                      f"redeploy: iotpipe deploy --env {ctx.config.env}")]
    rows = []
    for mapping in mappings:
        state, result = mapping.get("State", "?"), mapping.get("LastProcessingResult", "")
        detail = f"{mapping.get('UUID', '?')[:8]} {state}" + (f", last result {result}" if result else "")
        if state != "Enabled":
            rows.append(Check("event source mapping", FAIL, detail,
                              f"enable it: aws lambda update-event-source-mapping --uuid {mapping.get('UUID')} "
                              "--enabled"))
        elif result and result not in ("OK", "No records processed"):
            rows.append(Check("event source mapping", WARN, detail, "see the processor's logs: iotpipe logs"))
        else:
            rows.append(Check("event source mapping", PASS, detail))
    return rows


def topic_rule(iot: Any, ctx: Context) -> list[Check]:
    """The topic rule exists and is enabled."""
    rule = ctx.name(naming.RULE_NAME_PATTERN)
    try:
        payload = call_aws("iot", "get-topic-rule", iot.get_topic_rule, ruleName=rule)["rule"]
    except AwsError as exc:
        if exc.code in ("UnauthorizedException", "ResourceNotFoundException"):
            return [Check("topic rule", FAIL, f"{rule} does not exist",
                          f"redeploy: iotpipe deploy --env {ctx.config.env}")]
        raise
    if payload.get("ruleDisabled"):
        return [Check("topic rule", FAIL, f"{rule} is disabled",
                      f"aws iot enable-topic-rule --rule-name {rule}")]
    return [Check("topic rule", PASS, f"{rule} is enabled")]


def local_topic_rule(factory: ClientSource, ctx: Context) -> list[Check]:
    """Under ``iotpipe local``: the deployed template's topic rule, which the local rule engine runs."""
    from iotpipe.local.stack import load_deployed_stack

    stack = load_deployed_stack(factory, ctx.config.resolved_stack_name)
    rules = stack.resources_of_type("AWS::IoT::TopicRule") if stack is not None else {}
    if stack is None or not rules:
        return [Check("topic rule", FAIL, "the deployed template has no topic rule",
                      f"redeploy: iotpipe deploy --env {ctx.config.env}")]
    rows = []
    for logical_id in rules:
        properties = stack.properties(logical_id)
        name = str(properties.get("RuleName") or logical_id)
        if properties.get("TopicRulePayload", {}).get("RuleDisabled"):
            rows.append(Check("topic rule", FAIL, f"{name} is disabled in the template",
                              "enable it in the template and redeploy"))
        else:
            rows.append(Check("topic rule", PASS, f"{name} runs in iotpipe local's rule engine"))
    return rows


def _metric_sum(cloudwatch: Any, namespace: str, metric: str, dimensions: dict[str, str], statistic: str,
                now: datetime) -> float | None:
    points = cloudwatch.get_metric_statistics(
        Namespace=namespace, MetricName=metric, StartTime=now - HOUR, EndTime=now, Period=3600,
        Statistics=[statistic], Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
    ).get("Datapoints", [])
    if not points:
        return None
    values = [float(p[statistic]) for p in points]
    return max(values) if statistic == "Maximum" else sum(values)


def recent_metrics(cloudwatch: Any, ctx: Context, now: datetime) -> list[Check]:
    """The last hour: readings processed, rule failures, iterator age, processor errors and throttles."""
    env, function = ctx.config.env, ctx.outputs.get(naming.OUT_FUNCTION_NAME) or ctx.name(
        naming.function_name_pattern())
    rows = []
    readings = _metric_sum(cloudwatch, naming.METRIC_NAMESPACE, naming.METRIC_READINGS, {"Environment": env},
                           "Sum", now)
    if not readings:
        rows.append(Check("readings processed (1 h)", WARN, "none",
                          f"no data in DynamoDB: are devices publishing to {naming.device_topic('<id>')} (iotpipe "
                          "simulate)? check the rule and the mapping rows"))
    else:
        rows.append(Check("readings processed (1 h)", PASS, f"{readings:g}"))
    failures = sum(_metric_sum(cloudwatch, "AWS/IoT", "Failure",
                               {"RuleName": ctx.name(naming.RULE_NAME_PATTERN), "ActionType": kind}, "Sum", now) or 0
                   for kind in naming.KINESIS_ACTION_TYPES)
    rows.append(Check("rule failures (1 h)", WARN, f"{failures:g}", "see rule-errors/ in the raw bucket")
                if failures else Check("rule failures (1 h)", PASS, "0"))
    age = _metric_sum(cloudwatch, "AWS/Lambda", "IteratorAge", {"FunctionName": function}, "Maximum", now)
    limit = ctx.config.alarms.iterator_age_ms
    if age is not None and age > limit:
        rows.append(Check("iterator age (1 h max)", FAIL, f"{age:,.0f} ms, above {limit:,} ms",
                          "the processor lags: look for errors and throttles below, raise batch_size or "
                          "parallelization_factor, or add shards"))
    else:
        rows.append(Check("iterator age (1 h max)", PASS, "no data" if age is None else f"{age:,.0f} ms"))
    for metric in ("Errors", "Throttles"):
        value = _metric_sum(cloudwatch, "AWS/Lambda", metric, {"FunctionName": function}, "Sum", now)
        if value:
            action = ("see iotpipe logs --env " + env) if metric == "Errors" else \
                "raise processor.reserved_concurrency (or the account quota)"
            rows.append(Check(f"processor {metric.lower()} (1 h)", WARN, f"{value:g}", action))
        else:
            rows.append(Check(f"processor {metric.lower()} (1 h)", PASS, "0"))
    return rows


def dead_letters(sqs: Any, ctx: Context) -> list[Check]:
    """Records waiting in the dead-letter queue (batches that exhausted their retries)."""
    url = ctx.outputs.get(naming.OUT_DLQ_URL)
    if not url:
        return []
    depth = int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
                ["Attributes"].get("ApproximateNumberOfMessages", 0))
    if depth:
        return [Check("dead-letter queue", WARN, f"{depth} message(s)",
                      "fix the cause, then iotpipe failures list / redrive --env "
                      f"{ctx.config.env} (reads each batch back and stores it)")]
    return [Check("dead-letter queue", PASS, "empty")]


def drift(cloudformation: Any, ctx: Context, sleep: Callable[[float], None] = time.sleep,
          polls: int = DRIFT_POLLS) -> list[Check]:
    """DetectStackDrift, waited for (bounded): a resource changed outside CloudFormation is a warning."""
    stack = (ctx.stack or {}).get("StackId") or ctx.config.resolved_stack_name
    detection = cloudformation.detect_stack_drift(StackName=stack)["StackDriftDetectionId"]
    for _ in range(polls):
        status = cloudformation.describe_stack_drift_detection_status(StackDriftDetectionId=detection)
        if status.get("DetectionStatus") != "DETECTION_IN_PROGRESS":
            break
        sleep(2.0)
    else:
        return [Check("drift", WARN, "drift detection still running", "run iotpipe doctor again in a minute")]
    drift_status = status.get("StackDriftStatus", "UNKNOWN")
    if drift_status == "DRIFTED":
        return [Check("drift", WARN, f"{status.get('DriftedStackResourceCount', '?')} resource(s) changed outside "
                                     "CloudFormation",
                      "aws cloudformation describe-stack-resource-drifts --stack-name "
                      f"{ctx.config.resolved_stack_name}; iotpipe deploy puts them back")]
    if drift_status == "IN_SYNC":
        return [Check("drift", PASS, "in sync with the template")]
    return [Check("drift", WARN, f"{drift_status}: {status.get('DetectionStatusReason', '')}".strip(": "))]


# --- the report ---------------------------------------------------------------------------------------------


def _describe(cloudformation: Any, stack_name: str) -> dict[str, Any] | None:
    try:
        stacks = call_aws("cloudformation", "describe-stacks", cloudformation.describe_stacks,
                          StackName=stack_name)["Stacks"]
    except AwsError as exc:
        if "does not exist" in exc.aws_message:
            return None
        raise
    if not stacks or stacks[0].get("StackStatus") in ("REVIEW_IN_PROGRESS", "DELETE_COMPLETE"):
        return None
    return dict(stacks[0])


def _resources(cloudformation: Any, stack_name: str) -> tuple[dict[str, Any], ...]:
    found: list[dict[str, Any]] = []
    with aws_call("cloudformation", "list-stack-resources"):
        for page in cloudformation.get_paginator("list_stack_resources").paginate(
                StackName=stack_name, PaginationConfig={"MaxItems": 1000}):
            found.extend(page.get("StackResourceSummaries", []))
    return tuple(found)


def context(factory: ClientSource, cfg: PipelineConfig, account: str, region: str) -> Context:
    """The shared context: the stack, if deployed, and its resources."""
    cloudformation = factory.client("cloudformation")
    try:
        stack = _describe(cloudformation, cfg.resolved_stack_name)
    except AwsError as exc:
        raise AwsError(f"describe-stacks {cfg.resolved_stack_name} failed: {_error_text(exc)}") from None
    resources = _resources(cloudformation, stack["StackId"]) if stack else ()
    return Context(cfg, account, region, stack, resources)


def deploy_blockers(factory: ClientSource, cfg: PipelineConfig, account: str, region: str) -> tuple[Check, ...]:
    """The rows that would make a deploy fail on AWS (names taken in the account); run by ``deploy`` first."""
    ctx = context(factory, cfg, account, region)
    return tuple(row for row in _guarded("names in the account", lambda: taken_names(factory, ctx))
                 if row.status == FAIL)


def run_doctor(factory: ClientSource, cfg: PipelineConfig, region: str, *, drift_check: bool = True,
               now: datetime | None = None, sleep: Callable[[float], None] = time.sleep,
               local: bool = False) -> Report:
    """Every check for ``cfg``'s environment; the deployed-stack rows only when the stack exists. ``local``: the
    factory points at ``iotpipe local``, whose rule engine runs the topic rule."""
    first = credentials(factory.client("sts"), region)
    if first.status == FAIL:
        return Report((first,))
    account = first.detail.split()[1]
    ctx = context(factory, cfg, account, region)
    rows = [first]
    rows += _guarded("account concurrency", lambda: concurrency(factory.client("lambda"), ctx))
    rows += config_notes(ctx)
    rows += _guarded("names in the account", lambda: taken_names(factory, ctx))
    if ctx.stack is None:
        rows.append(Check("stack", WARN, f"{cfg.resolved_stack_name} is not deployed in {region}",
                          f"iotpipe deploy --env {cfg.env}"))
        return Report(tuple(rows))
    status = str(ctx.stack.get("StackStatus"))
    healthy = status.endswith("_COMPLETE") and "ROLLBACK" not in status
    rows.append(Check("stack", PASS if healthy else FAIL, f"{cfg.resolved_stack_name} {status}",
                      "" if healthy else f"iotpipe status --env {cfg.env} shows why"))
    cloudformation = factory.client("cloudformation")
    rows += _guarded("imported exports", lambda: imported_exports(cloudformation, ctx))
    rows += _guarded("device policy", lambda: policy_certificates(factory.client("iot"), ctx))
    rows += _guarded("event source mapping", lambda: event_source_mapping(factory.client("lambda"), ctx))
    rows += _guarded("topic rule", lambda: local_topic_rule(factory, ctx) if local
                     else topic_rule(factory.client("iot"), ctx))
    moment = now or datetime.now(UTC)
    rows += _guarded("metrics (1 h)", lambda: recent_metrics(factory.client("cloudwatch"), ctx, moment))
    rows += _guarded("dead-letter queue", lambda: dead_letters(factory.client("sqs"), ctx))
    if drift_check:
        rows += _guarded("drift", lambda: drift(cloudformation, ctx, sleep))
    return Report(tuple(rows))
