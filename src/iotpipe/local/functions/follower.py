"""Saved edits of the processor's sources, put into the functions that run them (``iotpipe local``'s inner loop)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from iotpipe.local.functions.runner import FunctionRunner


class HandlerFollower:
    """Puts saved edits of the processor's sources into the functions that run them (``iotpipe local``'s inner
    loop, as ``sam local`` reads the code at each invoke).

    ``sources`` maps a runtime family (``python``, ``nodejs``) to its source file. A function follows a file
    while it runs that file's text as last seen: another function's code (a blueprint's) is left alone.
    """

    def __init__(self, sources: Mapping[str, Path]) -> None:
        self._sources = dict(sources)
        self._seen = {family: _read_text(path) for family, path in self._sources.items()}

    @classmethod
    def for_packaged_handlers(cls) -> HandlerFollower:
        """Following the processor and its Node twin as iotpipe packages them (``handler/`` in a checkout)."""
        from iotpipe.package import handler_path

        return cls({"python": handler_path("python3"), "nodejs": handler_path("nodejs")})

    def poll(self, functions: list[FunctionRunner]) -> list[str]:
        """Read each source; update the functions that ran its previous text; their names."""
        from iotpipe.package import runtime_family

        updated = []
        for family, path in self._sources.items():
            text, previous = _read_text(path), self._seen[family]
            if text is None or text == previous:
                continue  # unchanged, or gone for a moment while an editor replaces it
            for function in functions:
                if runtime_family(function.spec.runtime) == family and function.spec.code == previous:
                    function.update_code(text)
                    updated.append(function.spec.name)
            self._seen[family] = text
        return updated


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
