"""Differential checks of the Node twin (handler/node/index.js) against the Python processor on the pure
functions of docs/contract.md where JavaScript and Python differ by default: RFC 3339 and epoch timestamps,
the number format, JSON acceptance and depth, base64 and malformed event records. The vectors themselves run
in both runners (test_handler_vectors.py and handler/node/test/)."""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
from typing import Any

import pytest
from processor_support import REPO, load_handler

index = load_handler()
NODE_DIR = REPO / "handler" / "node"
RECEIVED = 1_718_000_000_000
RETENTION_MS = 90 * 86_400_000

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules" / "@aws-sdk" / "client-s3").is_dir(),
    reason="needs node and the AWS SDK dev dependencies (make install)")

TIMESTAMPS = [
    "2024-06-10T06:13:10Z", "2024-06-10T08:13:10+02:00", "2024-06-10T06:13:10.123Z", "2024-06-10T06:13:10.1234567Z",
    "2024-06-10T06:13:10.123456789-05:30", "2024-06-10t06:13:10z", "2024-06-10T06:13:10-00:00",
    "2024-06-10T06:13:10+00:00:00.5", "2024-06-10T06:13:10.5+02:00", "2024-06-10T06:13:10+05:30:15",
    "2024-06-10T06:13:10.123", "2024-06-10", "20240610T061310Z", "2024-06-10 06:13:10Z", "2024-W24-1T06:00Z",
    "2024-06-10T24:00:00Z", "2024-02-30T00:00:00Z", "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z",
    "2024-13-01T00:00:00Z", "2024-06-10T06:13:60Z", "2024-06-10T06:13:10+24:00", "2024-06-10T06:13:10+23:59",
    "2024-06-10T06:13:10+02:60", "2024-06-10T06:13:10.Z", "2024-06-10T06:13:10,5Z", "2024-06-10T06:13:10+0200",
    "2024-06-10T06:13:10Z ", " 2024-06-10T06:13:10Z", "2024-06-10T06:13:10Z\n",
    "\uff12\uff10\uff12\uff14-06-10T06:13:10Z",
    "2024-06-10T06:13:10\ud800Z", "0000-01-01T00:00:00Z", "0050-01-01T00:00:00Z", "1999-12-31T23:59:59.999Z",
    "2000-01-01T00:00:00Z", "2000-01-02T00:00:00Z", "2024-03-12T06:13:20Z", "2024-03-12T06:13:19.999Z",
    "2024-06-11T06:13:20Z", "2024-06-11T06:13:20.001Z", "9999-12-31T23:59:59Z", "yesterday", "",
]
EPOCH_TEXTS = ["1717999990000", "1717999990000.7", "946684799999", "946684800000", "1000000000000", "1e12",
               "1718086400000", "1718086400001", "1700000000", "0", "-5", "1e300", "1" * 400, "-" + "1" * 400,
               "1e-400", "true", "null", '"1718000000000"', "[1717999990000]"]
VALUES = ["50", "50.0", "-0", "-0.0", "71.2", "1e2", "1E+2", "0.1", "1e-130", "1e-131", "9.99e125", "1e126",
          "123456789012345678901234567890", "9007199254740991", "9007199254740993", "-9007199254740993",
          "1e400", "1" * 400, "5e-324", "1e-400", "-1e-400", "0." + "0" * 400 + "1", "0." + "0" * 250 + "1e-99",
          "0e-400", "1.5e-05",
          "12345678.9", "1e16", "1e21", "1e-6", "1e-7", "123456789012345680", "0.000123", "1500005", "1.5e6",
          "true", "null", '"7"', "[1]", "{}"]
JSON_TEXTS = ['{"a":1}', "[1,2]", '{"a":NaN}', '{"a":Infinity}', "{'a':1}", '{"a":01}', '{"a":1,}', "\ufeff{}",
              '{"a":"\\ud800"}', '{"a":"\t"}', '{"a":1} x', "  {} \n", '{"a":-}', '{"a":.5}', '{"a":1.}',
              '{"a":"\\x41"}', '{"a":tru}', '{"a":' + "1" * 4301 + "}", '{"__proto__":{"x":1},"a":2}',
              '{"a":1,"a":2}', '{"a":"]]]]"}', '{"a":"\\"[[["}', '"unterminated [[[', "[" * 64 + "]" * 64,
              "[" * 65 + "]" * 65, '{"a":' + "[" * 63 + "]" * 63 + "}", '{"a":' + "[" * 64 + "]" * 64 + "}",
              "[" * 995 + "]" * 995, "[" * 10_000 + "]" * 10_000, "]]]][[[[", "{" * 70]
