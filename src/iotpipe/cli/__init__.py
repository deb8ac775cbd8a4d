"""The ``iotpipe`` command line; each module below registers its commands on :data:`main`."""

from iotpipe.cli import build  # noqa: F401  (registers render, lint)
from iotpipe.cli.app import main

__all__ = ["main"]
