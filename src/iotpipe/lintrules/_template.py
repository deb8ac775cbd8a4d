"""What the iotpipe lint rules share: walking a decoded template (cfn-lint's ``cfn.template``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

Path = tuple[str | int, ...]

# The rule reference in the repository's docs (the project publishes no site URL).
SOURCE_URL = "docs/security.md#iotpipes-own-lint-rules"
# Metadata.iotpipe.<key> of a resource holds iotpipe's own annotations (reasons for justified exceptions).
METADATA_KEY = "iotpipe"


def resources(template: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """``(logical id, type, resource)`` of every well-formed resource."""
    section = template.get("Resources")
    if not isinstance(section, Mapping):
        return
    for logical_id, resource in section.items():
        if isinstance(resource, Mapping) and isinstance(resource.get("Type"), str):
            yield str(logical_id), str(resource["Type"]), resource


def properties(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    """The resource's Properties, or an empty mapping."""
    value = resource.get("Properties")
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a list, else a one-element list (IAM accepts a string or a list in most places)."""
    return list(value) if isinstance(value, list) else [value]


def strings(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    """Every string inside ``value`` (intrinsic function arguments included), with its path."""
    if isinstance(value, str):
        yield path, str(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, (*path, index))


def is_no_value(value: Any) -> bool:
    """True for ``{"Ref": "AWS::NoValue"}`` (the property is absent)."""
    return isinstance(value, Mapping) and dict(value) == {"Ref": "AWS::NoValue"}


def annotation(resource: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``Metadata.iotpipe.<key>`` of the resource, or an empty mapping."""
    metadata = resource.get("Metadata")
    own = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
    value = own.get(key) if isinstance(own, Mapping) else None
    return value if isinstance(value, Mapping) else {}
