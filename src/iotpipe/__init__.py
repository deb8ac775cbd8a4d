"""iotpipe: compose, lint, deploy and operate a manufacturing IoT pipeline on AWS as one CloudFormation template.

The library in a few names (docs/library.md walks through them)::

    cfg = iotpipe.load_config("iotpipe.toml", env="dev")      # or iotpipe.PipelineConfig(...) in Python
    composition = iotpipe.compose(cfg)                          # .template, .groups (handles), .names
    text = iotpipe.to_yaml(composition.template)
    findings = iotpipe.lint_template(text)

Names are imported on first use, so ``import iotpipe`` stays cheap for the CLI and the local workers.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

# The release (docs/versioning.md: what is public, what a bump means); `iotpipe --version` adds the git commit
# when run from a clone.
__version__ = "0.4.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # configuration
    "PipelineConfig": "iotpipe.config",
    "Threshold": "iotpipe.config",
    "StreamConfig": "iotpipe.config",
    "StorageConfig": "iotpipe.config",
    "ProcessorConfig": "iotpipe.config",
    "AlarmConfig": "iotpipe.config",
    "AnalyticsConfig": "iotpipe.config",
    "load_config": "iotpipe.config",
    "build_config": "iotpipe.config",
    # composition
    "compose": "iotpipe.compose",
    "Composition": "iotpipe.compose",
    "Groups": "iotpipe.compose",
    "GROUP_NAMES": "iotpipe.compose",
    "Names": "iotpipe.naming",
    "Blueprint": "iotpipe.blueprint",
    "load_blueprint": "iotpipe.blueprint",
    # render and lint
    "to_yaml": "iotpipe.render",
    "render_template": "iotpipe.render",
    "build_composition": "iotpipe.render",
    "lint_template": "iotpipe.lint",
    "blocking": "iotpipe.lint",
    "Finding": "iotpipe.lint",
    # deploy: render + lint, plan (describe only), execute
    "prepare_template": "iotpipe.deploy.plan",
    "DeployRequest": "iotpipe.deploy.plan",
    "plan_deploy": "iotpipe.deploy.plan",
    "execute_plan": "iotpipe.deploy.execute",
    "DeployClient": "iotpipe.deploy.client",
    # errors
    "IotpipeError": "iotpipe.errors",
    "ConfigError": "iotpipe.errors",
    "TemplateError": "iotpipe.errors",
    "BlueprintError": "iotpipe.errors",
    "LintError": "iotpipe.errors",
    "DeployError": "iotpipe.errors",
    "ParameterError": "iotpipe.errors",
    "AwsError": "iotpipe.errors",
}

__all__ = [  # noqa: RUF022 (grouped as _EXPORTS is)
    "__version__",
    "PipelineConfig",
    "Threshold",
    "StreamConfig",
    "StorageConfig",
    "ProcessorConfig",
    "AlarmConfig",
    "AnalyticsConfig",
    "load_config",
    "build_config",
    "compose",
    "Composition",
    "Groups",
    "GROUP_NAMES",
    "Names",
    "Blueprint",
    "load_blueprint",
    "to_yaml",
    "render_template",
    "build_composition",
    "lint_template",
    "blocking",
    "Finding",
    "prepare_template",
    "DeployRequest",
    "plan_deploy",
    "execute_plan",
    "DeployClient",
    "IotpipeError",
    "ConfigError",
    "TemplateError",
    "BlueprintError",
    "LintError",
    "DeployError",
    "ParameterError",
    "AwsError",
]


class _Package(types.ModuleType):
    """The package module: importing the submodule ``iotpipe.compose`` must not replace the function
    ``iotpipe.compose`` (the import system binds a submodule on its package by name); ``from iotpipe.compose
    import ...`` still reaches the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "compose" and isinstance(value, types.ModuleType):
            value = value.compose
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'iotpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from iotpipe.blueprint import Blueprint, load_blueprint
    from iotpipe.compose import GROUP_NAMES, Composition, Groups, compose
    from iotpipe.config import (
        AlarmConfig,
        AnalyticsConfig,
        PipelineConfig,
        ProcessorConfig,
        StorageConfig,
        StreamConfig,
        Threshold,
        build_config,
        load_config,
    )
    from iotpipe.deploy.client import DeployClient
    from iotpipe.deploy.execute import execute_plan
    from iotpipe.deploy.plan import DeployRequest, plan_deploy, prepare_template
    from iotpipe.errors import (
        AwsError,
        BlueprintError,
        ConfigError,
        DeployError,
        IotpipeError,
        LintError,
        ParameterError,
        TemplateError,
    )
    from iotpipe.lint import Finding, blocking, lint_template
    from iotpipe.naming import Names
    from iotpipe.render import build_composition, render_template, to_yaml