BASE64 = ["", "=", "==", "AAAA=", "AAAA==", "AA==", "AAA=", "AA=", "A===", "AAAA", "AAAAA", "AB==", "QQ",
          "QQ==\n", " QQ==", "QQ=A", "-_8=", "+/8=", "eyJhIjoxfQ=="]
EVENT_RECORDS: list[Any] = [
    None, "text", 5, [], {}, {"kinesis": "x"}, {"kinesis": {"data": 5}},
    {"eventID": 7, "kinesis": {"sequenceNumber": 12, "partitionKey": True, "approximateArrivalTimestamp": True}},
    {"eventID": "shardId-1:5", "kinesis": {"sequenceNumber": "5", "partitionKey": "p",
                                           "approximateArrivalTimestamp": 1718000000.2005}},
    {"kinesis": {"approximateArrivalTimestamp": -1}}, {"kinesis": {"approximateArrivalTimestamp": 1e300}},
    {"kinesis": {"approximateArrivalTimestamp": "1718000000"}}, {"kinesis": {"approximateArrivalTimestamp": 0}},
    {"kinesis": {"approximateArrivalTimestamp": 253402300799.999}},
    {"kinesis": {"approximateArrivalTimestamp": 253402300800}},
]
NOW_MS = 1_718_000_001_000

NODE_SCRIPT = r"""
const m = require(process.argv[1]);
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const parse = (text) => { try { return { value: m.parseJson(text) }; } catch { return { error: true }; } };
const outcome = (value) => (Number.isNaN(value) ? 'NaN' : value);
const out = {
  timestamps: input.timestamps.map((t) => m.resolveTimestamp(t, input.received, input.retention)),
  epochs: input.epochs.map((t) => m.resolveTimestamp(parse(t).value, input.received, input.retention)),
  values: input.values.map((v) => m.numberValue(parse(v).value)),
  doubles: input.doubles.map((x) => m.formatNumber(x)),
  stored: input.doubles.map((x) => m.storedNumber(x)),
  states: input.states.map((t) => { try { return m.statesText(m.readStates(t)); } catch { return null; } }),
  json: input.json.map((t) => (m.jsonDepth(t) > m.MAX_JSON_DEPTH ? 'deep' : (parse(t).error ? 'invalid' : 'ok'))),
  base64: input.base64.map((d) => { const r = m.decodeRecord({ kinesis: { data: d } }, 0).raw;
    return r === null ? null : r.toString('hex'); }),
  records: input.records.map((r) => { const d = m.decodeRecord(r, input.now);
    return [d.shardId, d.sequenceNumber, d.partitionKey, outcome(d.arrivedAt), d.data]; }),
};
process.stdout.write(JSON.stringify(out));
"""


def _doubles() -> list[float]:
    """Doubles whose shortest digits and exponent exercise every branch of the number format."""
    rng = random.Random(13)
    picked = [1e21, 1e-6, 1e-7, 123456789012345680.0, 0.1 + 0.2, 5e-324, 1.7976931348623157e308, 1500005.0,
              -1e-130, 2.5, 1 / 3, 100.0, 1e20, 9.999999999999999e20, 0.000001234]
    picked += [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(400)]
    picked += [rng.uniform(-1e6, 1e6) for _ in range(200)] + [round(rng.uniform(0, 1000), 2) for _ in range(200)]
    return [x for x in picked if x == x and abs(x) != float("inf")]


def _python_json(text: str) -> str:
    """As interpret() takes it: the depth first (a deeper text is never parsed), then the JSON."""
    if index.json_depth(text) > index.MAX_JSON_DEPTH:
        return "deep"
    try:
        index.parse_json(text)
    except ValueError:
        return "invalid"
    return "ok"


def _python_parse(text: str) -> Any:
    try:
        return index.parse_json(text)
    except ValueError:
        return None


