"""Packaging of the processor: its one-file source, inlined into the template as ``Code.ZipFile``."""

from __future__ import annotations

from importlib import resources

from troposphere import awslambda

from iotpipe.errors import ConfigError

# CloudFormation zips an inline ZipFile into a 4 MB package; a one-file handler stays far below.
MAX_INLINE_BYTES = 4 * 1024 * 1024
_SOURCES = {"python": "python/index.py", "nodejs": "node/index.js"}


def runtime_family(runtime: str) -> str:
    """``python`` or ``nodejs`` for a Lambda runtime identifier such as ``python3.13``."""
    family = "nodejs" if runtime.startswith("nodejs") else "python" if runtime.startswith("python") else ""
    if not family:
        raise ConfigError(f"processor.runtime: {runtime!r} is neither a python nor a nodejs runtime")
    return family


def handler_source(runtime: str) -> str:
    """The processor source for ``runtime``, read from the installed package (works from a wheel too)."""
    relative = _SOURCES[runtime_family(runtime)]
    path = resources.files("iotpipe.handlers").joinpath(relative)
    if not path.is_file():
        raise ConfigError(f"processor.runtime: no processor source for {runtime} ({relative} is missing "
                          "from the iotpipe package); choose another runtime")
    source = path.read_text(encoding="utf-8")
    if len(source.encode("utf-8")) > MAX_INLINE_BYTES:
        raise ConfigError(f"{relative} is larger than the {MAX_INLINE_BYTES} bytes CloudFormation inlines")
    return source


def inline_code(runtime: str) -> awslambda.Code:
    """``Code`` with the processor source inlined as ``ZipFile``."""
    return awslambda.Code(ZipFile=handler_source(runtime))
