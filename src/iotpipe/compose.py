"""config -> troposphere Template: the only place resources and outputs are added to a template."""

from __future__ import annotations

from troposphere import Equals, Not, Output, Parameter, Ref, Template

from iotpipe import naming
from iotpipe.config import PipelineConfig
from iotpipe.groups.analytics import build_analytics
from iotpipe.groups.endpoint import build_endpoint
from iotpipe.groups.ingest import build_ingest
from iotpipe.groups.keys import build_keys
from iotpipe.groups.monitoring import build_monitoring
from iotpipe.groups.processor import build_processor
from iotpipe.groups.storage import build_storage
from iotpipe.groups.stream import build_stream

DESCRIPTION = "Manufacturing IoT Data Processing Pipeline with Real-Time Analytics"


def compose(cfg: PipelineConfig) -> Template:
    """The whole pipeline template for ``cfg``; a duplicate logical id raises (troposphere refuses it)."""
    template = Template(Description=DESCRIPTION)
    template.set_version("2010-09-09")
    _add_parameters(template, cfg)
    template.add_condition(naming.HAS_ALARM_EMAIL, Not(Equals(Ref(naming.ALARM_EMAIL_PARAM), "")))

    keys = build_keys()
    storage = build_storage(cfg.storage)
    stream = build_stream(cfg.stream)
    processor = build_processor(cfg, keys=keys, stream=stream, storage=storage)
    endpoint = build_endpoint(cfg, keys=keys)
    ingest = build_ingest(stream=stream, storage=storage, endpoint=endpoint,
                          basic_ingest=cfg.ingest.basic_ingest)
    monitoring = build_monitoring(cfg, keys=keys, stream=stream, processor=processor, ingest=ingest)
    analytics = build_analytics(cfg.analytics, storage=storage)
    for group in (keys, storage, stream, processor, endpoint, ingest, monitoring, analytics):
        for resource in group.resources:
            template.add_resource(resource)
        for output in group.outputs:
            template.add_output(output)
    template.add_output(Output("EnvironmentSuffix", Description="Environment suffix used for this deployment",
                               Value=Ref(naming.ENV_PARAM), Export=naming.export("EnvironmentSuffix")))
    return template


def _add_parameters(template: Template, cfg: PipelineConfig) -> None:
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
    template.add_parameter(Parameter(
        naming.ALARM_EMAIL_PARAM,
        Type="String",
        Default=cfg.alarms.email,
        Description="E-mail address that receives alarm notifications (empty: no subscription)",
        AllowedPattern=r"^$|^[^@\s]+@[^@\s]+\.[^@\s]+$",
        ConstraintDescription="Must be empty or an e-mail address",
    ))
