"""Template -> YAML, deterministically (sorted keys, short-form intrinsics)."""

from __future__ import annotations

import contextlib
import os
import tempfile
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
    return to_yaml(compose(cfg).template)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a failure never leaves half a template.

    The temporary file is created in the same directory (so the rename is atomic), exclusively and under a
    random name (``tempfile.mkstemp``): a symlink planted at a predictable name cannot redirect the write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
