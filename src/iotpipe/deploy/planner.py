"""One deploy path: a config and the caller's options to a plan.

``iotpipe deploy``, ``diff`` and ``status``, ``iotpipe local up`` and library callers all come through here, so
each deploy is built the same way: the config's warnings, its tags and parameters overridden by the caller's
(tags checked before anything is rendered), the template rendered and passed through ``iotpipe lint``'s gate,
the names AWS would refuse (the doctor's blockers, when a client factory is given), then :func:`plan_deploy`.
Nothing here executes the plan (``iotpipe.deploy.execute`` does) or prints: ``progress`` receives every line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iotpipe.config import PipelineConfig, config_warnings, validate_tag
from iotpipe.deploy.client import DeployClient
from iotpipe.deploy.plan import DeployPlan, DeployRequest, merge_pairs, plan_deploy, prepare_template
from iotpipe.errors import DeployError

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class DeployOptions:
    """What a caller adds to the config: parameter and tag overrides (key by key, e.g. from ``--param`` and
    ``--tag``), the create failure mode, the bound of every wait, checkov in the lint gate, a blueprint, and
    ``read_only``: the name of a command that writes nothing to S3 (``iotpipe diff``)."""

    parameters: tuple[tuple[str, str], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    on_failure: str = "rollback"
    timeout_minutes: float = 30.0
    checkov: bool = False
    blueprint: Any = None
    read_only: str = ""


@dataclass(frozen=True)
class ConfigPlan:
    """A deploy plan with what was found on the way: the config's warnings and the lint gate's non-blocking
    findings (a blocking one, or a blocker, refuses the plan instead)."""

    plan: DeployPlan
    warnings: tuple[str, ...] = ()
    findings: tuple[Any, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-friendly data, with the warnings and the findings' count."""
        return {**self.plan.as_dict(), "warnings": list(self.warnings), "lintFindings": len(self.findings)}


def deploy_parameters(cfg: PipelineConfig, options: DeployOptions = DeployOptions()) -> tuple[tuple[str, str], ...]:
    """The config's template parameters overridden by the options', keys sorted."""
    return merge_pairs(cfg.parameters, options.parameters)


def deploy_tags(cfg: PipelineConfig, options: DeployOptions = DeployOptions()) -> tuple[tuple[str, str], ...]:
    """Config tags overridden by the options', each valid for CloudFormation (keys 1-128, values 1-256, no aws:);
    ConfigError naming ``--tag`` otherwise."""
    return tuple(validate_tag(key, value, "--tag") for key, value in merge_pairs(cfg.tags, options.tags))


def deploy_request(cfg: PipelineConfig, template: str, options: DeployOptions = DeployOptions()) -> DeployRequest:
    """The request for deploying ``template`` (rendered from ``cfg``): the one builder every deploy uses."""
    from iotpipe.package import artefacts

    return DeployRequest(
        stack_name=cfg.resolved_stack_name, template_body=template, env=cfg.env,
        parameters=deploy_parameters(cfg, options), tags=deploy_tags(cfg, options),
        termination_protection=cfg.termination_protection, on_failure=options.on_failure,
        timeout_minutes=options.timeout_minutes, reserved_concurrency=cfg.processor.reserved_concurrency,
        artefacts=artefacts(cfg.processor))


def check_blockers(factory: Any, cfg: PipelineConfig, client: DeployClient) -> None:
    """DeployError listing the doctor's rows that would fail the deploy on AWS (names taken in the account),
    before any write."""
    from iotpipe.doctor import deploy_blockers

    blockers = deploy_blockers(factory, cfg, client.account_id(), client.region)
    if blockers:
        raise DeployError("; ".join(f"{check.name}: {check.detail} ({check.action})" for check in blockers)
                          + f"; `iotpipe doctor --env {cfg.env}` checks everything")


def plan_config(cfg: PipelineConfig, client: DeployClient, options: DeployOptions = DeployOptions(),
                progress: Progress = _quiet, *, factory: Any = None) -> ConfigPlan:
    """Plan deploying ``cfg`` with ``options``: warnings, tags, parameters, the lint gate for the client's region,
    the blockers (when ``factory``, the client source of the doctor, is given), then the change set.

    Raises ConfigError (bad tag or parameter), LintError (the gate refuses the template) or DeployError (a
    blocker, or what :func:`~iotpipe.deploy.plan.plan_deploy` refuses) before any AWS write.
    """
    warnings = tuple(config_warnings(cfg))
    for warning in warnings:
        progress(f"warning: {warning}")
    deploy_tags(cfg, options)  # bad input is refused before anything is rendered, uploaded or created
    template, findings = prepare_template(cfg, deploy_parameters(cfg, options), region=client.region,
                                          checkov=options.checkov, blueprint=options.blueprint)
    if factory is not None:
        check_blockers(factory, cfg, client)
    if findings:
        progress(f"lint: {len(findings)} non-blocking finding(s); `iotpipe lint --env {cfg.env}` lists them")
    plan = plan_deploy(client, deploy_request(cfg, template, options), progress, read_only=options.read_only)
    return ConfigPlan(plan=plan, warnings=warnings, findings=tuple(findings))


__all__ = ["ConfigPlan", "DeployOptions", "check_blockers", "deploy_parameters", "deploy_request", "deploy_tags",
           "plan_config"]
