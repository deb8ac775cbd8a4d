"""config -> :class:`Composition`: the only place resources and outputs are added to a template.

The built-in groups are built in order, each from the config, the :class:`~iotpipe.naming.Names` and the
handles of the groups it depends on. A caller may replace a built-in group's builder (``overrides``) and add
groups of its own (``extra``) that reach the built-in groups only through their handles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Protocol

from troposphere import AWSObject, Equals, Not, Output, Parameter, Ref, Template

from iotpipe import naming
from iotpipe.config import PipelineConfig
from iotpipe.errors import TemplateError
from iotpipe.groups.analytics import AnalyticsGroup, build_analytics
from iotpipe.groups.endpoint import EndpointGroup, build_endpoint
from iotpipe.groups.fleet import FleetGroup, build_fleet
from iotpipe.groups.ingest import IngestGroup, build_ingest
from iotpipe.groups.keys import KeyGroup, build_keys
from iotpipe.groups.monitoring import MonitoringGroup, build_monitoring
from iotpipe.groups.processor import ProcessorGroup, build_processor
from iotpipe.groups.rollout import RolloutGroup, build_rollout
from iotpipe.groups.storage import StorageGroup, build_storage
from iotpipe.groups.stream import StreamGroup, build_stream
from iotpipe.naming import DEFAULT_NAMES, Names

DESCRIPTION = "Manufacturing IoT Data Processing Pipeline with Real-Time Analytics"


class Group(Protocol):
    """What every group returns: the resources and outputs compose adds (plus handles of its own)."""

    resources: tuple[AWSObject, ...]
    outputs: tuple[Output, ...]


@dataclass(frozen=True)
class Groups:
    """The handles of the built-in groups, in build order."""

    keys: KeyGroup
    storage: StorageGroup
    stream: StreamGroup
    processor: ProcessorGroup
    endpoint: EndpointGroup
    ingest: IngestGroup
    monitoring: MonitoringGroup
    analytics: AnalyticsGroup
    rollout: RolloutGroup
    fleet: FleetGroup

    def in_order(self) -> tuple[Group, ...]:
        """Every group, in the order compose adds them."""
        return tuple(getattr(self, f.name) for f in fields(self))


# A builder for an extra group: config, names and the built-in groups' handles -> a group.
ExtraBuilder = Callable[[PipelineConfig, Names, Groups], Group]

# How compose calls each built-in builder: its config (the whole config, a section, or none), then the names,
# then the handles of the groups it depends on as keywords. An override is called the same way and returns the
# same group type.
_BUILTINS: dict[str, tuple[type, Callable[..., Any], str | None, tuple[str, ...]]] = {
    "keys": (KeyGroup, build_keys, None, ()),
    "storage": (StorageGroup, build_storage, "storage", ()),
    "stream": (StreamGroup, build_stream, "stream", ()),
    "processor": (ProcessorGroup, build_processor, "", ("keys", "stream", "storage")),
    "endpoint": (EndpointGroup, build_endpoint, "", ("keys",)),
    "ingest": (IngestGroup, build_ingest, "ingest", ("stream", "storage", "endpoint")),
    "monitoring": (MonitoringGroup, build_monitoring, "", ("keys", "stream", "processor", "ingest")),
    "analytics": (AnalyticsGroup, build_analytics, "analytics", ("storage",)),
    "rollout": (RolloutGroup, build_rollout, "", ("processor", "monitoring")),
    "fleet": (FleetGroup, build_fleet, "", ("keys", "monitoring")),
}
GROUP_NAMES = tuple(_BUILTINS)


@dataclass(frozen=True, eq=False)
class Composition:
    """A composed pipeline: its template, every group's handles and the recipe that made it.

    ``template`` is the troposphere Template (render it with :func:`iotpipe.render.to_yaml`); ``groups`` the
    built-in groups' handles; ``extras`` what the extra builders returned; ``names`` the ids and physical names.
    """

    template: Template
    config: PipelineConfig
    names: Names
    groups: Groups
    extras: tuple[Group, ...] = ()
    overrides: Mapping[str, Callable[..., Any]] = field(default_factory=lambda: MappingProxyType({}))
    extra_builders: tuple[ExtraBuilder, ...] = ()

    @property
    def output_keys(self) -> tuple[str, ...]:
        """The output keys of this pipeline's groups (the contract's keys, prefixed by ``names``)."""
        groups = (*self.groups.in_order(), *self.extras)
        return (*(output.title for group in groups for output in group.outputs), self.names.output(naming.OUT_ENV))

    @property
    def physical_names(self) -> dict[str, Any]:
        """The physical names of the named resources (``Fn::Sub`` patterns over ``${EnvironmentSuffix}``)."""
        names = self.names
        return {
            "raw_bucket": names.raw_bucket_name(), "table": names.table_name(), "stream": names.stream_name(),
            "function": names.function_name_pattern(), "processor_log_group": names.processor_log_group_name(),
            "dead_letter_queue": names.dead_letter_queue_name(), "rule": names.rule_name_pattern(),
            "device_policy": names.device_policy_name(), "alarm_topic": names.alarm_topic_name(),
            "dashboard": names.dashboard_name(), "analytics_database": names.analytics_database_name(),
            "analytics_workgroup": names.analytics_workgroup_name(), "topic_pattern": names.topic_pattern(),
        }

    def recompose(self, *, overrides: Mapping[str, Callable[..., Any]] | None = None,
                  extra: Iterable[ExtraBuilder] = ()) -> Composition:
        """A fresh composition of the same config and names with more overrides and extra groups.

        Changes made to this composition's template by hand are not carried over: recompose first.
        """
        return compose(self.config, names=self.names, overrides={**self.overrides, **(overrides or {})},
                       extra=(*self.extra_builders, *extra))


def compose(cfg: PipelineConfig, *, names: Names = DEFAULT_NAMES,
            overrides: Mapping[str, Callable[..., Any]] | None = None, extra: Iterable[ExtraBuilder] = (),
            template: Template | None = None) -> Composition:
    """The whole pipeline for ``cfg``; a duplicate logical id raises (troposphere refuses it).

    ``overrides`` maps a built-in group's name (:data:`GROUP_NAMES`) to a builder called like the built-in one
    and returning the same group type. ``extra`` builders receive ``(cfg, names, groups)`` and return a group.
    ``template``: add this pipeline to an existing template (give the second pipeline another ``names.prefix``);
    the parameters and the e-mail condition are shared.
    """
    chosen = dict(overrides or {})
    unknown = sorted(set(chosen) - set(_BUILTINS))
    if unknown:
        raise TemplateError(f"compose overrides: unknown group(s) {', '.join(unknown)}; the built-in groups are "
                            f"{', '.join(GROUP_NAMES)}")
    target = template if template is not None else _new_template()
    _add_parameters(target, cfg)
    built: dict[str, Any] = {}
    for name, (kind, builtin, section, needs) in _BUILTINS.items():
        builder = chosen.get(name, builtin)
        first = () if section is None else (getattr(cfg, section) if section else cfg,)
        group = builder(*first, names, **{dependency: built[dependency] for dependency in needs})
        if not isinstance(group, kind):
            raise TemplateError(f"the {name} group's override {_describe(builder)} returned "
                                f"{type(group).__name__}; return a {kind.__name__} (later groups use its handles)")
        built[name] = group
    groups = Groups(**built)
    extras = tuple(_build_extra(builder, cfg, names, groups) for builder in extra)
    for group in (*groups.in_order(), *extras):
        for resource in group.resources:
            target.add_resource(resource)
        for output in group.outputs:
            target.add_output(output)
    target.add_output(Output(names.output(naming.OUT_ENV), Description="Environment suffix used for this deployment",
                             Value=Ref(naming.ENV_PARAM), Export=names.export(naming.OUT_ENV)))
    return Composition(target, cfg, names, groups, extras, MappingProxyType(chosen), tuple(extra))


def _build_extra(builder: ExtraBuilder, cfg: PipelineConfig, names: Names, groups: Groups) -> Group:
    group = builder(cfg, names, groups)
    resources, outputs = getattr(group, "resources", None), getattr(group, "outputs", None)
    if not isinstance(resources, tuple | list) or not isinstance(outputs, tuple | list):
        raise TemplateError(f"the extra group {_describe(builder)} returned {type(group).__name__}; return an "
                            "object with resources and outputs (tuples of troposphere resources and Outputs)")
    return group


def _describe(builder: Callable[..., Any]) -> str:
    return f"{getattr(builder, '__module__', '?')}.{getattr(builder, '__qualname__', repr(builder))}"


def _new_template() -> Template:
    template = Template(Description=DESCRIPTION)
    template.set_version("2010-09-09")
    return template


def _add_parameters(template: Template, cfg: PipelineConfig) -> None:
    """The template's parameters and condition, once: a second pipeline in the template shares them."""
    if naming.ENV_PARAM not in template.parameters:
        template.add_parameter(Parameter(
            naming.ENV_PARAM,
            Type="String",
            Default=cfg.env,
            Description="Environment suffix for resource naming (e.g., dev, staging, prod)",
            # Seed allowed uppercase, but the suffix goes into the bucket name and S3 bucket names are lowercase.
            AllowedPattern=naming.ENV_SUFFIX_PATTERN,
            # Bucket names are at most 63 characters and include account id and region.
            MaxLength=20,
            ConstraintDescription="Must contain only lowercase letters and digits",
        ))
    if naming.ALARM_EMAIL_PARAM not in template.parameters:
        template.add_parameter(Parameter(
            naming.ALARM_EMAIL_PARAM,
            Type="String",
            Default=cfg.alarms.email,
            Description="E-mail address that receives alarm notifications (empty: no subscription)",
            AllowedPattern=r"^$|^[^@\s]+@[^@\s]+\.[^@\s]+$",
            ConstraintDescription="Must be empty or an e-mail address",
        ))
    if naming.HAS_ALARM_EMAIL not in template.conditions:
        template.add_condition(naming.HAS_ALARM_EMAIL, Not(Equals(Ref(naming.ALARM_EMAIL_PARAM), "")))
