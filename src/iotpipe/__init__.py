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
from typing import TYPE_CHECKING, Any

# The release (docs/versioning.md: what is public, what a bump means); `iotpipe --version` adds the git commit
# when run from a clone.
__version__ = "0.4.0"

# public name -> module that defines it (imported on first use)
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
    "compose": "iotpipe.composition",
    "Composition": "iotpipe.composition",
    "Groups": "iotpipe.composition",
    "GROUP_NAMES": "iotpipe.composition",
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

# The one list of public names: __all__ is made from _EXPORTS, and tests/unit/test_api.py checks that the
# TYPE_CHECKING block below (what type checkers and IDEs read) imports exactly these names from these modules.
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'iotpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


# The same names for type checkers and IDEs: `X as X` marks an explicit re-export (isort would split those into
# one statement per name, hence its noqa).
if TYPE_CHECKING:
    from iotpipe.blueprint import (  # noqa: I001
        Blueprint as Blueprint,
        load_blueprint as load_blueprint,
    )
    from iotpipe.composition import (
        GROUP_NAMES as GROUP_NAMES,
        Composition as Composition,
        Groups as Groups,
        compose as compose,
    )
    from iotpipe.config import (
        AlarmConfig as AlarmConfig,
        AnalyticsConfig as AnalyticsConfig,
        PipelineConfig as PipelineConfig,
        ProcessorConfig as ProcessorConfig,
        StorageConfig as StorageConfig,
        StreamConfig as StreamConfig,
        Threshold as Threshold,
        build_config as build_config,
        load_config as load_config,
    )
    from iotpipe.deploy.client import (
        DeployClient as DeployClient,
    )
    from iotpipe.deploy.execute import (
        execute_plan as execute_plan,
    )
    from iotpipe.deploy.plan import (
        DeployRequest as DeployRequest,
        plan_deploy as plan_deploy,
        prepare_template as prepare_template,
    )
    from iotpipe.errors import (
        AwsError as AwsError,
        BlueprintError as BlueprintError,
        ConfigError as ConfigError,
        DeployError as DeployError,
        IotpipeError as IotpipeError,
        LintError as LintError,
        ParameterError as ParameterError,
        TemplateError as TemplateError,
    )
    from iotpipe.lint import (
        Finding as Finding,
        blocking as blocking,
        lint_template as lint_template,
    )
    from iotpipe.naming import (
        Names as Names,
    )
    from iotpipe.render import (
        build_composition as build_composition,
        render_template as render_template,
        to_yaml as to_yaml,
    )
