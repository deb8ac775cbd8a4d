"""Template -> YAML, deterministically (sorted keys, short-form intrinsics)."""

from __future__ import annotations

import contextlib
import difflib
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from troposphere import Template

from iotpipe.composition import Composition, compose
from iotpipe.config import PipelineConfig
from iotpipe.errors import TemplateError

if TYPE_CHECKING:
    from iotpipe.blueprint import Blueprint


def to_yaml(template: Template) -> str:
    """YAML of ``template``; equal templates always give byte-identical text."""
    text = template.to_yaml(clean_up=False, long_form=False)
    return text if text.endswith("\n") else text + "\n"


def render_template(cfg: PipelineConfig, blueprint: Blueprint | None = None) -> str:
    """The pipeline template for ``cfg`` (customised by ``blueprint`` when given) as YAML text."""
    return to_yaml(build_composition(cfg, blueprint).template)


def build_composition(cfg: PipelineConfig, blueprint: Blueprint | None = None) -> Composition:
    """The default composition for ``cfg``, passed through ``blueprint`` when one is given."""
    composition = compose(cfg)
    return composition if blueprint is None else blueprint.apply(composition)


def stale_template(path: Path, text: str, context: int = 20) -> str:
    """Why the file ``path`` is not the rendered ``text`` (missing, or its first ``context`` differing lines as a
    unified diff); "" when it is."""
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"{path} does not exist"
    except (OSError, UnicodeDecodeError) as exc:
        return f"{path} cannot be read: {exc}"
    if current == text:
        return ""
    diff = list(difflib.unified_diff(current.splitlines(), text.splitlines(), f"{path} (committed)",
                                     f"{path} (rendered now)", n=0, lineterm=""))
    changed = sum(1 for line in diff[2:] if line[:1] in "+-")
    shown = "\n".join(diff[:context]) + ("\n..." if len(diff) > context else "")
    return f"{path} is stale: {changed} line(s) differ from what iotpipe renders for its config\n{shown}"


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a failure never leaves half a template.

    The temporary file is created in the same directory (so the rename is atomic), exclusively and under a
    random name (``tempfile.mkstemp``): a symlink planted at a predictable name cannot redirect the write.
    A symlink at ``path`` itself is followed on purpose (the link stays, its target gets the text), and a
    character device or FIFO (``/dev/null``, ``/dev/stdout``, a pipe) is written through rather than replaced
    by a regular file; any other kind of file is refused (TemplateError).
    """
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    kind = _file_kind(path)
    if kind in ("character device", "fifo"):
        with path.open("w", encoding="utf-8") as handle:
            handle.write(text)
        return
    if kind not in ("missing", "regular file"):
        raise TemplateError(f"{path} is a {kind}; give a file path for -o (or omit -o to write to stdout)")
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


def _file_kind(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    for test, kind in ((stat.S_ISREG, "regular file"), (stat.S_ISCHR, "character device"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISDIR, "directory"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"
