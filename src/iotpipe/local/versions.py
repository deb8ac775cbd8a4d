"""Moved to :mod:`iotpipe.local.emulator.moto_compat.versions`; kept so callers of the old path still work."""

from iotpipe.local.emulator.moto_compat.versions import (
    ALLOW_UNTESTED,
    INSTALL_LOCAL,
    MOTO,
    TestedRange,
    check_tested,
    installed_version,
    release_tuple,
)

__all__ = ["ALLOW_UNTESTED", "INSTALL_LOCAL", "MOTO", "TestedRange", "check_tested", "installed_version",
           "release_tuple"]
