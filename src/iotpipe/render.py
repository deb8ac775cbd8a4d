"""Template -> YAML, deterministically (sorted keys, short-form intrinsics)."""

from __future__ import annotations

from pathlib import Path

from troposphere import Template

from iotpipe.compose import compose
from iotpipe.config import PipelineConfig


def to_yaml(template: Template) -> str:
    """YAML of ``template``; equal templates always give byte-identical text."""
    text = template.to_yaml(clean_up=False, long_form=False)
    return text if text.endswith("\n") else text + "\n"


def render_template(cfg: PipelineConfig) -> str:
    """The pipeline template for ``cfg`` as YAML text."""
    return to_yaml(compose(cfg))


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a failure never leaves half a template."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
