"""Loading: iotpipe.toml's ``[defaults]`` and ``[env.<name>]`` merged with CLI overrides into a config, each
bad value a ConfigError naming its key path."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iotpipe.config.fields import (
    FieldError,
    ReadOnlyMap,
    _rule_problem,
    _type_problem,
)
from iotpipe.config.model import (
    _SECTION_TYPES,
    SEED_THRESHOLDS,
    PipelineConfig,
    Threshold,
)
from iotpipe.config.names import (
    PARAMETER_NAME_PATTERN,
    TAG_KEY_PATTERN,
    _price_problem,
    check_env_name,
    validate_tag,
)
from iotpipe.errors import ConfigError

DEFAULT_CONFIG_FILE = "iotpipe.toml"


_SCALAR_KEYS = ("stack_name", "region", "termination_protection")
_TOP_KEYS = (*_SCALAR_KEYS, "thresholds", *_SECTION_TYPES, "tags", "parameters", "prices")


def load_config(path: str | Path | None = None, env: str = "dev",
                overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """Load ``path`` (default ./iotpipe.toml if present) for ``env``, applying dotted-key ``overrides``.

    ``overrides`` maps dotted key paths (``processor.runtime``) to values, as the CLI flags give them.
    """
    document = read_config_file(path)
    return build_config(document, env, overrides or {})


def read_config_file(path: str | Path | None) -> dict[str, Any]:
    """Parse the TOML file; a missing default file means an empty document, a missing named file is an error."""
    if path is None:
        candidate = Path(DEFAULT_CONFIG_FILE)
        if not candidate.exists():
            return {}
        path = candidate
    file_path = Path(path)
    try:
        with file_path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {file_path} does not exist; create it or drop --config") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {file_path} is a directory; give a TOML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {file_path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") \
            from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file_path} is not valid TOML: {exc}") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts (sys.int_info)
        raise ConfigError(f"config file {file_path} has a value Python cannot read: {str(exc)[:120]}") from None


def config_source(path: str | Path | None, document: Mapping[str, Any], env: str) -> str:
    """One line for stderr: which file was read (or that none was) and which sections apply to ``env``."""
    if path is None and not Path(DEFAULT_CONFIG_FILE).exists():
        return f"config: no {DEFAULT_CONFIG_FILE} here (nor --config): built-in defaults for env {env}"
    name = path or DEFAULT_CONFIG_FILE
    sections = sorted((document.get("env") or {}).keys()) if isinstance(document.get("env"), Mapping) else []
    if env in sections:
        return f"config: {name} [env.{env}]"
    return f"config: {name}, no [env.{env}] section: [defaults] and built-in defaults"


def unknown_env_warning(document: Mapping[str, Any], env: str) -> str | None:
    """A warning when the config file has env sections but none named ``env`` (a typo like ``--env prdo``)."""
    envs = document.get("env")
    if not isinstance(envs, Mapping) or not envs or env in envs:
        return None
    return (f"env {env!r} is not a section of the config file (it has {', '.join(sorted(envs))}); "
            f"check --env, or add [env.{env}]")


def build_config(document: Mapping[str, Any], env: str, overrides: Mapping[str, Any]) -> PipelineConfig:
    """Merge defaults, the env section and overrides from a parsed document into a validated config."""
    check_env_name(env)
    _reject_unknown(document, ("defaults", "env"), "")
    defaults = _table(document.get("defaults", {}), "defaults")
    envs = _table(document.get("env", {}), "env")
    cli_layer = _expand_dotted(overrides)
    layers = [("defaults", defaults), *((f"env.{name}", section) for name, section in envs.items()),
              ("override", cli_layer)]
    for path, layer in layers:
        _check_layer(_table(layer, path), path)
    merged = _deep_merge(_deep_merge(defaults, envs.get(env, {})), cli_layer)
    source = f"env.{env}" if env in envs else "defaults"
    return _to_config(merged, env, source)


def _check_layer(layer: Mapping[str, Any], path: str) -> None:
    """Validate one layer on its own, so an error names the file section (or override) it came from."""
    _reject_unknown(layer, _TOP_KEYS, path)
    for name, cls in _SECTION_TYPES.items():
        if name in layer:
            _check_keys(cls, layer[name], f"{path}.{name}")
    for name, spec in _table(layer.get("thresholds", {}), f"{path}.thresholds").items():
        _check_keys(Threshold, spec, f"{path}.thresholds.{name}")
    _price_overrides(layer.get("prices", {}), f"{path}.prices")


def _to_config(merged: Mapping[str, Any], env: str, source: str) -> PipelineConfig:
    sections: dict[str, Any] = {name: _build_section(cls, merged.get(name, {}), f"{source}.{name}")
                for name, cls in _SECTION_TYPES.items()}
    scalars = {key: merged[key] for key in _SCALAR_KEYS if key in merged}
    return _construct(PipelineConfig, f"{source}", env=env,
                      thresholds=_build_thresholds(merged.get("thresholds"), f"{source}.thresholds"),
                      tags=tuple(validate_tag(k, v, f"{source}.tags")
                                 for k, v in _string_pairs(merged.get("tags", {}), f"{source}.tags",
                                                           TAG_KEY_PATTERN)),
                      parameters=_string_pairs(merged.get("parameters", {}), f"{source}.parameters",
                                               PARAMETER_NAME_PATTERN),
                      price_overrides=_price_overrides(merged.get("prices", {}), f"{source}.prices"),
                      **scalars, **sections)


def _construct(cls: type[_T], path: str, **values: Any) -> _T:
    """``cls(**values)``: the type validates itself; its error is given the file section's path."""
    try:
        return cls(**values)
    except FieldError as exc:
        raise ConfigError(f"{path}.{exc.field}: {exc.problem}" if exc.field else f"{path}: {exc.problem}") \
            from None


