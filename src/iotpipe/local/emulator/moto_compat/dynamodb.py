"""moto's DynamoDB: storing an item for less CPU, with the same answers and errors."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from iotpipe.local.emulator.moto_compat.base import Patch, Recorder

_BINARY_ATTRIBUTE = re.compile(rb'"BS?"\s*:')


def _item_size_check(patches: Recorder) -> None:
    """DynamoDB items check the 400 KB limit on every attribute set by summing the sizes of all attributes so far:
    quadratic in attributes, a tenth of the emulator's CPU per stored reading. Keep a running total instead (the
    same sum, the same limit and error)."""
    from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict
    from moto.dynamodb.models.utilities import bytesize

    original = LimitedSizeDict.__setitem__

    def size_of(value: Any) -> int:
        return int(value.size()) if type(value) is DynamoType else int(bytesize(str(value)))

    def setitem(self: Any, key: str, value: Any) -> None:
        total = vars(self).get("_iotpipe_size")
        if total is None or key in self:
            original(self, key, value)  # the original check, and a fresh total
            vars(self)["_iotpipe_size"] = sum(bytesize(k) + size_of(v) for k, v in self.items())
            return
        added = bytesize(key) + size_of(value)
        if total + added > 405_000:  # moto's own limit (AWS's 400 KB, measured between 409 and 410 KB)
            original(self, key, value)  # raises moto's ItemSizeTooLarge, as before
        dict.__setitem__(self, key, value)
        vars(self)["_iotpipe_size"] = total + added

    patches.setattr(LimitedSizeDict, "__setitem__", setitem)


def _write_parsing(patches: Recorder) -> None:
    """moto parses every DynamoDB request through botocore's generic shape walker, attribute by attribute: a fifth
    of the emulator's CPU per stored reading. For BatchWriteItem, PutItem and BatchGetItem (the detector's state
    read), the JSON body already is what that walk returns, except for binary attributes (base64 ``B``/``BS``,
    which it decodes): parse those the slow way, everything else with ``json.loads``."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.parse_parameters

    def parse_parameters(self: Any, request: Any) -> None:
        body = self.body
        raw = body.encode("utf-8") if isinstance(body, str) else body
        if (self._get_action() in ("BatchWriteItem", "PutItem", "BatchGetItem") and isinstance(raw, bytes)
                and not _BINARY_ATTRIBUTE.search(raw)):
            self.params = json.loads(raw)
            return
        original(self, request)

    patches.setattr(DynamoHandler, "parse_parameters", parse_parameters)