def _node(payload: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(["node", "-e", NODE_SCRIPT, str(NODE_DIR / "index.js")], input=json.dumps(payload),
                          capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


DOUBLES = _doubles()
# stored states (docs/contract.md 12): 13 numbers with long doubles as base64url bits, and the earlier releases'
# 11 and 8; malformed strings refused (a short one, padding, non-zero unused bits, the standard alphabet)
STATES = ['{"t":[12,1767225611000,"QDRt0N7zXuc",1.13,33.55,1000,4,205.125,33.5,0,3,1.328125,3]}',
          '{"a":[1,2,3,4,5,6,7,8,9,10,11],"b":[300,1718000000000,20,0.25,20.5,60000,0,1.5]}',
          '{"t":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,"QDRt0N7zXuc"]}', '{"t":[1,2,3,4,5,6,7,8,9,10,11,12]}',
          '{"t":[1,2,3,4,5,6,7,8,9]}', '{"t":[null,2,3,4,5,6,7,8,9,10,11]}', '{"t":[1,true,3,4,5,6,7,8]}',
          '{"t":[1,2,"QDRt0N7zXu",0,0,0,0,0,0,0,0,1,0]}',
          '{"t":[1,2,"QDRt0N7zXuc=",0,0,0,0,0,0,0,0,1,0]}',
          '{"t":[1,2,"QDRt0N7zXud",0,0,0,0,0,0,0,0,1,0]}', '{"t":[1,2,"QDRt0N7z+uc",0,0,0,0,0,0,0,0,1,0]}']


@pytest.fixture(scope="module")
def node_results() -> dict[str, Any]:
    return _node({"timestamps": TIMESTAMPS, "received": RECEIVED, "retention": RETENTION_MS, "epochs": EPOCH_TEXTS,
                  "values": VALUES, "doubles": DOUBLES, "states": STATES, "json": JSON_TEXTS, "base64": BASE64,
                  "records": EVENT_RECORDS, "now": NOW_MS})


def test_rfc3339_timestamps_resolve_alike(node_results: dict[str, Any]) -> None:
    expected = [list(index.resolve_timestamp(t, RECEIVED, RETENTION_MS)) for t in TIMESTAMPS]
    got = node_results["timestamps"]
    assert dict(zip(TIMESTAMPS, got, strict=True)) == dict(zip(TIMESTAMPS, expected, strict=True))
    # the fraction of an offset is not RFC 3339: both replace it instead of applying or dropping it
    assert expected[TIMESTAMPS.index("2024-06-10T06:13:10+00:00:00.5")] == [RECEIVED, True]


def test_epoch_timestamps_resolve_alike(node_results: dict[str, Any]) -> None:
    expected = [list(index.resolve_timestamp(_python_parse(t), RECEIVED, RETENTION_MS)) for t in EPOCH_TEXTS]
    assert dict(zip(EPOCH_TEXTS, node_results["epochs"], strict=True)) == dict(zip(EPOCH_TEXTS, expected, strict=True))


def test_values_have_the_same_number_text_or_reason(node_results: dict[str, Any]) -> None:
    expected = []
    for text in VALUES:
        outcome = index.number_value(_python_parse(text))
        expected.append(outcome if isinstance(outcome, str) else [outcome[0], outcome[1]])
    assert dict(zip(VALUES, node_results["values"], strict=True)) == dict(zip(VALUES, expected, strict=True))


def test_the_number_format_is_the_same_for_any_double(node_results: dict[str, Any]) -> None:
    assert node_results["doubles"] == [index.format_number(x) for x in DOUBLES]


def test_state_numbers_are_stored_in_the_same_bytes(node_results: dict[str, Any]) -> None:
    assert node_results["stored"] == [index.stored_number(x) for x in DOUBLES]
    assert sum(text.startswith('"') for text in node_results["stored"]) > 100  # the bits' branch is exercised


def _python_states(text: str) -> str | None:
    try:
        return str(index.states_text(index.read_states(text)))
    except ValueError:
        return None


def test_stored_states_read_and_write_back_alike(node_results: dict[str, Any]) -> None:
    expected = [_python_states(text) for text in STATES]
    assert node_results["states"] == expected
    assert expected[0] == STATES[0] and expected[2] == '{"t":[1,2,3,4,5,6,7,8,9,10,11,12,13]}'
    assert expected[3:] == [None] * 8


def test_the_same_texts_are_json_and_too_deep(node_results: dict[str, Any]) -> None:
    expected = [_python_json(text) for text in JSON_TEXTS]
    assert dict(zip(JSON_TEXTS, node_results["json"], strict=True)) == dict(zip(JSON_TEXTS, expected, strict=True))
    assert expected[JSON_TEXTS.index("[" * 995 + "]" * 995)] == "deep"


def test_base64_is_decoded_alike(node_results: dict[str, Any]) -> None:
    expected = [None if (r := index.decode_record({"kinesis": {"data": d}}, 0).raw) is None else r.hex()
                for d in BASE64]
    assert dict(zip(BASE64, node_results["base64"], strict=True)) == dict(zip(BASE64, expected, strict=True))


def test_malformed_event_records_decode_alike(node_results: dict[str, Any]) -> None:
    expected = []
    for given in EVENT_RECORDS:
        record = index.decode_record(given, NOW_MS)
        expected.append([record.shard_id, record.sequence_number, record.partition_key, record.arrived_at,
                         record.data])
    assert node_results["records"] == expected
