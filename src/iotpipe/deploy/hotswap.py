"""``iotpipe deploy --hotswap``: put changed processor code straight into the function, bypassing CloudFormation.

Like ``cdk deploy --hotswap`` and ``sam sync --code``, it is for a development env only. The deployed template
(GetTemplate) and the newly rendered one are compared with every ``AWS::Lambda::Function``'s ``Code`` set
aside: when anything else differs (a resource, a property, an output, a parameter or tag value) the hotswap is
refused and a full deploy is needed. Otherwise each function whose ``Code`` changed gets
``UpdateFunctionCode`` (the content-addressed zip uploaded to the artefacts bucket, or the inline source zipped
as CloudFormation would) and is waited for with boto3's ``function_updated_v2`` waiter.

The stack then drifts: its template still names the old code. The next full ``iotpipe deploy`` sees the changed
``S3Key`` (or ``ZipFile``) and reconciles it. A stack with termination protection, an env whose config asks for
it, or an env named ``prod``/``production`` is refused: those are production, where every change goes through
a change set.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from iotpipe.aws import call_aws
from iotpipe.deploy.client import DeployClient, Stack
from iotpipe.deploy.plan import DeployRequest, parse_template, upload_artefacts
from iotpipe.deploy.waiters import snapshot, wait_function_updated, watch_files
from iotpipe.errors import DeployError
from iotpipe.package import artefact_bucket_name, deterministic_zip

Progress = Callable[[str], None]
FUNCTION_TYPE = "AWS::Lambda::Function"
PRODUCTION_ENV_NAMES = frozenset({"prod", "production"})
HOTSWAP_STATES = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE"})
_CODE_PLACEHOLDER = "<code>"
DRIFT_WARNING = ("warning: hotswap changed the function's code outside CloudFormation; the stack now drifts from "
                 "its template until the next full `iotpipe deploy --env {env}`, which reconciles it")


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class CodeUpdate:
    """One function whose code the hotswap replaces."""

    logical_id: str
    function_name: str
    code: Mapping[str, str | bytes]  # UpdateFunctionCode's S3Bucket/S3Key, or ZipFile

    def describe(self) -> str:
        """Where the new code comes from, for the progress line."""
        if "S3Key" in self.code:
            return f"s3://{self.code['S3Bucket']!s}/{self.code['S3Key']!s}"
        return f"an inline zip of {len(self.code['ZipFile']):,} bytes"


@dataclass(frozen=True)
class HotswapResult:
    """What a hotswap did: the functions updated, their new CodeSha256, and the seconds it took."""

    stack_name: str
    updated: tuple[tuple[str, str], ...]  # (function name, CodeSha256)
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-friendly data."""
        return {"stackName": self.stack_name, "action": "hotswap",
                "updated": [{"functionName": name, "codeSha256": sha} for name, sha in self.updated],
                "seconds": round(self.seconds, 3)}


def production_reason(stack: Stack | None, env: str, termination_protection: bool) -> str | None:
    """Why the target counts as production (hotswap refused), or None for a development env."""
    if stack is not None and stack.termination_protection:
        return f"stack {stack.name} has termination protection"
    if termination_protection:
        return f"env {env} sets termination_protection = true"
    if env.lower() in PRODUCTION_ENV_NAMES:
        return f"env {env} is named as a production env"
    return None


def _without_code(template: Mapping[str, Any]) -> dict[str, Any]:
    resources = {logical_id: ({**spec, "Properties": {**(spec.get("Properties") or {}), "Code": _CODE_PLACEHOLDER}}
                              if spec.get("Type") == FUNCTION_TYPE else spec)
                 for logical_id, spec in (template.get("Resources") or {}).items()}
    return {**template, "Resources": resources}


def non_code_differences(deployed: Mapping[str, Any], rendered: Mapping[str, Any]) -> tuple[str, ...]:
    """What differs between the templates besides the functions' ``Code``: resource ids and top-level sections."""
    old, new = _without_code(deployed), _without_code(rendered)
    old_resources, new_resources = old["Resources"], new["Resources"]
    changed = sorted(logical_id for logical_id in set(old_resources) | set(new_resources)
                     if old_resources.get(logical_id) != new_resources.get(logical_id))
    sections = sorted(key for key in set(old) | set(new) if key != "Resources" and old.get(key) != new.get(key))
    return tuple(changed) + tuple(f"the {key} section" for key in sections)


def code_changes(deployed: Mapping[str, Any], rendered: Mapping[str, Any]) -> tuple[str, ...]:
    """The logical ids of the functions whose ``Code`` differs."""
    old, new = deployed.get("Resources") or {}, rendered.get("Resources") or {}
    return tuple(sorted(logical_id for logical_id, spec in new.items() if spec.get("Type") == FUNCTION_TYPE
                        and (old.get(logical_id) or {}).get("Properties", {}).get("Code")
                        != (spec.get("Properties") or {}).get("Code")))


def rollout_name(template: Mapping[str, Any]) -> str | None:
    """The ``processor.rollout`` a template shifts its processor's alias with (None: all-at-once, no alias)."""
    from iotpipe.config import ROLLOUTS

    names = {deployment_config: name for name, deployment_config in ROLLOUTS.items()}
    for spec in (template.get("Resources") or {}).values():
        if spec.get("Type") == "AWS::CodeDeploy::DeploymentGroup":
            config_name = (spec.get("Properties") or {}).get("DeploymentConfigName")
            return names.get(config_name, str(config_name)) if isinstance(config_name, str) else "a gradual rollout"
    return None


