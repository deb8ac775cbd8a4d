"""docs/configuration.md is generated from the configuration's field metadata and committed: it must match."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from iotpipe import docgen
from iotpipe.config import _SECTION_TYPES, ProcessorConfig

REPO = Path(__file__).resolve().parents[2]


def test_committed_configuration_page_is_current() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == docgen.configuration_markdown(), (
        "docs/configuration.md is stale: run `make docs-config` (python -m iotpipe.docgen > docs/configuration.md)")


def test_every_section_and_key_is_documented_with_its_default() -> None:
    page = docgen.configuration_markdown()
    for name, cls in _SECTION_TYPES.items():
        assert f"## `{name}`" in page
        for field in dataclasses.fields(cls):
            assert f"| `{field.name}` | `{docgen._literal(field.default)}` |" in page, (name, field.name)


def test_allowed_values_come_from_the_validation_rules() -> None:
    page = docgen.configuration_markdown()
    assert "| `batch_size` | `100` | an integer 1 to 10,000 |" in page
    runtimes = dict(dataclasses.fields(ProcessorConfig)[0].metadata)["choices"]
    assert " / ".join(f'"{r}"' for r in runtimes) in page


def test_key_notes_name_real_keys() -> None:
    for dotted in docgen._KEY_NOTES:
        section, key = dotted.split(".")
        assert key in {f.name for f in dataclasses.fields(_SECTION_TYPES[section])}, dotted
