"""The versioned seam between iotpipe and moto: every change iotpipe makes to moto, declared (one module per
service) with its kind, the moto releases it was tested on and its upstream reference.

- ``parity``: moto answers differently from AWS where our template or commands meet it; the library's and the
  CLI's tests run with these, so they test what AWS does.
- ``api``: moto lacks an API or resource our commands call (ListImports, UpdateTerminationProtection, the IoT
  endpoint custom resource without Docker).
- ``speed``: the same answers for less CPU; only the emulator of ``iotpipe local`` needs them (a differential test
  keeps their answers equal to plain moto's).

:func:`apply` checks the installed moto against each patch's tested range first (nothing is patched when one is
outside, unless ``IOTPIPE_ALLOW_UNTESTED_MOTO=1``), patches moto's classes in this process and returns an
:class:`Applied` handle whose :meth:`Applied.undo` puts the originals back. A patch already applied is not applied
twice: the handle holds only what that call changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from iotpipe.errors import LocalError
from iotpipe.local.emulator.moto_compat import (
    awslambda,
    cloudformation,
    cloudwatch,
    core,
    dynamodb,
    iot,
    kinesis,
    kms,
)
from iotpipe.local.emulator.moto_compat.base import KINDS, NOT_FILED, Kind, Patch, Recorder, reinstate, restore
from iotpipe.local.emulator.moto_compat.versions import ALLOW_UNTESTED, INSTALL_LOCAL, MOTO, installed_version

__all__ = ["ALL_KINDS", "KINDS", "LIBRARY_KINDS", "NOT_FILED", "PATCHES", "Applied", "Kind", "Patch", "active",
           "apply", "by_name", "check_versions", "markdown_table", "suspended"]

PATCHES: tuple[Patch, ...] = (*cloudformation.PATCHES, *iot.PATCHES, *kms.PATCHES, *awslambda.PATCHES,
                              *cloudwatch.PATCHES, *kinesis.PATCHES, *dynamodb.PATCHES, *core.PATCHES)
ALL_KINDS: tuple[Kind, ...] = KINDS
# What the library's and the CLI's tests run on: moto made to answer as AWS does, and the APIs our commands call.
LIBRARY_KINDS: tuple[Kind, ...] = ("parity", "api")


class Applied:
    """The patches one :func:`apply` call installed, and the attributes they replaced."""

    def __init__(self, patches: tuple[Patch, ...], changes: dict[str, list[tuple[Any, str, Any, Any]]]) -> None:
        self.patches = patches
        self._changes = changes

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the patches this handle installed (and still holds)."""
        return tuple(patch.name for patch in self.patches if patch.name in self._changes)

    def undo(self) -> None:
        """Put moto's originals back, last patch first; the patches may then be applied again."""
        for patch in reversed(self.patches):
            changes = self._changes.pop(patch.name, None)
            if changes is not None:
                restore(changes)
                _active.pop(patch.name, None)


# Patch name -> the attributes it replaced, for every patch applied in this process.
_active: dict[str, list[tuple[Any, str, Any, Any]]] = {}


def by_name(name: str) -> Patch:
    """The declared patch called ``name`` (KeyError naming the known ones otherwise)."""
    for patch in PATCHES:
        if patch.name == name:
            return patch
    raise KeyError(f"no moto patch {name!r}; known: {', '.join(p.name for p in PATCHES)}")


def check_versions(patches: Iterable[Patch], version: str | None = None) -> None:
    """LocalError (exit 2) naming the installed moto, the first patch whose tested range does not hold it and that
    range, unless ``IOTPIPE_ALLOW_UNTESTED_MOTO=1``; LocalError naming the ``local`` extra when moto is missing."""
    found = installed_version("moto") if version is None else version
    if found is None:
        raise LocalError(f"moto is not installed, and iotpipe local needs it: {INSTALL_LOCAL}")
    if os.environ.get(ALLOW_UNTESTED) == "1":
        return
    for patch in patches:
        if not patch.tested.contains(found):
            raise LocalError(
                f"moto {found} is installed but iotpipe's moto patch {patch.name} is tested with "
                f"moto{patch.tested.specifier}: pip install 'moto{MOTO.specifier}' "
                f"(or set {ALLOW_UNTESTED}=1 to try it anyway)", exit_code=2)


def apply(kinds: Iterable[Kind] = ALL_KINDS, *, names: Iterable[str] | None = None,
          version: str | None = None) -> Applied:
    """Patch moto in this process with the declared patches of ``kinds`` (or only those called ``names``), after
    checking the installed moto (``version`` overrides it, for tests) against each one's tested range; the handle
    undoes exactly what this call changed."""
    wanted = set(kinds)
    unknown = wanted - set(KINDS)
    if unknown:
        raise ValueError(f"unknown patch kinds {sorted(unknown)}; kinds are {', '.join(KINDS)}")
    chosen = tuple(patch for patch in PATCHES if patch.kind in wanted) if names is None \
        else tuple(by_name(name) for name in names)
    check_versions(chosen, version)
    changes: dict[str, list[tuple[Any, str, Any, Any]]] = {}
    installed: list[Patch] = []
    for patch in chosen:
        if patch.name in _active:
            continue
        if patch.install is None:
            continue
        recorder = Recorder()
        patch.install(recorder)
        changes[patch.name] = _active[patch.name] = recorder.changes
        installed.append(patch)
    return Applied(tuple(installed), changes)


def active() -> tuple[str, ...]:
    """The names of the patches applied in this process, in declaration order."""
    return tuple(patch.name for patch in PATCHES if patch.name in _active)


@contextmanager
def suspended(names: Iterable[str] | None = None) -> Iterator[None]:
    """moto without the applied patches called ``names`` (all of them when None) inside the block, the patches
    back after: a test of what one patch changes runs plain moto in the process that serves the patched one."""
    wanted = None if names is None else set(names)
    chosen = [name for name in reversed(active()) if wanted is None or name in wanted]
    for name in chosen:
        restore(_active[name])
    try:
        yield
    finally:
        for name in reversed(chosen):
            reinstate(_active[name])


def markdown_table(patches: Iterable[Patch] = PATCHES) -> str:
    """The patches as the Markdown table of ``docs/local.md`` (name, kind, tested range, upstream, what it does)."""
    rows = ["| Patch | Kind | Tested on | Upstream | What it changes |", "|---|---|---|---|---|"]
    rows += [f"| `{patch.name}` | {patch.kind} | {patch.tested.package}{patch.tested.specifier} | {patch.upstream} "
             f"| {patch.summary} |" for patch in patches]
    return "\n".join(rows) + "\n"