def _changed_pairs(wanted: Iterable[tuple[str, str]], current: Iterable[tuple[str, str]]) -> list[str]:
    have = dict(current)
    return sorted(key for key, value in wanted if have.get(key) != value)


def _module_file(properties: Mapping[str, Any]) -> str:
    module = str(properties.get("Handler", "index.handler")).rpartition(".")[0] or "index"
    return module + (".js" if str(properties.get("Runtime", "")).startswith("nodejs") else ".py")


def plan_hotswap(client: DeployClient, request: DeployRequest, stack: Stack | None) -> tuple[CodeUpdate, ...]:
    """The code updates that bring ``stack`` to ``request``'s template; DeployError when a hotswap cannot do it.

    Refused (a full deploy is needed): no stack yet, a stack that is not settled, any difference besides the
    functions' code. An empty result means nothing changed. Writes nothing.
    """
    name = request.stack_name
    if stack is None:
        raise DeployError(f"stack {name} does not exist; hotswap only updates a deployed stack: run "
                          f"`iotpipe deploy --env {request.env}` first")
    if stack.status not in HOTSWAP_STATES:
        raise DeployError(f"stack {name} is in {stack.status}; hotswap needs a settled stack: run "
                          f"`iotpipe deploy --env {request.env}` (or `iotpipe status`) first")
    rendered = parse_template(request.template_body)
    rollout = rollout_name(rendered)
    if rollout:
        # The mapping invokes the alias of a published version: new code in $LATEST would handle no record, and
        # each code change is a new version (its logical id hashes the code) that CodeDeploy shifts to.
        raise DeployError(f"env {request.env} sets processor.rollout = {rollout}: its stream invokes an alias of a "
                          "published version, which a hotswap of the function's code would not reach; run a full "
                          f"`iotpipe deploy --env {request.env}` (or set processor.rollout = \"all-at-once\" for "
                          "this env to hotswap)")
    body = client.get_template(stack.stack_id)
    deployed = dict(body) if isinstance(body, Mapping) else parse_template(str(body))
    others = non_code_differences(deployed, rendered)
    others += tuple(f"parameter {key}" for key in _changed_pairs(request.parameters, stack.parameters))
    others += tuple(f"tag {key}" for key in _changed_pairs(request.tags, stack.tags))
    if others:
        raise DeployError(f"more than the processor's code changed ({', '.join(others)}); hotswap only updates "
                          f"code: run a full `iotpipe deploy --env {request.env}`")
    changed = code_changes(deployed, rendered)
    if not changed:
        return ()
    physical = {str(r.get("LogicalResourceId")): str(r.get("PhysicalResourceId", ""))
                for r in client.stack_resources(stack.stack_id)}
    updates = []
    for logical_id in changed:
        properties = rendered["Resources"][logical_id]["Properties"]
        code = properties["Code"]
        if "ZipFile" in code:
            source = str(code["ZipFile"]).encode("utf-8")
            new_code: dict[str, str | bytes] = {"ZipFile": deterministic_zip({_module_file(properties): source})}
        else:
            bucket = artefact_bucket_name(client.account_id(), client.region)
            new_code = {"S3Bucket": bucket, "S3Key": str(code["S3Key"])}
        updates.append(CodeUpdate(logical_id=logical_id, function_name=physical.get(logical_id) or logical_id,
                                  code=new_code))
    return tuple(updates)


def execute_hotswap(client: DeployClient, request: DeployRequest, updates: Sequence[CodeUpdate],
                    progress: Progress = _quiet, *, clock: Callable[[], float] = time.monotonic) -> HotswapResult:
    """Upload the artefacts the updates need, update each function's code, and wait until Lambda has it."""
    started = clock()
    if any("S3Key" in update.code for update in updates):
        upload_artefacts(client, request.artefacts, progress)
    updated = []
    for update in updates:
        progress(f"hotswap: updating the code of {update.function_name} from {update.describe()}")
        response = call_aws("lambda", "update-function-code", client.lambda_.update_function_code,
                            FunctionName=update.function_name, **update.code)
        wait_function_updated(client.lambda_, update.function_name, request.timeout_s)
        updated.append((update.function_name, str(response.get("CodeSha256", ""))))
    return HotswapResult(stack_name=request.stack_name, updated=tuple(updated), seconds=clock() - started)


def hotswap(client: DeployClient, request: DeployRequest, progress: Progress = _quiet) -> HotswapResult:
    """Refuse production, plan the code updates and run them; an empty ``updated`` when the code is unchanged.

    ``request.termination_protection`` is the env's configured value (one of the production markers).
    """
    stack = client.find_stack(request.stack_name)
    reason = production_reason(stack, request.env, request.termination_protection)
    if reason:
        raise DeployError(f"hotswap refused: {reason}, so it counts as production, where code changes go through "
                          f"a change set; run `iotpipe deploy --env {request.env}` without --hotswap")
    updates = plan_hotswap(client, request, stack)
    if not updates:
        return HotswapResult(stack_name=request.stack_name, updated=(), seconds=0.0)
    progress(DRIFT_WARNING.format(env=request.env))
    return execute_hotswap(client, request, updates, progress)


def code_sha256(zip_body: bytes) -> str:
    """Lambda's ``CodeSha256`` of a deployment package: base64 of its SHA-256."""
    return base64.b64encode(hashlib.sha256(zip_body).digest()).decode("ascii")


# --- --watch ---------------------------------------------------------------------------------------


__all__ = ["DRIFT_WARNING", "CodeUpdate", "HotswapResult", "code_changes", "code_sha256", "execute_hotswap",
           "hotswap", "non_code_differences", "plan_hotswap", "production_reason", "snapshot", "watch_files"]
