"""The releases of the packages ``iotpipe local`` patches that it was tested with, checked before it starts
(and before :func:`iotpipe.local.emulator.moto_compat.apply` patches anything).

``iotpipe.local.emulator.moto_compat`` rewrites moto's internals, so a moto release outside the tested range may change
what is patched (moto 5.2.6 turned a Kinesis record's arrival time from a float into a datetime, and every
GetRecords failed). pyproject.toml carries the same range; a unit test keeps the two equal.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import metadata

from iotpipe.errors import LocalError

# The variable a maintainer sets to run against an untested moto on purpose (``make test-latest`` does).
ALLOW_UNTESTED = "IOTPIPE_ALLOW_UNTESTED_MOTO"
INSTALL_LOCAL = "pip install 'iotpipe[local]'"


@dataclass(frozen=True)
class TestedRange:
    """A package and the releases tested with it: ``minimum <= version < below``."""

    package: str
    minimum: str
    below: str

    @property
    def specifier(self) -> str:
        """The range as pip writes it, e.g. ``>=5.2.5,<5.2.7``."""
        return f">={self.minimum},<{self.below}"

    def contains(self, version: str) -> bool:
        """Whether ``version`` is in the range (pre-releases of ``below`` are outside)."""
        return release_tuple(self.minimum) <= release_tuple(version) < release_tuple(self.below)


MOTO = TestedRange("moto", minimum="5.2.5", below="5.2.7")


def release_tuple(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``5.2.6`` -> (5, 2, 6); ``5.2.7.dev1`` -> (5, 2, 7)."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    if match is None:
        raise ValueError(f"not a release version: {version!r}")
    return tuple(int(part) for part in match.group(0).split("."))


def installed_version(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def check_tested(tested: TestedRange = MOTO, version: str | None = None) -> None:
    """LocalError (one line, naming both) when the installed release is outside the tested range, unless
    ``IOTPIPE_ALLOW_UNTESTED_MOTO=1``; when the package is missing, a LocalError naming the ``local`` extra (a
    wheel install without it would otherwise see only the emulator exit at start)."""
    found = installed_version(tested.package) if version is None else version
    if found is None:
        raise LocalError(f"{tested.package} is not installed, and iotpipe local needs it: {INSTALL_LOCAL}")
    if tested.contains(found) or os.environ.get(ALLOW_UNTESTED) == "1":
        return
    raise LocalError(f"{tested.package} {found} is installed but iotpipe local is tested with "
                     f"{tested.package}{tested.specifier}: pip install '{tested.package}{tested.specifier}' "
                     f"(or set {ALLOW_UNTESTED}=1 to try it anyway)", exit_code=2)
