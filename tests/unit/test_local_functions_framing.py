"""The one wire format between the function runner and its workers, and what a Python worker loads before the
handler."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from iotpipe.local.functions.framing import HEADER, encode, read_message


def test_messages_round_trip_in_order_and_the_stream_ends_between_them() -> None:
    stream = io.BytesIO(encode({"requestId": "a", "event": {"n": 1}}) + encode({"payload": None}))
    assert read_message(stream.read) == {"requestId": "a", "event": {"n": 1}}
    assert read_message(stream.read) == {"payload": None}
    assert read_message(stream.read) is None


def test_the_length_is_four_bytes_big_endian_then_utf8_json_as_worker_js_writes_it() -> None:
    framed = encode({"k": "é"})
    body = json.dumps({"k": "é"}).encode("utf-8")
    assert framed == len(body).to_bytes(4, "big") + body
    assert HEADER.size == 4


def test_a_value_json_cannot_hold_is_sent_as_text() -> None:
    assert read_message(io.BytesIO(encode({"at": 1.5j})).read) == {"at": "1.5j"}


def test_a_zero_length_is_an_empty_message() -> None:
    assert read_message(io.BytesIO(HEADER.pack(0)).read) == {}


@pytest.mark.parametrize("cut", [2, 6])
def test_a_stream_that_ends_inside_a_message_is_an_eof_error(cut: int) -> None:
    with pytest.raises(EOFError):
        read_message(io.BytesIO(encode({"requestId": "a"})[:cut]).read)


def test_reads_that_return_a_few_bytes_at_a_time_still_make_whole_messages() -> None:
    data = io.BytesIO(encode({"event": list(range(50))}))
    assert read_message(lambda size: data.read(min(size, 3))) == {"event": list(range(50))}


def test_a_python_worker_loads_neither_boto_nor_the_runner_before_the_handler() -> None:
    code = ("import sys, iotpipe.local.functions.worker; "
            "print(sorted(m for m in sys.modules if m.startswith(('boto', 'iotpipe.local.'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(loaded.stdout.replace("'", '"')) == [
        "iotpipe.local.functions", "iotpipe.local.functions.framing", "iotpipe.local.functions.result",
        "iotpipe.local.functions.worker"]
