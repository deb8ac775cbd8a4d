"""The ``iotpipe`` command line; each module imported here registers its commands on :data:`main`."""

# render/lint; cost; deploy/diff/...; doctor; device/simulate/...; local up/status/down; sql
from iotpipe.cli import build, cost, deploy, doctor, local, operate, sql  # noqa: F401
from iotpipe.cli.app import main

__all__ = ["main"]