def _attribute_values(patches: Recorder) -> None:
    """Each attribute of each stored item goes through ``DynamoType.__init__``, which builds two lists to read
    its one key and value and then calls two type tests: the largest single cost of storing a reading. Read the
    pair directly; the result is the same object."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    def init(self: Any, type_as_dict: Any) -> None:
        if type(type_as_dict) is DynamoType:
            self.type, self.value = type_as_dict.type, type_as_dict.value
        else:
            self.type, self.value = next(iter(type_as_dict.items()))
        if self.type == "L":
            self.value = [DynamoType(value) for value in self.value]
        elif self.type == "M":
            self.value = {key: DynamoType(value) for key, value in self.value.items()}

    patches.setattr(DynamoType, "__init__", init)


def _item_build(patches: Recorder) -> None:
    """Storing an item builds its attributes one by one through the size-checked dict (each step sizing the new
    attribute with ``DynamoType.size``), validates the request's attribute types by recursing into every value,
    and hashes its keys through ``cast_value``: together about half of the emulator's CPU per stored reading.
    Each keeps its result and its errors: the item is built, sized once (with the same sizes ``size()`` gives)
    and checked against the same limit, falling back to moto's own code for anything but plain attributes and for
    an item over the limit (which raises moto's error); string attributes (every key of our tables) hash and
    compare by their value, which is what ``cast_value`` returns for them."""
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
    from moto.dynamodb.models.table import Table

    original_item_init = Item.__init__
    original_validate = Table._validate_item_types
    original_hash = DynamoType.__hash__
    original_eq = DynamoType.__eq__

    def plain_size(value: Any) -> int:
        kind = value.type
        if kind == "S":
            return len(value.value.encode("utf-8"))
        if kind == "N":
            return len(str(value.value))
        return int(value.size())

    def item_init(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        values = {key: DynamoType(value) for key, value in attrs.items()}
        total = sum(len(key.encode("utf-8")) + plain_size(value) for key, value in values.items())
        if total > 405_000:  # moto's limit (see item_size_check): its own code raises its own error
            original_item_init(self, hash_key, range_key, attrs)
            return
        self.hash_key, self.range_key = hash_key, range_key
        self.attrs = LimitedSizeDict()
        dict.update(self.attrs, values)
        vars(self.attrs)["_iotpipe_size"] = total

    def validate_item_types(self: Any, item_attrs: dict[str, Any], attr: str | None = None) -> None:
        if attr is not None:
            original_validate(self, item_attrs, attr)
            return
        for key, value in item_attrs.items():
            if type(value) is dict and len(value) == 1:
                kind, inner = next(iter(value.items()))
                if kind == "S" and type(inner) is str:
                    continue  # moto checks nothing more of a string attribute
                if kind == "N" and type(inner) is str:
                    self._validate_number_type(inner)
                    continue
            original_validate(self, {key: value})

    def dynamo_hash(self: Any) -> int:
        if self.type == "S":
            return hash(("S", self.value))
        return int(original_hash(self))

    def dynamo_eq(self: Any, other: Any) -> bool:
        if self.type == "S" and type(other) is DynamoType and other.type == "S":
            return bool(self.value == other.value)
        return bool(original_eq(self, other))

    patches.setattr(Item, "__init__", item_init)
    patches.setattr(Table, "_validate_item_types", validate_item_types)
    patches.setattr(DynamoType, "__hash__", dynamo_hash)
    patches.setattr(DynamoType, "__eq__", dynamo_eq)


def _batch_write_answer(patches: Recorder) -> None:
    """moto writes each BatchWriteItem answer through its generic model-driven serializer, which costs more than
    storing the 25 items did (about a tenth of the emulator's CPU per stored reading). The answer is plain JSON
    (ConsumedCapacity, ItemCollectionMetrics, UnprocessedItems): write it as such."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.batch_write_item

    def batch_write_item(self: Any) -> tuple[str, dict[str, str]]:
        answer = original(self).result
        return json.dumps(answer), {"Content-Type": "application/x-amz-json-1.0"}

    patches.setattr(DynamoHandler, "batch_write_item", batch_write_item)


_FLAT_TYPES = frozenset({"S", "N", "BOOL", "NULL"})


def _batch_get_answer(patches: Recorder) -> None:
    """A BatchGetItem sizes each item it finds twice and then writes its answer through moto's generic
    model-driven serializer, which matches each attribute of each item against every member of the AttributeValue
    shape: for 20 detector state items (7 string attributes each) about 15 ms of the emulator's CPU, five times
    what finding them costs. A request moto would answer without error (at most 100 distinct keys of existing
    tables, no projection) whose items hold only flat non-binary attributes (``S``, ``N``, ``BOOL``, ``NULL``) is
    answered here as the JSON the serializer writes for it (Responses in key order, ConsumedCapacity per table,
    no UnprocessedKeys: the items of that size are far below the 16 MB page); any other request, and any error,
    goes moto's way."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.batch_get_item

    def answer(self: Any) -> str | None:
        batches = self.body.get("RequestItems")
        if type(batches) is not dict or not batches or sum(len(r.get("Keys") or ()) for r in batches.values()
                                                          if type(r) is dict) > 100:
            return None
        backend = self.dynamodb_backend
        responses: dict[str, list[dict[str, Any]]] = {}
        consumed = []
        for table_name, request in batches.items():
            if type(request) is not dict or set(request) - {"Keys", "ConsistentRead"} or \
                    table_name not in backend.tables:
                return None
            keys = request.get("Keys")
            if type(keys) is not list or not keys or len({json.dumps(k, sort_keys=True) for k in keys}) < len(keys):
                return None
            found = responses.setdefault(table_name, [])
            for key in keys:
                item = backend.get_item(table_name, key, None)
                if item is None:
                    continue
                if any(value.type not in _FLAT_TYPES for value in item.attrs.values()):
                    return None
                found.append({name: {value.type: value.value} for name, value in item.attrs.items()})
            consumed.append({"CapacityUnits": len(keys), "TableName": table_name})
        return json.dumps({"ConsumedCapacity": consumed, "Responses": responses, "UnprocessedKeys": {}})

    def batch_get_item(self: Any) -> Any:
        try:
            text = answer(self)
        except Exception:  # moto's own code raises its own error for this request
            text = None
        if text is None:
            return original(self)
        return text, {"Content-Type": "application/x-amz-json-1.0"}

    patches.setattr(DynamoHandler, "batch_get_item", batch_get_item)


def _read_answers(patches: Recorder) -> None:
    """moto writes each Query and Scan answer through its generic model-driven serializer, attribute by attribute:
    about a second for a page of a day's packed readings (1 MB), five times what finding the items costs. Without
    binary attributes the answer is plain JSON (Count, ScannedCount, Items, LastEvaluatedKey, ConsumedCapacity):
    write it as such; an answer holding bytes (binary attributes, which the serializer base64-encodes) goes the
    slow way."""
    from moto.dynamodb.responses import DynamoHandler

    def as_json(original: Any) -> Any:
        def answer(self: Any) -> Any:
            result = original(self)
            try:
                text = json.dumps(result.result)
            except TypeError:  # bytes of a binary attribute
                return result
            return text, {"Content-Type": "application/x-amz-json-1.0"}
        return answer

    patches.setattr(DynamoHandler, "query", as_json(DynamoHandler.query))
    patches.setattr(DynamoHandler, "scan", as_json(DynamoHandler.scan))


def _partition_query(patches: Recorder) -> None:
    """A Query of the table (not an index) first lists every item of every partition, sorted by both keys through
    ``DynamoType`` comparisons, and only then keeps the asked partition: each page of a device's readings costs the
    whole table (about 16 s a page next to a day of readings, ~60 ms per device of a thousand-device fleet). While
    such a Query runs, ``all_items`` lists only the asked partition (in the same key order): the items that filter
    kept, so the answer, its paging and its errors are the same. A later page then walks every item before its
    ``ExclusiveStartKey`` (building two ``DynamoType`` per item to compare it): quadratic in pages, seconds per
    page of a partition of 86,400 items. When the start key names the asked partition and a string sort key, the
    list starts after it (before it, read backwards): the items that walk skips, so the answer is the same."""
    import bisect

    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    original_query = Table.query
    original_all_items = Table.all_items
    asked = threading.local()

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        if index_name or hash_key is None or not self.range_key_attr:
            return original_query(self, hash_key, *args, **kwargs)
        start = kwargs.get("exclusive_start_key", args[3] if len(args) > 3 else None)
        forward = kwargs.get("scan_index_forward", args[4] if len(args) > 4 else True)
        asked.partition = (self, hash_key, _start_after(self, hash_key, start), forward is not False)
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            asked.partition = None

    def _start_after(table: Any, hash_key: Any, start: Any) -> Any:
        """The start key's sort key when it is a string of the asked partition, else None (moto's walk)."""
        if not isinstance(start, dict) or set(start) != {table.hash_key_attr, table.range_key_attr}:
            return None
        hashed, ranged = start[table.hash_key_attr], start[table.range_key_attr]
        if hashed != hash_key.to_json() or not isinstance(ranged, dict) or set(ranged) != {"S"} \
                or type(ranged["S"]) is not str or hash_key.type != "S":
            return None
        return DynamoType(ranged)

    def all_items(self: Any) -> list[Any]:
        partition = getattr(asked, "partition", None)
        if partition is None or partition[0] is not self:
            return list(original_all_items(self))
        found = self.items.get(partition[1])
        if not isinstance(found, dict):
            return []
        ordered = sorted(found.values(), key=lambda item: item.range_key)
        start, forward = partition[2], partition[3]
        if start is None or any(item.range_key.type != "S" for item in ordered):
            return ordered
        if forward:
            return ordered[bisect.bisect_right(ordered, start.value, key=lambda item: item.range_key.value):]
        return ordered[:bisect.bisect_left(ordered, start.value, key=lambda item: item.range_key.value)]

    patches.setattr(Table, "query", query)
    patches.setattr(Table, "all_items", all_items)


def _query_without_copy(patches: Recorder) -> None:
    """A Query deep-copies every item it answers before it projects or filters them (``copy.deepcopy`` of the
    page): ~0.2 s per 1 MB page of packed readings, a third of a day's chart read. Nothing on the read path
    writes to an answered item (a projection builds a new item, a filter and the answer only read), so while a
    Query of the table or an index runs, the page's list is copied and its items are not; every other deep copy
    of the module (backups, restores, Scan) is moto's."""
    import copy as copy_module

    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models import table as table_module

    original_query = DynamoDBBackend.query
    reading = threading.local()

    class ReadCopy:
        """The ``copy`` module as ``table`` sees it: ``deepcopy`` of a Query's page is a shallow list copy."""

        def __getattr__(self, name: str) -> Any:
            return getattr(copy_module, name)

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            if getattr(reading, "query", False) and type(value) is list:
                return list(value)
            return copy_module.deepcopy(value, memo)

    def query(self: Any, *args: Any, **kwargs: Any) -> Any:
        reading.query = True
        try:
            return original_query(self, *args, **kwargs)
        finally:
            reading.query = False

    patches.setattr(table_module, "copy", ReadCopy())
    patches.setattr(DynamoDBBackend, "query", query)


def _plain_reads(patches: Recorder) -> None:
    """A Query of a day's packed readings spends half its time on three generic walks per answered item: its size
    (twice, for the 1 MB page limit: ``Item.size`` calls ``DynamoType.size``, which asks four type questions per
    attribute before it measures a string or a number), the sort of the partition by its sort key
    (``DynamoType.__lt__`` compares ``cast_value``, a property that asks five type questions to return a string's
    own value), and the answer's ``dynamo_to_dict`` (five type tests per attribute to return ``{type: value}``
    unchanged). For a string or number attribute each gives its result directly: the same size, the same order,
    the same dict; every other type (sets, lists, maps, binaries) is moto's."""
    from moto.dynamodb import responses
    from moto.dynamodb.models.dynamo_type import DynamoType, Item
    from moto.dynamodb.models.utilities import bytesize, number_size

    original_size = DynamoType.size
    original_lt = DynamoType.__lt__
    original_to_dict = responses.dynamo_to_dict

    def size(self: Any) -> int:
        kind = self.type
        if kind == "S":
            return int(bytesize(self.value))
        if kind == "N":
            return int(number_size(str(self.value)))
        return int(original_size(self))

    def item_size(self: Any) -> int:
        total = 0
        for key, value in self.attrs.items():
            kind = value.type
            if kind == "S" and type(value.value) is str and type(key) is str:
                total += len(key.encode("utf-8")) + len(value.value.encode("utf-8"))
            else:
                total += int(bytesize(key)) + size(value)
        return total

    def less_than(self: Any, other: Any) -> bool:
        if self.type == "S" and type(other) is DynamoType and other.type == "S":
            return bool(self.value < other.value)
        return bool(original_lt(self, other))

    def to_dict(obj: Any) -> Any:
        kind = type(obj)
        if kind is DynamoType and obj.type in ("S", "N", "BOOL", "NULL") and type(obj.value) in (str, bool):
            return {obj.type: obj.value}
        if kind is dict:
            return {key: to_dict(value) for key, value in obj.items()}
        if kind is list:
            return [to_dict(value) for value in obj]
        if kind.__name__ == "LimitedSizeDict" and not hasattr(obj, "to_json"):  # an item's attributes
            return {key: to_dict(value) for key, value in obj.items()}
        return original_to_dict(obj)

    patches.setattr(DynamoType, "size", size)
    patches.setattr(Item, "size", item_size)
    patches.setattr(DynamoType, "__lt__", less_than)
    patches.setattr(responses, "dynamo_to_dict", to_dict)


def _plain_projection(patches: Recorder) -> None:
    """A projected read (the fleet's Scan asks for four attributes of every item) converts each item to plain Python
    once per projected name, deep-copying it each time, then back through boto3's serializer: most of the fleet
    Scan's time, during which every other DynamoDB request of the emulator waits. When each projected name is a
    top-level attribute (no path, no list index) and each found one is a string, a boolean or null, the new item
    holds those attributes as that round trip gives them (the same text, in projection order); numbers go through
    the same deserializer and serializer one value at a time; anything else is moto's."""
    from moto.dynamodb.models import dynamo_type
    from moto.dynamodb.models.dynamo_type import Item

    original = Item.project

    def project(self: Any, projection_expressions: list[list[str]]) -> Any:
        attrs: dict[str, Any] = {}
        for expr in projection_expressions:
            if len(expr) != 1 or "[" in expr[0] or "." in expr[0]:
                return original(self, projection_expressions)
            value = self.attrs.get(expr[0])
            if value is None:
                continue
            kind = value.type
            if kind in ("S", "BOOL", "NULL") and type(value.value) in (str, bool):
                attrs[expr[0]] = {kind: value.value}
            elif kind == "N" and type(value.value) is str:
                attrs[expr[0]] = dynamo_type.serializer.serialize(dynamo_type.deserializer.deserialize(
                    {"N": value.value}))
            else:
                return original(self, projection_expressions)
        return Item(hash_key=self.hash_key, range_key=self.range_key, attrs=attrs)

    patches.setattr(Item, "project", project)


PATCHES: tuple[Patch, ...] = (
    Patch("dynamodb.item_size_check", "speed",
          "the 400 KB item limit checked with a running total",
          _item_size_check),
    Patch("dynamodb.write_parsing", "speed",
          "PutItem, BatchWriteItem and BatchGetItem bodies without binary attributes parsed by json.loads",
          _write_parsing),
    Patch("dynamodb.attribute_values", "speed",
          "DynamoType built without intermediate lists",
          _attribute_values),
    Patch("dynamodb.item_build", "speed",
          "an item built, sized, validated and hashed in one pass",
          _item_build),
    Patch("dynamodb.batch_write_answer", "speed",
          "BatchWriteItem answer written as JSON directly",
          _batch_write_answer),
    Patch("dynamodb.batch_get_answer", "speed",
          "BatchGetItem of flat items (no projection, no binary, list or map attributes) answered as JSON directly",
          _batch_get_answer),
    Patch("dynamodb.partition_query", "speed",
          "a table Query lists only the asked partition's items (after its start key), not the whole table's",
          _partition_query),
    Patch("dynamodb.read_answers", "speed",
          "Query and Scan answers written as JSON directly (the serializer's way when they hold binary attributes)",
          _read_answers),
    Patch("dynamodb.query_without_copy", "speed",
          "a Query answers its stored items without deep-copying them (nothing on the read path writes to them)",
          _query_without_copy),
    Patch("dynamodb.plain_reads", "speed",
          "string and number attributes sized, ordered and answered without moto's generic type walk",
          _plain_reads),
    Patch("dynamodb.plain_projection", "speed",
          "a projection of top-level string, number and boolean attributes built without a round trip per name",
          _plain_projection),
)
