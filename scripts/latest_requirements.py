"""Print iotpipe's requirements (core and the dev extra) with their upper bounds removed, one per line.

``make test-latest`` installs them with ``--upgrade`` into a separate venv, so the suite meets the newest
releases on purpose (the next moto that changes what iotpipe local patches is found by us, not by a user).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

UPPER_BOUND = re.compile(r",?\s*(<=?|~=|==)\s*[^,;\s]+")


def unbounded(requirement: str) -> str:
    """``moto[server]>=5.2.5,<5.2.7`` -> ``moto[server]>=5.2.5``: every upper bound or pin dropped."""
    name_end = re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?", requirement)
    if name_end is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    name, rest = requirement[:name_end.end()], requirement[name_end.end():]
    return (name + UPPER_BOUND.sub("", rest)).replace(" ", "").lstrip(",")


def main(pyproject: Path) -> int:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        print(unbounded(requirement))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("pyproject.toml")))
