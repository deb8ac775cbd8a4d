"""``python -m iotpipe.local.moto_server [-H host] [-p port]``: the emulator of ``iotpipe local`` (moto's server
with iotpipe's moto patches, on waitress). The emulator itself is :mod:`iotpipe.local.emulator.server`; this
module keeps the entry point and the names its callers import."""

from __future__ import annotations

from iotpipe.local.emulator.server import (
    ACCESS_KEY_VARIABLE,
    API_TOKEN_HEADER,
    API_TOKEN_VARIABLE,
    QUIET_VARIABLE,
    SERVER_THREADS,
    WERKZEUG_VARIABLE,
    AccessKeyGuard,
    main,
    request_credential,
)

__all__ = ["ACCESS_KEY_VARIABLE", "API_TOKEN_HEADER", "API_TOKEN_VARIABLE", "QUIET_VARIABLE", "SERVER_THREADS",
           "WERKZEUG_VARIABLE", "AccessKeyGuard", "main", "request_credential"]

if __name__ == "__main__":
    main()
