"""``python -m iotpipe.local.moto_server [moto_server's arguments]``: a moto server with iotpipe's fixes."""

from __future__ import annotations

import sys

from iotpipe.local import moto_fixes


def main(argv: list[str] | None = None) -> None:
    """Apply the fixes in this process, then run moto's own server entry point with ``argv``."""
    from moto.server import main as moto_main

    moto_fixes.apply()
    moto_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
