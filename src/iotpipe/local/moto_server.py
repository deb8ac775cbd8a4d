"""``python -m iotpipe.local.moto_server [moto_server's arguments]``: a moto server with iotpipe's fixes."""

from __future__ import annotations

import logging
import os
import sys

from iotpipe.local import moto_fixes

QUIET_VARIABLE = "IOTPIPE_MOTO_QUIET"


def main(argv: list[str] | None = None) -> None:
    """Apply the fixes in this process, then run moto's own server entry point with ``argv``."""
    from moto.server import main as moto_main

    moto_fixes.apply()
    if os.environ.get(QUIET_VARIABLE):  # a line per request costs ~8% of the server's CPU under load
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
