"""The ``iotpipe`` command line; each module imported here registers its commands on :data:`main`."""

# render/lint; deploy/diff/...; device/simulate/...; local up/status/down
from iotpipe.cli import build, deploy, local, operate  # noqa: F401
from iotpipe.cli.app import main

__all__ = ["main"]
