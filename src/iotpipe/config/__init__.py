"""Pipeline configuration: frozen dataclasses loaded from iotpipe.toml, an environment and CLI overrides.

Values flow CLI overrides > ``[env.<name>]`` > ``[defaults]`` > built-in defaults. The built-in defaults
reproduce the seed template's values. Every bad value raises :class:`ConfigError` naming the key path.

One module per seam: :mod:`~iotpipe.config.fields` (a field's rule in its metadata),
:mod:`~iotpipe.config.names` (AWS name rules), :mod:`~iotpipe.config.model` (the dataclasses and cross-field rules)
and :mod:`~iotpipe.config.loading` (iotpipe.toml and overrides). This package re-exports what ``iotpipe.config``
exported as one module.
"""

from __future__ import annotations

from iotpipe.config.fields import (
    FieldError,
    ReadOnlyMap,
)
from iotpipe.config.loading import (
    DEFAULT_CONFIG_FILE,
    build_config,
    config_source,
    load_config,
    read_config_file,
    unknown_env_warning,
)
from iotpipe.config.model import (
    _SECTION_TYPES,
    LOG_RETENTION_DAYS,
    MAX_THRESHOLDS_JSON_BYTES,
    NODE_RUNTIMES,
    ON_DEMAND_INITIAL_SHARDS,
    PYTHON_RUNTIMES,
    ROLLOUTS,
    SEED_THRESHOLDS,
    AlarmConfig,
    AnalyticsConfig,
    IngestConfig,
    PipelineConfig,
    ProcessorConfig,
    StorageConfig,
    StreamConfig,
    Threshold,
    config_warnings,
    needed_concurrency,
)
from iotpipe.config.names import (
    EMAIL_PATTERN,
    ENV_NAME_PATTERN,
    KMS_KEY_PATTERN,
    MAX_TAG_KEY_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    PARAMETER_NAME_PATTERN,
    PRICE_NAME_PATTERN,
    REGION_PATTERN,
    STACK_NAME_PATTERN,
    TAG_KEY_PATTERN,
    TAG_VALUE_PATTERN,
    check_env_name,
    validate_region,
    validate_stack_name,
    validate_tag,
)
from iotpipe.contract import (
    BASIC_INGEST_PREFIX,
    MAX_PACK_WINDOW_SECONDS,
    SENSOR_TYPE_PATTERN,
    STORAGE_LAYOUTS,
    device_topic,
)

# The contract's names the single module imported, read from it by callers.
from iotpipe.errors import ConfigError

__all__ = [
    "BASIC_INGEST_PREFIX",
    "DEFAULT_CONFIG_FILE",
    "EMAIL_PATTERN",
    "ENV_NAME_PATTERN",
    "KMS_KEY_PATTERN",
    "LOG_RETENTION_DAYS",
    "MAX_PACK_WINDOW_SECONDS",
    "MAX_TAG_KEY_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "MAX_THRESHOLDS_JSON_BYTES",
    "NODE_RUNTIMES",
    "ON_DEMAND_INITIAL_SHARDS",
    "PARAMETER_NAME_PATTERN",
    "PRICE_NAME_PATTERN",
    "PYTHON_RUNTIMES",
    "REGION_PATTERN",
    "ROLLOUTS",
    "SEED_THRESHOLDS",
    "SENSOR_TYPE_PATTERN",
    "STACK_NAME_PATTERN",
    "STORAGE_LAYOUTS",
    "TAG_KEY_PATTERN",
    "TAG_VALUE_PATTERN",
    "_SECTION_TYPES",
    "AlarmConfig",
    "AnalyticsConfig",
    "ConfigError",
    "FieldError",
    "IngestConfig",
    "PipelineConfig",
    "ProcessorConfig",
    "ReadOnlyMap",
    "StorageConfig",
    "StreamConfig",
    "Threshold",
    "build_config",
    "check_env_name",
    "config_source",
    "config_warnings",
    "device_topic",
    "load_config",
    "needed_concurrency",
    "read_config_file",
    "unknown_env_warning",
    "validate_region",
    "validate_stack_name",
    "validate_tag",
]
