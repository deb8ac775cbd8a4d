"""The ``iotpipe`` command line; each module imported here registers its commands on :data:`main`."""

from iotpipe.cli import build, deploy, operate  # noqa: F401  (render/lint; deploy/diff/...; device/simulate/...)
from iotpipe.cli.app import main

__all__ = ["main"]