def _price_overrides(raw: Any, path: str) -> tuple[tuple[str, float], ...]:
    """``{service: {item: usd}}`` -> sorted ``("service.item", usd)`` pairs, each checked by :func:`_price_problem`.

    Whether ``service.item`` exists in the price table is checked by :mod:`iotpipe.cost`, which owns it.
    """
    pairs = []
    for service, items in _table(raw, path).items():
        for item, value in _table(items, f"{path}.{service}").items():
            problem = _price_problem(service, item, value)
            if problem:
                raise ConfigError(f"{path}.{service}.{item}: {problem}")
            pairs.append((f"{service}.{item}", float(value)))
    return tuple(sorted(pairs))


def _build_thresholds(raw: Any, path: str) -> ReadOnlyMap:
    if raw is None:
        return ReadOnlyMap(SEED_THRESHOLDS)
    table = _table(raw, path)
    seed: dict[str, Any] = {name: dataclasses.asdict(t) for name, t in SEED_THRESHOLDS.items()}
    result = []
    # Sensor type names are checked by PipelineConfig itself (one place for every rule).
    for name, spec in _deep_merge(seed, table).items():
        result.append((name, _build_section(Threshold, spec, f"{path}.{name}")))
    return ReadOnlyMap(result)


_T = typing.TypeVar("_T")


def _build_section(cls: type[_T], raw: Any, path: str) -> _T:
    table = _table(raw, path)
    _reject_unknown(table, tuple(f.name for f in dataclasses.fields(cls)), path)  # type: ignore[arg-type]
    return _construct(cls, path, **table)


def _check_keys(cls: type, raw: Any, path: str) -> None:
    """Check one layer's keys and values for ``cls`` on their own (a layer may set a few keys of a section)."""
    table = _table(raw, path)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(table, tuple(fields), path)
    hints = typing.get_type_hints(cls)
    for name, value in table.items():
        problem = _type_problem(value, hints[name]) or _rule_problem(value, fields[name].metadata)
        if problem:
            raise ConfigError(f"{path}.{name}: {problem}")


def _string_pairs(raw: Any, path: str, key_pattern: re.Pattern[str]) -> tuple[tuple[str, str], ...]:
    table = _table(raw, path)
    pairs = []
    for key, value in table.items():
        if not key_pattern.fullmatch(key):
            raise ConfigError(f"{path}.{key}: not a valid key")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{path}.{key}: expected a string, got {type(value).__name__}")
        pairs.append((key, str(value)))
    return tuple(sorted(pairs))


def _table(raw: Any, path: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a table, got {type(raw).__name__} {raw!r}")
    return dict(raw)


def _reject_unknown(table: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in table:
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise ConfigError(f"{where}: unknown key; allowed keys are {', '.join(allowed)}")


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _expand_dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in overrides.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree
