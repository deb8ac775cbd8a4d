"""The topic rule engine of ``iotpipe local``: cases from the AWS IoT SQL reference, then end to end on moto.

Quoted doc passages are from the AWS IoT Core developer guide pages named next to them.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from cfnlint.decode import decode_str

from iotpipe.aws import ClientFactory
from iotpipe.composition import compose
from iotpipe.config import build_config
from iotpipe.groups.ingest import RULE_SQL
from iotpipe.local.rules import (
    UNDEFINED,
    RuleEngine,
    RuleEngineStats,
    RuleError,
    RuleEvaluationError,
    basic_ingest_target,
    compile_template,
    parse_payload,
    parse_sql,
    rule_from_properties,
    substitute,
    to_json,
)

NOW = 1_700_000_000_123
SEED_TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "seed_TapStack.yml"
REGION = "us-east-1"


def run(sql: str, payload: Any, topic: str = "topic/subtopic", *, version: str = "2016-03-23",
        client_id: str | None = "client-1") -> Any:
    """Evaluate ``sql`` on ``payload`` (a JSON-able value, or raw bytes) published on ``topic``."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_sql(sql, version).evaluate(raw, topic=topic, client_id=client_id, now_ms=NOW)


# ---------------------------------------------------------------------------------------------- SELECT

@pytest.mark.parametrize(("sql", "expected"), [
    # SELECT clause page, with {"color":"red", "temperature":50} on 'topic/subtopic'.
    ("SELECT * FROM 'topic/subtopic'", {"color": "red", "temperature": 50}),
    ("SELECT color FROM 'topic/subtopic'", {"color": "red"}),
    ("SELECT color AS my_color FROM 'topic/subtopic'", {"my_color": "red"}),
    ("SELECT color as my_color, temperature as fahrenheit FROM 'topic/subtopic'",
     {"my_color": "red", "fahrenheit": 50}),
    ("SELECT *, 15 as speed FROM 'topic/subtopic'", {"color": "red", "temperature": 50, "speed": 15}),
    ("SELECT (temperature - 32) * 5 / 9 AS celsius, upper(color) as my_color FROM 'topic/subtopic'",
     {"celsius": 10, "my_color": "RED"}),
    # Data types page: "You can explicitly create a Null value by using the Null keyword".
    ("SELECT NULL AS n FROM 'topic/subtopic'", {"n": None}),
])
def test_select_clause_examples(sql: str, expected: dict[str, Any]) -> None:
    assert run(sql, {"color": "red", "temperature": 50}) == expected


def test_select_drills_into_nested_objects() -> None:
    # SELECT clause: "You can use '.' syntax to drill into nested JSON objects".
    payload = {"color": {"red": 255, "green": 0, "blue": 0}, "temperature": 50}
    assert run("SELECT color.red as red_value FROM 'topic/subtopic'", payload) == {"red_value": 255}
    assert run("SELECT color.red FROM 'topic/subtopic'", payload) == {"red": 255}
    assert run("SELECT color.red.deeper AS d, temperature.x AS t FROM 'topic/subtopic'", payload) == {}


def test_an_attribute_named_value_is_not_select_value() -> None:
    payload = {"value": 4, "timestamp": 9}
    assert run("SELECT value FROM 'a'", payload, "a") == {"value": 4}
    assert run("SELECT value, timestamp FROM 'a'", payload, "a") == {"value": 4, "timestamp": 9}
    assert run("SELECT value * 2 AS double, value > 3 AS high FROM 'a'", payload, "a") == {"double": 8,
                                                                                          "high": True}


def test_sql_reference_example() -> None:
    # AWS IoT SQL reference: the rule extracts color when temperature > 50 and renames it rgb.
    sql = "SELECT color AS rgb FROM 'topic/subtopic' WHERE temperature > 50"
    assert run(sql, {"color": "red", "temperature": 100}) == {"rgb": "red"}
    assert run(sql, {"color": "red", "temperature": 50}) is None


def test_pipeline_rule_adds_rule_time_and_device_from_topic() -> None:
    payload = {"deviceId": "press-7", "sensorType": "temperature", "value": 71.2, "timestamp": 1699999999000}
    out = run(RULE_SQL, payload, "sensor/press-7/data")
    assert out == {**payload, "receivedAt": NOW, "topicDeviceId": "press-7"}
    assert list(out)[-2:] == ["receivedAt", "topicDeviceId"]


def test_a_later_item_overwrites_a_payload_key_and_undefined_removes_it() -> None:
    # The seed's `SELECT *, timestamp() AS timestamp` replaced the device's own timestamp this way.
    assert run("SELECT *, timestamp() AS timestamp FROM 'a'", {"timestamp": 5, "v": 1}) == {"timestamp": NOW, "v": 1}
    # Data types: Undefined "isn't representable in JSON": {"foo":null, "bar":undefined} serializes as {"foo":null}.
    assert run("SELECT *, missing AS v FROM 'a'", {"v": 1, "foo": None}) == {"foo": None}


def test_sql_2016_treats_whole_numbers_as_int_and_2015_keeps_decimals() -> None:
    # Data types: "With SQL V2 (2016-03-23), numeric values that are whole numbers, such as 10.0, are processed
    # as an Int value (10) instead of the expected Decimal value (10.0)".
    payload = b'{"value": 10.0, "pi": 3.25}'
    out_2016 = run("SELECT * FROM 'a'", payload, "a")
    out_2015 = run("SELECT * FROM 'a'", payload, "a", version="2015-10-08")
    assert json.dumps(out_2016) == '{"value": 10, "pi": 3.25}'
    assert json.dumps(out_2015) == '{"value": 10.0, "pi": 3.25}'


def test_case_statement_example() -> None:
    sql = ("SELECT CASE color WHEN 'green' THEN 'go' WHEN 'yellow' THEN 'caution' WHEN 'red' THEN 'stop' "
           "ELSE 'you are not at a stop light' END as instructions FROM 'topic/subtopic'")
    assert run(sql, {"color": "yellow"}) == {"instructions": "caution"}
    assert run(sql, {"color": "blue"}) == {"instructions": "you are not at a stop light"}
    # "If v is Undefined, the result of the case statement is Undefined."
    assert run(sql, {}) == {}


# ---------------------------------------------------------------------------------------------- literals

def test_object_and_array_literals() -> None:
    # Literals page examples (the second with the payload its output implies).
    sql = "SELECT {'latitude': get(lat_long, 0),'longitude':get(lat_long, 1)} as lat_long FROM 'topic/subtopic'"
    assert run(sql, {"lat_long": [47.606, -122.332]}) == {"lat_long": {"latitude": 47.606, "longitude": -122.332}}
    assert run("SELECT [lat,long] as lat_long FROM 'topic/subtopic'", {"lat": 47.606, "long": -122.332}) == {
        "lat_long": [47.606, -122.332]}


def test_literals_need_sql_2016() -> None:
    # Literals: "Literals are available only when using SQL version 2016-03-23 or later."
    with pytest.raises(RuleError, match="array literal needs AwsIotSqlVersion 2016-03-23"):
        parse_sql("SELECT [a, b] AS c FROM 'a'", "2015-10-08")
    with pytest.raises(RuleError, match="object literal needs AwsIotSqlVersion 2016-03-23"):
        parse_sql("SELECT {'a': 1} AS c FROM 'a'", "2015-10-08")


def test_scalar_literals_and_quotes() -> None:
    out = run("SELECT 'single' AS a, \"double\" AS b, -2.5 AS c, true AS d, FALSE AS e, 1e2 AS f, "
              "'it\\'s' AS g FROM 'a'", {}, "a")
    assert out == {"a": "single", "b": "double", "c": -2.5, "d": True, "e": False, "f": 100, "g": "it's"}


# ---------------------------------------------------------------------------------------------- functions

def test_topic_function_levels_and_out_of_range() -> None:
    # topic(Decimal): "For the topic foo/bar/baz, topic(1) returns foo, topic(2) returns bar".
    sql = "SELECT topic() AS t, topic(1) AS a, topic(2) AS b, topic(3) AS c, topic(4) AS d, topic(0) AS z FROM '#'"
    assert run(sql, {}, "foo/bar/baz") == {"t": "foo/bar/baz", "a": "foo", "b": "bar", "c": "baz"}


def test_basic_ingest_prefix_is_not_part_of_topic() -> None:
    # topic(Decimal): with Basic Ingest "topic() = Buildings/Building5/Floor2/Room201/Lights, topic(3) = Floor2".
    target = basic_ingest_target("$aws/rules/BuildingManager/Buildings/Building5/Floor2/Room201/Lights")
    assert target == ("BuildingManager", "Buildings/Building5/Floor2/Room201/Lights")
    out = run("SELECT topic() AS t, topic(3) AS floor FROM 'Buildings/#'", {}, target[1])
    assert out == {"t": "Buildings/Building5/Floor2/Room201/Lights", "floor": "Floor2"}
    assert basic_ingest_target("sensor/x/data") is None


def test_timestamp_clientid_newuuid_sql_version() -> None:
    sql = "SELECT timestamp() AS ts, clientid() AS c, newuuid() AS u, newuuid() AS u2, sql_version() AS v FROM 'a'"
    out = run(sql, {}, "a", client_id="iotconsole-1")
    assert out["ts"] == NOW and out["c"] == "iotconsole-1" and out["v"] == "2016-03-23"
    assert uuid.UUID(out["u"]) != uuid.UUID(out["u2"])
    # clientid(): "or n/a if the message wasn't sent over MQTT".
    assert run(sql, {}, "a", client_id=None)["c"] == "n/a"


@pytest.mark.parametrize(("expression", "expected"), [
    ("concat('con', 'cat')", "concat"),
    ("concat(1, 'hello')", "1hello"),
    ("concat([1, 2, 3], 4)", [1, 2, 3, 4]),
    ("lower('HELLO')", "hello"),
    ("upper(['hello'])", '["HELLO"]'),
    ("get(['a', 'b', 'c'], 1)", "b"),
    ("get({'a': 'b'}, 'a')", "b"),
    ("get('abc', 1)", "b"),
    ("length('hi')", 2),
    ("length(false)", 5),
    ("isNull(5)", False),
    ("isNull(Null)", True),
    ("isUndefined(5)", False),
    ("isUndefined(missing)", True),
    ("abs(-5)", 5),
    ("abs('-5.123')", 5.123),
    ("startswith('sensor/x', 'sensor')", True),
    ("replace('a-b-c', '-', '/')", "a/b/c"),
    ("10 / 4", 2),
    ("-7 / 2", -3),
    ("7 % 3", 1),
    ("10.5 / 2", 5.25),
    ("'5' - 2", 3),
    ("1 + 'a'", "1a"),
    ("true + 1", UNDEFINED),
    # Operators: AND/OR need Boolean (or "true"/"false") operands; "Other value | Other value | Undefined".
    ("false AND missing", UNDEFINED),
    ("true OR missing", UNDEFINED),
    ("true OR false", True),
    ("'TRUE' AND true", True),
    ("1 / 0", UNDEFINED),
])
def test_functions_and_operators(expression: str, expected: Any) -> None:
    out = run(f"SELECT {expression} AS r FROM 'a'", {}, "a")
    if expected is UNDEFINED:
        assert out == {}
    else:
        assert out == {"r": expected}
        assert type(out["r"]) is type(expected)


# ---------------------------------------------------------------------------------------------- WHERE

@pytest.mark.parametrize(("where", "payload", "triggered"), [
    # WHERE clause page: temperature 40 fails `temperature > 50 AND color <> 'red'`.
    ("temperature > 50 AND color <> 'red'", {"color": "red", "temperature": 40}, False),
    ("temperature > 50 AND color <> 'red'", {"color": "blue", "temperature": 60}, True),
    # Comparisons: "Both operands are converted to a Decimal"; strings that parse as numbers take part.
    ("value > 9", {"value": "10"}, True),
    ("value > 9", {"value": "ten"}, False),
    ("value >= 10 AND value <= 10 AND value < 11", {"value": 10.0}, True),
    # "=": Int is converted to Decimal; mismatched types are False, and "<>" True.
    ("value = 10", {"value": 10.0}, True),
    ("value = '10'", {"value": 10}, False),
    ("value <> '10'", {"value": 10}, True),
    ("name = 'press'", {"name": "press"}, True),
    ("tags = ['a', 1]", {"tags": ["a", 1]}, True),
    ("meta = {'b': 2, 'a': 1}", {"meta": {"a": 1, "b": 2}}, True),
    ("flag = true", {"flag": True}, True),
    ("flag = 1", {"flag": True}, False),
    # AND binds tighter than OR; NOT applies to the whole comparison.
    ("a = 1 OR b = 1 AND c = 1", {"a": 1, "b": 0, "c": 0}, True),
    ("(a = 1 OR b = 1) AND c = 1", {"a": 1, "b": 0, "c": 0}, False),
    ("NOT a = 1", {"a": 2}, True),
    ("NOT a = 1 AND b = 1", {"a": 2, "b": 1}, True),
    ("NOT (a = 1 AND b = 1)", {"a": 1, "b": 1}, False),
    # AND/OR/NOT take "true"/"false" strings in any case.
    ("flag AND 'TRUE'", {"flag": "true"}, True),
    ("NOT flag", {"flag": "False"}, True),
    # A missing attribute is Undefined: comparisons with it are Undefined and the actions do not run.
    ("missing > 1", {}, False),
    ("missing = 1", {}, False),
    ("missing <> 1", {}, False),
    ("NOT missing = 1", {}, False),
    ("isUndefined(missing)", {}, True),
    ("foo = NULL", {"foo": None}, True),
    ("isNull(foo) AND isUndefined(bar)", {"foo": None}, True),
    # Operators page: AND/OR with an operand that is neither Boolean nor "true"/"false" is Undefined.
    ("a = 1 OR missing = 1", {"a": 1}, False),
    ("value > 50 AND 1", {"value": 60}, False),
])
def test_where_clause(where: str, payload: dict[str, Any], triggered: bool) -> None:
    out = run(f"SELECT * FROM 'topic/subtopic' WHERE {where}", payload)
    assert (out is not None) is triggered


def test_where_cannot_see_select_aliases() -> None:
    # WHERE clause: "you cannot reference any aliases created with the AS keyword in the SELECT".
    assert run("SELECT temperature AS t FROM 'a' WHERE t > 1", {"temperature": 5}, "a") is None
    assert run("SELECT temperature AS t FROM 'a' WHERE temperature > 1", {"temperature": 5}, "a") == {"t": 5}


# ---------------------------------------------------------------------------------------------- FROM

@pytest.mark.parametrize(("topic_filter", "topic", "matches"), [
    # FROM clause page, '#' example: three of the four topics trigger 'topic/#'.
    ("topic/#", "topic/subtopic", True),
    ("topic/#", "topic/subtopic-2", True),
    ("topic/#", "topic/subtopic-3/details", True),
    ("topic/#", "topic-2/subtopic-x", False),
    # '+' example: two path elements whose first is 'topic'.
    ("topic/+", "topic/subtopic", True),
    ("topic/+", "topic/subtopic-3/details", False),
    ("topic/+", "topic-2/subtopic-x", False),
    # MQTT topics page: "A subscription to sensor/# receives messages published to sensor/, sensor/temperature,
    # sensor/temperature/room1, but not messages published to sensor."
    ("sensor/#", "sensor", False),
    ("sensor/#", "sensor/", True),
    ("sensor/#", "sensor/temperature/room1", True),
    ("sensor/+/room1", "sensor/temperature/room1", True),
    ("sensor/+/room1", "sensor/temperature/room2", False),
    ("sensor/+/data", "sensor//data", True),
    ("sensor/+/data", "sensor/a/b/data", False),
    ("sensor/+/data", "Sensor/a/data", False),  # "Topic names and topic filters are case sensitive"
    ("#", "anything/at/all", True),
    ("#", "$aws/things/x/shadow/update", False),  # MQTT: a leading wildcard does not match '$' topics
    ("+/x", "$aws/x", False),
    ("$aws/things/+/shadow/update", "$aws/things/x/shadow/update", True),
    ("sensor/x/data", "sensor/x/data", True),
    ("sensor/x/data", "sensor/x/data/", False),
])
def test_from_topic_filters(topic_filter: str, topic: str, matches: bool) -> None:
    assert parse_sql(f"SELECT * FROM '{topic_filter}'").matches(topic) is matches


def test_rule_without_from_is_reachable_by_basic_ingest_only() -> None:
    # SQL reference: FROM is "Optional for rules that are only triggered using the Basic Ingest feature".
    query = parse_sql("SELECT * WHERE a = 1")
    assert query.topic_filter is None
    assert not query.matches("anything")
    assert query.evaluate(b'{"a": 1}', topic="x", client_id=None, now_ms=NOW) == {"a": 1}


# ---------------------------------------------------------------------------------------------- non-JSON

def test_non_json_payload_passes_through_select_star() -> None:
    # JSON extensions: "If the message payload is not in JSON format, * returns the entire message payload as
    # raw bytes"; binary payloads: SELECT * FROM 'topic/subtopic' WHERE timestamp() % 12 = 0 is supported.
    raw = b"\x00\x01binary\xff"
    assert run("SELECT * FROM 'a'", raw, "a") == raw
    where = f"SELECT * FROM 'a' WHERE timestamp() % 2 = {NOW % 2}"
    assert run(where, raw, "a") == raw


def test_non_json_payload_cannot_have_items_added() -> None:
    # Binary payloads: "If you have an empty or a JSON payload, the resulting payload can have data added".
    for raw in (b"not json", b"80", b'"text"', b"[1, 2]", b"{\"a\": NaN}", b"\xff\xfe"):
        with pytest.raises(RuleEvaluationError, match="not a JSON object"):
            run(RULE_SQL, raw, "sensor/x/data")
    assert run("SELECT *, 15 as speed FROM 'a'", b"", "a") == {"speed": 15}


def test_non_json_payload_attributes_are_undefined() -> None:
    assert run("SELECT * FROM 'a' WHERE device_type = 'thermostat'", b"80", "a") is None
    assert run("SELECT timestamp() AS ts, a AS b FROM 'a'", b"80", "a") == {"ts": NOW}


def test_outgoing_json_is_always_valid() -> None:
    # A number beyond a double ("a maximum magnitude 9.999...E999" for Decimal) is kept, not made Infinity.
    out = run("SELECT * FROM 'a'", rb'{"big": 1e400, "n": -2.5e-3, "s": "\u00e9"}', "a")
    assert to_json(out) == '{"big":1E+400,"n":-0.0025,"s":"\u00e9"}'.encode()
    assert json.loads(to_json(out))["big"] == float("inf")


def test_numbers_beyond_a_double_do_not_break_evaluation() -> None:
    sql = ("SELECT big % 2 AS m, ceil(big) AS c, big + 1 AS p, big > 1 AS gt, -big AS n, "
           "99999999999999999999 * 99999999999999999999 AS huge FROM 'a'")
    out = run(sql, b'{"big": 1e400}', "a")
    assert to_json(out) == b'{"gt":true,"n":-1E+400,"huge":1e+40}'


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randint(-10**40, 10**40)
    if kind == 2:
        return rng.choice([0.0, -1.5, 1e308, 5e-324, 10.0, rng.uniform(-1e6, 1e6)])
    if kind in (3, 4):
        return rng.choice(["", "true", "FALSE", "10", "-1.2E3", "x" * rng.randrange(50), "é\u0000"])
    if kind == 5:
        return "".join(rng.choice("{}[]\"':,0123456789.eE-+ ") for _ in range(rng.randrange(30)))
    if kind in (6, 7):
        keys = ["deviceId", "value", "timestamp", "readings", "a", "b", "temperature", "color"]
        return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(6))}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]


def test_no_payload_makes_evaluation_raise_anything_but_its_own_error() -> None:
    rng = random.Random(20240523)
    queries = [parse_sql(sql) for sql in (
        RULE_SQL,
        "SELECT a.b AS x, value * 2 + 1 AS y, value % 3 AS m, round(value) AS r, concat(a, b, value) AS z, "
        "get(readings, 0) AS g, (value > 1 OR NOT (a = b) OR length(color) % 2 = 0) AS w, "
        "abs(value) <= ceil(timestamp) AS v FROM '#'",
        "SELECT CASE value WHEN 1 THEN 'one' ELSE upper(color) END AS c, -value / a AS d, [a, b] AS e, "
        "{'k': temperature} AS f FROM '#' WHERE isUndefined(a) OR isNull(b) OR startswith(color, 'r')",
    )]
    keys = ("deviceId", "value", "timestamp", "readings", "a", "b", "temperature", "color")
    for _ in range(1500):
        document = {k: random_json(rng, 1) for k in keys if rng.random() < 0.6} if rng.random() < 0.8 \
            else random_json(rng)
        payload = json.dumps(document).encode().replace(b"1e+308", b"1e400")  # beyond a double
        if rng.random() < 0.2:
            payload = payload[:-1]
        for query in queries:
            try:
                out = query.evaluate(payload, topic="sensor/d1/data", client_id=None, now_ms=NOW)
            except RuleEvaluationError:
                continue
            assert out is None or isinstance(out, bytes) or json.loads(to_json(out)) is not None


def test_parse_payload() -> None:
    assert parse_payload(b"") == {}
    assert parse_payload(b'{"a": {"b": 1.0}}') == {"a": {"b": 1}}
    assert parse_payload(b"80") is None
    assert parse_payload(b'{"a": Infinity}') is None
    assert parse_payload(b"[" * 100_000) is None


# ---------------------------------------------------------------------------------------------- templates

def test_substitution_templates_from_the_docs() -> None:
    # S3 action: "${topic()}/${timestamp()}" for topic some/topic at 1460685389 writes 1460685389 in some/topic.
    assert substitute("${topic()}/${timestamp()}", message={}, topic="some/topic", client_id=None,
                      now_ms=1460685389) == "some/topic/1460685389"
    # Error handling example key: ${replace(topic(), '/', '-') + '-' + timestamp() + '-' + newuuid()}.
    key = substitute("${replace(topic(), '/', '-') + '-' + timestamp() + '-' + newuuid()}", message={},
                     topic="error/action", client_id=None, now_ms=NOW)
    assert re.fullmatch(rf"error-action-{NOW}-[0-9a-f-]{{36}}", key)


def test_pipeline_error_key_template() -> None:
    template = "rule-errors/${topic(2)}/${timestamp()}-${newuuid()}.json"
    first = substitute(template, message={}, topic="sensor/press-7/data", client_id=None, now_ms=NOW)
    second = substitute(template, message={}, topic="sensor/press-7/data", client_id=None, now_ms=NOW)
    assert re.fullmatch(rf"rule-errors/press-7/{NOW}-[0-9a-f-]{{36}}\.json", first)
    assert first != second  # newuuid() is new per evaluation


def test_templates_read_the_original_payload() -> None:
    message = {"deviceid": "iot123", "coords": {"latitude": 47.615694}, "n": None, "tags": ["a"]}
    assert substitute("device/${deviceid}/${coords.latitude}", message=message, topic="t", client_id="c",
                      now_ms=NOW) == "device/iot123/47.615694"
    assert substitute("${clientid()}|${tags}|${n}|${missing}|${upper(deviceid)}", message=message, topic="t",
                      client_id="c", now_ms=NOW) == 'c|["a"]|||IOT123'
    # "you cannot reference an alias created using the AS clause": receivedAt is not in the original payload.
    assert substitute("${receivedAt}", message=message, topic="t", client_id=None, now_ms=NOW) == ""
    assert substitute("no templates", message=message, topic="t", client_id=None, now_ms=NOW) == "no templates"
    assert substitute("${get({'a': '}'}, 'a')}", message=message, topic="t", client_id=None, now_ms=NOW) == "}"


@pytest.mark.parametrize(("template", "message"), [
    ("${topic(2}", r"ends too early: expected ',' or '\)' to close topic\("),
    ("${md5(topic())}", r"function md5\(\) .* not supported"),
    ("a/${topic()", "unterminated substitution template"),
    ("${}", "empty substitution template"),
])
def test_bad_templates_are_rule_errors(template: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        compile_template(template)


# ---------------------------------------------------------------------------------------------- unsupported SQL

@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT * FROM 'a' JOIN 'b'", "unsupported construct 'JOIN'"),
    ("SELECT * FROM 'a' WHERE a IN (1, 2)", "unsupported construct 'IN'"),
    ("SELECT * FROM 'a' WHERE a LIKE 'x%'", "unsupported construct 'LIKE'"),
    ("SELECT * FROM 'a' ORDER BY a", "unsupported construct 'ORDER'"),
    ("SELECT md5(deviceid) AS hashed_id FROM 'a'", r"function md5\(\) .* not supported .* timestamp\(\)"),
    ("SELECT aws_lambda('arn', *) AS r FROM 'a'", r"function aws_lambda\(\)"),
    ("SELECT VALUE color FROM 'a'", "SELECT VALUE is not supported"),
    ("SELECT DISTINCT a FROM 'a'", "SELECT DISTINCT is not supported"),
    ("SELECT (SELECT v FROM e) AS x FROM 'a'", "nested SELECT"),
    ("SELECT concat(*, 'x') AS data FROM 'a'", "'\\*' outside the SELECT list"),
    ("SELECT arr[0] AS x FROM 'a'", "indexing with"),
    ("SELECT topic(2) FROM 'a'", "give `topic\\(2\\)` .* a name with AS"),
    ("SELECT * FROM a/b", "must be enclosed in single quotes"),
    ("SELECT * FROM 'a/#/b'", "not a valid topic filter"),
    ("SELECT * FROM 'a/b+'", "not a valid topic filter"),
    ("SELECT * FROM 'a' WHERE a != 1", "operator != .* use <>"),
    ("SELECT * FROM 'a' WHERE", "ends too early"),
    ("SELECT * FROM 'a' WHERE a = 'open", "unterminated string"),
    ("SELECT * FROM 'a'; DROP", "unsupported character ';'"),
    ("SELECT isUndefined(a) AS u FROM 'a'", "needs AwsIotSqlVersion 2016-03-23"),
    ("SELECT topic(1, 2) AS t FROM 'a'", r"topic\(\) .* takes 0 to 1 argument"),
    ("SELECT CASE WHEN a = 1 THEN 2 END AS c FROM 'a'", "searched CASE"),
    ("SELECT a AS b.c FROM 'a'", "dotted alias"),
    ("UPDATE a", "starts with SELECT"),
])
def test_unsupported_sql_is_a_rule_error_naming_it(sql: str, message: str) -> None:
    version = "2015-10-08" if "isUndefined" in sql else "2016-03-23"
    with pytest.raises(RuleError, match=message) as info:
        parse_sql(sql, version)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_unknown_sql_version() -> None:
    with pytest.raises(RuleError, match="AwsIotSqlVersion 'beta' is not supported"):
        parse_sql("SELECT * FROM 'a'", "beta")


# ---------------------------------------------------------------------------------------------- rule_from_properties

def pipeline_rule_properties(stream: str = "sensor-stream", bucket: str = "raw-bucket",
                             name: str = "SensorDataRule_dev") -> dict[str, Any]:
    """The pipeline's rule as iotpipe renders it (groups/ingest.py), intrinsic functions resolved."""
    role = "arn:aws:iam::123456789012:role/IoTRuleRole-dev"
    return {
        "RuleName": name,
        "TopicRulePayload": {
            "Description": "Route sensor data from IoT devices to Kinesis stream",
            "Sql": RULE_SQL,
            "AwsIotSqlVersion": "2016-03-23",
            "RuleDisabled": False,
            "Actions": [{"Kinesis": {"StreamName": stream, "PartitionKey": "${topic(2)}", "RoleArn": role}}],
            "ErrorAction": {"S3": {"BucketName": bucket,
                                   "Key": "rule-errors/${topic(2)}/${timestamp()}-${newuuid()}.json",
                                   "RoleArn": role}},
        },
    }


def test_rule_from_the_pipeline_properties() -> None:
    rule = rule_from_properties(pipeline_rule_properties())
    assert rule.name == "SensorDataRule_dev" and not rule.disabled
    assert rule.query.topic_filter == "sensor/+/data" and rule.query.version == "2016-03-23"
    (action,) = rule.actions
    assert action.stream_name.source == "sensor-stream"
    assert action.partition_key is not None and action.partition_key.source == "${topic(2)}"
    assert rule.error_action is not None and rule.error_action.key.source.startswith("rule-errors/")


def resolved(value: Any) -> Any:
    """Intrinsic functions replaced by plain strings, roughly as CloudFormation would (enough for a rule)."""
    if isinstance(value, list):
        return [resolved(v) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return f"ref-{value['Ref']}"
    if set(value) == {"Fn::GetAtt"}:
        return f"arn:aws:iam::123456789012:role/{value['Fn::GetAtt'][0]}"
    if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{EnvironmentSuffix\}", "dev", value["Fn::Sub"])
    return {k: resolved(v) for k, v in value.items()}


def topic_rules(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [resolved(r["Properties"]) for r in template["Resources"].values() if r["Type"] == "AWS::IoT::TopicRule"]


def test_the_composed_rule_runs_locally() -> None:
    template = json.loads(json.dumps(compose(build_config({}, "dev", {})).template.to_dict()))
    (properties,) = topic_rules(template)
    rule = rule_from_properties(properties)
    assert rule.name == "SensorDataRule_dev" and rule.query.version == "2016-03-23"
    payload = {"deviceId": "d1", "sensorType": "temperature", "value": 70.5}
    assert rule.query.evaluate(json.dumps(payload).encode(), topic="sensor/d1/data", client_id=None,
                               now_ms=NOW) == {**payload, "receivedAt": NOW, "topicDeviceId": "d1"}


def test_the_seed_rule_runs_locally_and_overwrites_the_device_timestamp() -> None:
    template, errors = decode_str(SEED_TEMPLATE.read_text(encoding="utf-8"))
    assert not errors
    (properties,) = topic_rules(json.loads(json.dumps(template)))
    rule = rule_from_properties(properties)
    assert rule.query.version == "2015-10-08" and rule.error_action is None
    out = rule.query.evaluate(b'{"deviceId": "d1", "timestamp": 5}', topic="sensor/d1/data", client_id=None,
                              now_ms=NOW)
    assert out == {"deviceId": "d1", "timestamp": NOW}


def test_sql_version_defaults_to_2015() -> None:
    # Creating an AWS IoT rule: if the SQL version is not set "in a CloudFormation template, 2015-10-08 is used".
    properties = pipeline_rule_properties()
    del properties["TopicRulePayload"]["AwsIotSqlVersion"]
    assert rule_from_properties(properties).query.version == "2015-10-08"


def _with(payload_changes: dict[str, Any]) -> dict[str, Any]:
    properties = pipeline_rule_properties()
    properties["TopicRulePayload"].update(payload_changes)
    return properties


@pytest.mark.parametrize(("properties", "message"), [
    (_with({"Actions": [{"Lambda": {"FunctionArn": "arn:aws:lambda:us-east-1:1:function:f"}}]}),
     "the Lambda action is not supported by iotpipe local"),
    (_with({"ErrorAction": {"Sqs": {"QueueUrl": "q", "RoleArn": "r"}}}),
     "ErrorAction: the Sqs action is not supported"),
    (_with({"Sql": "SELECT * FROM 'a' JOIN 'b'"}), "unsupported construct 'JOIN'"),
    (_with({"Sql": "SELECT md5(x) AS h FROM 'a'"}), r"function md5\(\)"),
    (_with({"AwsIotSqlVersion": "beta"}), "AwsIotSqlVersion 'beta'"),
    (_with({"Actions": [{"Kinesis": {"PartitionKey": "${topic(2)}"}}]}), "Kinesis action has missing StreamName"),
    (_with({"Actions": [{"Kinesis": {"StreamName": {"Ref": "SensorDataStream"}}}]}),
     "resolve intrinsic functions first"),
    (_with({"Actions": [{"Kinesis": {"StreamName": "s", "PartitionKey": "${bogus(1)}"}}]}), r"function bogus\(\)"),
    (_with({"Actions": []}), "at least one action"),
    (_with({"RuleDisabled": "maybe"}), "RuleDisabled must be true or false"),
    ({"TopicRulePayload": {"Sql": "SELECT * FROM 'a'"}}, "has no RuleName"),
])
def test_rule_from_properties_errors_name_the_rule_and_the_problem(properties: dict[str, Any],
                                                                    message: str) -> None:
    with pytest.raises(RuleError, match=message) as info:
        rule_from_properties(properties)
    assert "\n" not in str(info.value)
    if "RuleName" in properties:
        assert str(info.value).startswith("topic rule SensorDataRule_dev: ")


# ---------------------------------------------------------------------------------------------- the engine on moto

class CountingFactory:
    """A ClientFactory whose Kinesis client records the size of each PutRecords call."""

    def __init__(self, endpoint: str) -> None:
        self.factory = ClientFactory(region=REGION, endpoint_url=endpoint)
        self.put_records_sizes: list[int] = []

    def client(self, service: str) -> Any:
        client = self.factory.client(service)
        if service == "kinesis":
            original = client.put_records

            def put_records(**kwargs: Any) -> Any:
                self.put_records_sizes.append(len(kwargs["Records"]))
                return original(**kwargs)

            client.put_records = put_records
        return client


@pytest.fixture
def aws(moto_endpoint: str) -> dict[str, Any]:
    """A 2-shard stream and a bucket on the moto server."""
    kinesis = boto3.client("kinesis", region_name=REGION, endpoint_url=moto_endpoint)
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_endpoint)
    kinesis.create_stream(StreamName="sensor-stream", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName="sensor-stream", WaiterConfig={"Delay": 0.1})
    s3.create_bucket(Bucket="raw-bucket")
    return {"endpoint": moto_endpoint, "kinesis": kinesis, "s3": s3}


@pytest.fixture
def engines() -> Iterator[list[RuleEngine]]:
    """Engines made by a test, closed after it whatever happens."""
    made: list[RuleEngine] = []
    yield made
    for engine in made:
        engine.close()


def make_engine(aws: dict[str, Any], engines: list[RuleEngine], *rules_properties: dict[str, Any],
                **kwargs: Any) -> RuleEngine:
    factory = kwargs.pop("factory", None) or ClientFactory(region=REGION, endpoint_url=aws["endpoint"])
    rules = [rule_from_properties(p) for p in (rules_properties or (pipeline_rule_properties(),))]
    engine = RuleEngine(rules, factory, clock_ms=lambda: NOW, **kwargs)
    engines.append(engine)
    return engine


def stream_records(kinesis: Any, stream: str = "sensor-stream") -> list[dict[str, Any]]:
    """Every record of every shard, each shard in sequence order."""
    records = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        records.extend(kinesis.get_records(ShardIterator=iterator, Limit=10_000)["Records"])
    return records


def error_objects(s3: Any, bucket: str = "raw-bucket") -> dict[str, dict[str, Any]]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="rule-errors/").get("Contents", [])
    return {o["Key"]: json.loads(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()) for o in listing}


def reading(device: str, n: int) -> bytes:
    return json.dumps({"deviceId": device, "sensorType": "temperature", "value": 70 + n / 10, "seq": n}).encode()


def test_engine_delivers_to_kinesis_keyed_by_device_in_order(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    engine = make_engine(aws, engines)
    devices = ["press-1", "press-2", "lathe-3"]
    for n in range(60):
        device = devices[n % 3]
        engine.on_message(f"sensor/{device}/data", reading(device, n), "client-1")
    engine.on_message("other/topic", b"{}", None)
    engine.flush()

    records = stream_records(aws["kinesis"])
    assert len(records) == 60
    by_device: dict[str, list[int]] = {}
    for record in records:
        data = json.loads(record["Data"])
        assert record["PartitionKey"] == data["topicDeviceId"] == data["deviceId"]
        assert data["receivedAt"] == NOW and data["sensorType"] == "temperature"
        by_device.setdefault(record["PartitionKey"], []).append(data["seq"])
    assert by_device == {d: [n for n in range(60) if devices[n % 3] == d] for d in devices}
    assert engine.stats == RuleEngineStats(messages_in=61, unrouted=1, matched=60, actions_ok=60)
    assert error_objects(aws["s3"]) == {}


def test_engine_thread_delivers_without_flush(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    engine = make_engine(aws, engines)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    deadline = time.monotonic() + 10
    while engine.stats.actions_ok < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.stats.actions_ok == 1
    assert [r["PartitionKey"] for r in stream_records(aws["kinesis"])] == ["d1"]


def test_engine_coalesces_into_put_records_batches(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    factory = CountingFactory(aws["endpoint"])
    engine = make_engine(aws, engines, factory=factory, max_batch=2, flush_interval_s=60)
    for n in range(5):
        engine.on_message("sensor/d1/data", reading("d1", n), None)
    engine.flush()
    assert factory.put_records_sizes == [2, 2, 1]
    assert [json.loads(r["Data"])["seq"] for r in stream_records(aws["kinesis"])] == [0, 1, 2, 3, 4]


def test_failed_kinesis_action_goes_to_the_s3_error_action(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    engine = make_engine(aws, engines, pipeline_rule_properties(stream="no-such-stream"), on_problem=problems.append)
    payload = reading("press-9", 1)
    engine.on_message("sensor/press-9/data", payload, "device-press-9")
    engine.flush()

    objects = error_objects(aws["s3"])
    assert len(objects) == 1
    ((key, body),) = objects.items()
    assert re.fullmatch(rf"rule-errors/press-9/{NOW}-[0-9a-f-]{{36}}\.json", key)
    # "Error action message format": ruleName, topic, cloudwatchTraceId, clientId, base64OriginalPayload, failures.
    assert set(body) == {"ruleName", "topic", "cloudwatchTraceId", "clientId", "base64OriginalPayload", "failures"}
    assert body["ruleName"] == "SensorDataRule_dev"
    assert body["topic"] == "sensor/press-9/data"
    assert body["clientId"] == "device-press-9"
    assert uuid.UUID(body["cloudwatchTraceId"])
    assert base64.b64decode(body["base64OriginalPayload"]) == payload
    (failure,) = body["failures"]
    assert failure["failedAction"] == "KinesisAction"
    assert failure["failedResource"] == "no-such-stream"
    assert "ResourceNotFoundException" in failure["errorMessage"]
    assert engine.stats == RuleEngineStats(messages_in=1, matched=1, actions_failed=1, error_actions=1)
    assert problems == []


class StubbedKinesisFactory:
    """moto's clients, except a Kinesis client whose PutRecords answers come from a botocore Stubber."""

    def __init__(self, endpoint: str, put_records_answers: list[dict[str, Any]]) -> None:
        self.factory = ClientFactory(region=REGION, endpoint_url=endpoint)
        self.kinesis = self.factory.client("kinesis")
        self.stubber = Stubber(self.kinesis)
        for answer in put_records_answers:
            self.stubber.add_response("put_records", answer)
        self.stubber.activate()

    def client(self, service: str) -> Any:
        return self.kinesis if service == "kinesis" else self.factory.client(service)


def test_a_record_put_records_reports_failed_goes_to_the_error_action(aws: dict[str, Any],
                                                                     engines: list[RuleEngine]) -> None:
    # PutRecords can fail single records (moto never does): only that message goes to the error action.
    answer = {"FailedRecordCount": 1, "Records": [
        {"SequenceNumber": "1", "ShardId": "shardId-000000000000"},
        {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard"},
        {"SequenceNumber": "2", "ShardId": "shardId-000000000000"}]}
    factory = StubbedKinesisFactory(aws["endpoint"], [answer])
    engine = make_engine(aws, engines, factory=factory)
    for device in ("d1", "d2", "d3"):
        engine.on_message(f"sensor/{device}/data", reading(device, 1), None)
    engine.flush()
    factory.stubber.assert_no_pending_responses()
    ((key, body),) = error_objects(aws["s3"]).items()
    assert key.startswith("rule-errors/d2/")
    assert base64.b64decode(body["base64OriginalPayload"]) == reading("d2", 1)
    assert "ProvisionedThroughputExceededException: Rate exceeded for shard" in body["failures"][0]["errorMessage"]
    assert engine.stats == RuleEngineStats(messages_in=3, matched=3, actions_ok=2, actions_failed=1, error_actions=1)


def test_one_bad_partition_key_does_not_fail_the_others(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    # The seed keyed on ${deviceId}: a payload without deviceId renders "" ("Undefined is converted to an empty
    # string when serialized by itself"), which Kinesis refuses; that message goes to the error action.
    properties = pipeline_rule_properties()
    properties["TopicRulePayload"]["Actions"][0]["Kinesis"]["PartitionKey"] = "${deviceId}"
    engine = make_engine(aws, engines, properties)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    engine.on_message("sensor/d2/data", b'{"value": 5}', None)
    engine.on_message("sensor/d3/data", reading("d3", 3), None)
    engine.flush()

    assert [r["PartitionKey"] for r in sorted(stream_records(aws["kinesis"]), key=lambda r: r["PartitionKey"])] == [
        "d1", "d3"]
    ((key, body),) = error_objects(aws["s3"]).items()
    assert key.startswith("rule-errors/d2/") and body["clientId"] == "n/a"
    assert "partition key" in body["failures"][0]["errorMessage"]
    assert engine.stats.actions_ok == 2 and engine.stats.error_actions == 1


def test_error_action_failure_is_counted_and_reported(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    properties = pipeline_rule_properties(stream="no-such-stream", bucket="no-such-bucket")
    engine = make_engine(aws, engines, properties, on_problem=problems.append)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    engine.flush()
    assert engine.stats == RuleEngineStats(messages_in=1, matched=1, actions_failed=1, error_actions_failed=1,
                                           dropped=1)
    (problem,) = problems
    assert "SensorDataRule_dev" in problem and "sensor/d1/data" in problem and "NoSuchBucket" in problem


def test_on_problem_runs_after_the_batch_is_counted(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    seen: list[RuleEngineStats] = []
    engine = make_engine(aws, engines, on_problem=lambda _problem: seen.append(engine.stats))
    engine.on_message("sensor/d1/data", b"not json", None)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    engine.flush()
    assert len(seen) == 1 and seen[0].sql_failed == 1 and seen[0].actions_ok == 1


def test_rule_without_error_action_reports_the_lost_message(aws: dict[str, Any],
                                                           engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    properties = pipeline_rule_properties(stream="no-such-stream")
    del properties["TopicRulePayload"]["ErrorAction"]
    engine = make_engine(aws, engines, properties, on_problem=problems.append)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    engine.flush()
    assert engine.stats.dropped == 1
    assert len(problems) == 1 and "no error action" in problems[0]


def test_non_json_payload_is_counted_not_sent(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    engine = make_engine(aws, engines, on_problem=problems.append)
    engine.on_message("sensor/d1/data", b"not json", None)
    engine.flush()
    assert stream_records(aws["kinesis"]) == [] and error_objects(aws["s3"]) == {}
    assert engine.stats == RuleEngineStats(messages_in=1, sql_failed=1, dropped=1)
    assert len(problems) == 1 and "not a JSON object" in problems[0]


def test_where_filters_and_s3_action(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    properties = {
        "RuleName": "HotOnly",
        "TopicRulePayload": {
            "Sql": "SELECT deviceId, value FROM 'sensor/+/data' WHERE value > 80",
            "AwsIotSqlVersion": "2016-03-23",
            "Actions": [{"S3": {"BucketName": "raw-bucket", "Key": "hot/${topic(2)}/${seq}.json"}}],
        },
    }
    engine = make_engine(aws, engines, properties)
    engine.on_message("sensor/d1/data", json.dumps({"deviceId": "d1", "value": 81, "seq": 1}).encode(), None)
    engine.on_message("sensor/d1/data", json.dumps({"deviceId": "d1", "value": 20, "seq": 2}).encode(), None)
    engine.flush()
    listing = aws["s3"].list_objects_v2(Bucket="raw-bucket")["Contents"]
    assert [o["Key"] for o in listing] == ["hot/d1/1.json"]
    body = aws["s3"].get_object(Bucket="raw-bucket", Key="hot/d1/1.json")["Body"].read()
    assert json.loads(body) == {"deviceId": "d1", "value": 81}
    assert engine.stats == RuleEngineStats(messages_in=2, matched=1, filtered=1, actions_ok=1)


def test_basic_ingest_routes_to_the_named_rule_only(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    other = {"RuleName": "Everything", "TopicRulePayload": {
        "Sql": "SELECT * FROM '#'", "AwsIotSqlVersion": "2016-03-23",
        "Actions": [{"S3": {"BucketName": "raw-bucket", "Key": "all/${newuuid()}"}}]}}
    engine = make_engine(aws, engines, pipeline_rule_properties(), other, on_problem=problems.append)
    engine.on_message("$aws/rules/SensorDataRule_dev/sensor/d9/data", reading("d9", 1), None)
    engine.on_message("$aws/rules/NoSuchRule/sensor/d9/data", reading("d9", 2), None)
    engine.flush()

    (record,) = stream_records(aws["kinesis"])
    assert record["PartitionKey"] == "d9"
    assert json.loads(record["Data"])["topicDeviceId"] == "d9"
    assert "Contents" not in aws["s3"].list_objects_v2(Bucket="raw-bucket")  # '#' does not see $aws topics
    assert engine.stats.dropped == 1
    assert len(problems) == 1 and "rule NoSuchRule does not exist" in problems[0]


def test_disabled_rule_does_not_run(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    properties = pipeline_rule_properties()
    properties["TopicRulePayload"]["RuleDisabled"] = True
    engine = make_engine(aws, engines, properties)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    engine.on_message("$aws/rules/SensorDataRule_dev/sensor/d1/data", reading("d1", 2), None)
    engine.flush()
    assert stream_records(aws["kinesis"]) == []
    assert engine.stats == RuleEngineStats(messages_in=2, unrouted=1, dropped=1)


def test_close_delivers_queued_messages_and_is_idempotent(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    engine = make_engine(aws, engines, flush_interval_s=60)
    for n in range(3):
        engine.on_message("sensor/d1/data", reading("d1", n), None)
    engine.close()
    engine.close()
    assert len(stream_records(aws["kinesis"])) == 3
    # a message the broker's feed hands over while a redeploy replaces the engine is still delivered
    engine.on_message("sensor/d1/data", reading("d1", 9), None)
    assert [json.loads(r["Data"])["seq"] for r in stream_records(aws["kinesis"])] == [0, 1, 2, 9]
    assert engine.stats.dropped == 0 and engine.stats.actions_ok == 4


class FrozenKinesis:
    """A ClientFactory whose Kinesis calls wait until ``thaw`` is set, as calls to a stopped emulator do."""

    def __init__(self, endpoint: str) -> None:
        self.factory = ClientFactory(region=REGION, endpoint_url=endpoint)
        self.thaw = threading.Event()
        self.waiting = threading.Event()

    def client(self, service: str) -> Any:
        client = self.factory.client(service)
        if service == "kinesis":
            original = client.put_records

            def put_records(**kwargs: Any) -> Any:
                self.waiting.set()
                assert self.thaw.wait(60), "the test never thawed the emulator"
                return original(**kwargs)

            client.put_records = put_records
        return client


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_full_queue_holds_the_publisher_back_instead_of_dropping(aws: dict[str, Any],
                                                                  engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    emulator = FrozenKinesis(aws["endpoint"])
    engine = make_engine(aws, engines, factory=emulator, max_pending=3, on_problem=problems.append)
    engine.on_message("sensor/d1/data", reading("d1", 0), None)
    wait_for(emulator.waiting.is_set, "the engine to call the frozen emulator")
    feed = threading.Thread(target=lambda: [engine.on_message("sensor/d1/data", reading("d1", n), None)
                                            for n in range(1, 6)])
    feed.start()
    # three messages fill the queue; the fourth waits in on_message (the broker's feed thread: no PUBACK yet)
    wait_for(lambda: engine.stats.backpressured == 1, "the feed to be held back")
    assert feed.is_alive() and engine.stats.pending == 3 and engine.stats.dropped == 0
    emulator.thaw.set()
    feed.join(30)
    assert not feed.is_alive()
    engine.flush()
    assert [json.loads(r["Data"])["seq"] for r in stream_records(aws["kinesis"])] == [0, 1, 2, 3, 4, 5]
    assert engine.stats.dropped == 0 and engine.stats.actions_ok == 6 and problems == []


def test_every_lost_message_is_logged(aws: dict[str, Any], engines: list[RuleEngine],
                                      caplog: pytest.LogCaptureFixture) -> None:
    properties = pipeline_rule_properties(stream="no-such-stream")
    del properties["TopicRulePayload"]["ErrorAction"]
    engine = make_engine(aws, engines, properties)  # no on_problem: the log is where a user finds it
    with caplog.at_level(logging.WARNING, logger="iotpipe.local.rules"):
        engine.on_message("sensor/d1/data", reading("d1", 1), None)
        engine.on_message("sensor/d2/data", b"not json", None)
        engine.flush()
    lost = sorted(r.getMessage() for r in caplog.records if r.name == "iotpipe.local.rules")
    assert engine.stats.dropped == 2 and len(lost) == 2
    assert "sensor/d1/data lost" in lost[0] and "no error action" in lost[0]
    assert "sensor/d2/data dropped" in lost[1] and "not a JSON object" in lost[1]


def test_a_lone_surrogate_escape_reaches_the_stream(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    engine = make_engine(aws, engines)
    payload = b'{"deviceId": "d1", "sensorType": "temperature", "value": 1.5, "note": "\\ud800 \\udc00x"}'
    engine.on_message("sensor/d1/data", payload, None)
    engine.flush()
    (record,) = stream_records(aws["kinesis"])
    data = json.loads(record["Data"])
    assert data["note"] == "\ud800 \udc00x" and data["value"] == 1.5 and data["topicDeviceId"] == "d1"
    assert engine.stats.dropped == 0


def test_a_payload_nested_too_deeply_goes_to_the_error_action(aws: dict[str, Any],
                                                              engines: list[RuleEngine]) -> None:
    engine = make_engine(aws, engines)
    payload = b'{"deviceId": "d1", "sensorType": "t", "value": 1, "extra": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    # valid JSON: the processors take it and quarantine it (deeper than the contract's 64 levels)
    engine.on_message("sensor/d1/data", payload, None)
    engine.flush()
    assert stream_records(aws["kinesis"]) == []
    ((key, body),) = error_objects(aws["s3"]).items()
    assert key.startswith("rule-errors/d1/") and base64.b64decode(body["base64OriginalPayload"]) == payload
    assert body["failures"][0]["failedAction"] == "KinesisAction"
    assert "nests too deeply" in body["failures"][0]["errorMessage"]
    assert engine.stats.error_actions == 1 and engine.stats.dropped == 0


@pytest.mark.parametrize(("literal", "written"), [
    # Data types: Decimal has "a minimum non-zero magnitude of 1E-999 and a maximum magnitude 9.999...E999"
    (b"1e-400", b"1E-400"),
    (b"-2.5E-999", b"-2.5E-999"),
    (b"1e400", b"1E+400"),
    # "A Decimal with a precision of 34 digits"
    (b"3.14159265358979323846264338327950288419", b"3.141592653589793238462643383279503"),
    # beyond the documented range the docs are silent: the literal passes as it was written
    (b"1e-1000", b"1e-1000"),
    (b"-7.5E+1000", b"-7.5E+1000"),
    (b"71.25", b"71.25"),
])
def test_number_literals_reach_the_stream_as_aws_iot_holds_them(aws: dict[str, Any], engines: list[RuleEngine],
                                                               literal: bytes, written: bytes) -> None:
    engine = make_engine(aws, engines)
    engine.on_message("sensor/d1/data", b'{"deviceId": "d1", "sensorType": "t", "value": ' + literal + b"}", None)
    engine.flush()
    (record,) = stream_records(aws["kinesis"])
    assert record["Data"].startswith(b'{"deviceId":"d1","sensorType":"t","value":' + written + b",")


def test_engine_refuses_duplicate_rule_names(aws: dict[str, Any]) -> None:
    rule = rule_from_properties(pipeline_rule_properties())
    with pytest.raises(RuleError, match="SensorDataRule_dev appear more than once"):
        RuleEngine([rule, rule], ClientFactory(region=REGION, endpoint_url=aws["endpoint"]))
