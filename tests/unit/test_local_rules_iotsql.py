"""AWS IoT SQL as iotpipe local runs it (the pure ``iotpipe.local.rules.iotsql``): cases from the AWS IoT SQL
reference. Quoted doc passages are from the AWS IoT Core developer guide pages named next to them.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from typing import Any

import pytest

from iotpipe.groups.ingest import RULE_SQL
from iotpipe.local.rules.iotsql import (
    UNDEFINED,
    RuleError,
    RuleEvaluationError,
    compile_template,
    parse_payload,
    parse_sql,
    substitute,
    to_json,
)
from iotpipe.local.rules.model import basic_ingest_target

NOW = 1_700_000_000_123


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
    ("SELECT * FROM a/b", "must be enclosed in single quotes, as in FROM 'a/b'$"),
    ("SELECT * FROM a/b WHERE x = 1", "must be enclosed in single quotes, as in FROM 'a/b'$"),
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
