"""The wire between the function runner and its workers, written once: a 4-byte big-endian length, then that many
bytes of UTF-8 JSON. Invocations go one way and answers the other on a pipe of their own, so the handler's stdout
and stderr stay free for its log lines, as on Lambda. ``worker.js`` speaks the same framing in Node.js.

Standard library only: the Python worker imports it before the handler.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct(">I")


def encode(message: Any) -> bytes:
    """One framed message: the length, then the JSON (values JSON cannot hold are written as ``str``)."""
    data = json.dumps(message, default=str).encode("utf-8")
    return HEADER.pack(len(data)) + data


def read_message(read: Callable[[int], bytes]) -> Any:
    """The next message, read with ``read(n)`` (up to ``n`` bytes, ``b""`` at the end of the stream); None when the
    stream ends between messages, EOFError when it ends inside one. A zero length is an empty message (``{}``)."""
    header = _read_exactly(read, HEADER.size)
    if header is None:
        return None
    (length,) = HEADER.unpack(header)
    if length == 0:
        return {}
    body = _read_exactly(read, length)
    if body is None:
        raise EOFError("the stream ended inside a message")
    return json.loads(body)


def _read_exactly(read: Callable[[int], bytes], size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = read(size - len(data))
        if not chunk:
            if not data:
                return None
            raise EOFError("the stream ended inside a message")
        data += chunk
    return data
