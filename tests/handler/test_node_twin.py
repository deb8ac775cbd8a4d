"""Differential checks of the Node twin (handler/node/index.js) against the Python processor on the pure
functions where JavaScript and Python differ by default: ISO timestamps, number text, bound formatting,
JSON acceptance. The vectors themselves run in both runners (test_vectors.py and handler/node/test/)."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest
from processor_support import REPO, load_handler

index = load_handler()
NODE_DIR = REPO / "handler" / "node"
RECEIVED = 1_718_000_000_000

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules" / "@aws-sdk" / "client-s3").is_dir(),
    reason="needs node and the AWS SDK dev dependencies (make install)")

TIMESTAMPS = [
    "2024-06-10T06:13:10Z", "2024-06-10T08:13:10+02:00", "2024-06-10T06:13:10.123", "2024-06-10T06:13:10.1234567",
    "2024-06-10T06:13:10,5Z", "2024-06-10", "20240610", "20240610T061310", "20240610T061310Z", "2024-06-10 06:13",
    "2024-06-10T06", "2024-06-10T0613", "2024-06-10T06:13:10-05:30", "2024-06-10T06:13:10+0530",
    "2024-06-10T06:13:10+05",
    "2024-06-10T06:13:10+05:30:15", "2024-06-10T06:13:10+05:30:15.5", "2024-06-10T06:13:10.5+02:00",
    "2024-W24-1", "2024W241", "2024-W24", "2024W24", "2024-W24-1T06:00", "2020-W53-7", "2021-W53-1", "2024-W00-1",
    "2024-06-10T24:00:00", "2024-02-30T00:00:00", "2024-02-29T00:00:00", "2023-02-29", "2024-13-01", "2024-06-10T",
    "2024-06-10T06:13:10ZZ", "2024-06-10T06:13:10z", "2024-06-10T06:13:60", "2024-06-10T06:13:10+24:00",
    "2024-06-10T06:13:10+23:59", "2024-06-10T06:13:10.", "2024-06-1006:13:10", "2024-0610", "2024-06-10T06:13:10 ",
    " 2024-06-10", "yesterday", "", "2024", "2024-06", "1999-12-31T23:59:59.999Z", "2000-01-01T00:00:00Z",
    "2024-06-11T06:13:20.001Z", "2024-06-11T06:13:20Z", "\uff12\uff10\uff12\uff14-06-10", "2024-06-10é06:13",
    "2024-06-10\u00a006:13",
    "2024-06-10T06:13:10.123456789+00:00", "2024-06-10T061310", "2024-06-10T06:1310", "2024-06-10T06:13:10:5",
    "2024-06-10T0613105", "2024-06-10T06:13:10-00:00", "2024-06-10T06:13:10+02:70", "2024-06-10\U0001f60006:13",
    "2024-06-10\ud80006:13", "2024-06-1\ud800T06:13", "2024-W2\ud8001", "2024-06", "2024-06-", "2024-W",
]
EPOCH_NUMBERS = [1717999990000, 1717999990000.7, 946684799999, 946684800000, 1718086400000, 1718086400001,
                 1700000000, 0, -5, 1e300, 10**300, int("1" * 400), -int("1" * 400)]
VALUES = ["50", "50.0", "-0", "-0.0", "71.2", "1e2", "1E+2", "0.1", "1e-130", "1e-131", "9.99e125", "1e126",
          "123456789012345678901234567890", "9007199254740991", "9007199254740992", "-9007199254740993",
          "1e400", "1" * 400, "5e-324", "1.5e-05", "12345678.9", "1e16", "123456789012345680", "0.000123",
          "true", "null", '"7"', "[1]", "{}"]
BOUNDS = [80, 5.0, 10, 0, -40, 0.5, 1234567.0, 1e-5, 0.0001, 123.456789, 150, 99999.5, 1e6, 1e21, -0.001]
JSON_TEXTS = ['{"a":1}', "[1,2]", '{"a":NaN}', '{"a":Infinity}', "{'a':1}", '{"a":01}', '{"a":1,}', "\ufeff{}",
              '{"a":"\\ud800"}', '{"a":"\t"}', '{"a":1} x', "  {} \n", '{"a":-}', '{"a":.5}', '{"a":1.}',
              '{"a":"\\x41"}', '{"a":tru}', "[" * 500 + "]" * 500, '{"a":' + "1" * 4301 + "}"]

NODE_SCRIPT = r"""
const m = require(process.argv[1]);
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const value = (text) => m.parseJson(text);
const out = {
  timestamps: input.timestamps.map((t) => m.resolveTimestamp(t, input.received)),
  epochs: input.epochs.map((t) => m.resolveTimestamp(value(t), input.received)),
  values: input.values.map((v) => m.numberText(value(v))),
  bounds: input.bounds.map((b) => m.formatG(b)),
  json: input.json.map((t) => { try { m.parseJson(t); return true; } catch { return false; } }),
};
process.stdout.write(JSON.stringify(out));
"""


def _python_json_ok(text: str) -> bool:
    try:
        json.loads(text, parse_constant=index._reject_constant)
    except (ValueError, RecursionError):
        return False
    return True


def _node(payload: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(["node", "-e", NODE_SCRIPT, str(NODE_DIR / "index.js")], input=json.dumps(payload),
                          capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def node_results() -> dict[str, Any]:
    return _node({"timestamps": TIMESTAMPS, "received": RECEIVED, "epochs": [json.dumps(n) for n in EPOCH_NUMBERS],
                  "values": VALUES, "bounds": BOUNDS, "json": JSON_TEXTS})


def test_iso_timestamps_resolve_alike(node_results: dict[str, Any]) -> None:
    expected = [list(index.resolve_timestamp(t, RECEIVED)) for t in TIMESTAMPS]
    got = dict(zip(TIMESTAMPS, node_results["timestamps"], strict=True))
    assert got == dict(zip(TIMESTAMPS, expected, strict=True))


def test_epoch_timestamps_resolve_alike(node_results: dict[str, Any]) -> None:
    expected = [list(index.resolve_timestamp(n, RECEIVED)) for n in EPOCH_NUMBERS]
    assert node_results["epochs"] == expected


def test_values_have_the_same_number_text_or_reason(node_results: dict[str, Any]) -> None:
    expected = []
    for text in VALUES:
        outcome = index.number_text(json.loads(text))
        expected.append(outcome if isinstance(outcome, str) else [outcome[0], outcome[1]])
    assert dict(zip(VALUES, node_results["values"], strict=True)) == dict(zip(VALUES, expected, strict=True))


def test_bounds_are_formatted_like_python_g(node_results: dict[str, Any]) -> None:
    assert node_results["bounds"] == [format(float(b), "g") for b in BOUNDS]


def test_the_same_texts_are_json(node_results: dict[str, Any]) -> None:
    expected = [_python_json_ok(text) for text in JSON_TEXTS]
    assert dict(zip(JSON_TEXTS, node_results["json"], strict=True)) == dict(zip(JSON_TEXTS, expected, strict=True))
