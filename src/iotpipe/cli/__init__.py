"""The ``iotpipe`` command line: :data:`main` is the click group, its commands are listed in :mod:`iotpipe.cli.app`."""

from iotpipe.cli.app import main

__all__ = ["main"]
