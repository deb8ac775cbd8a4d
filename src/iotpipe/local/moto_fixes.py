"""moto 5.2 gaps met when our template is deployed through its CloudFormation, patched in one place.

The template stays right; these make moto behave as CloudFormation does. ``iotpipe local``, the tests and
``python -m iotpipe.local.moto_server`` all run moto with these fixes: :func:`apply` patches moto's classes in
this process, once, and a ``ThreadedMotoServer`` started here serves the patched classes.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from iotpipe import contract as naming

_applied: list[Patches] = []


class Patches:
    """The attributes replaced on moto's classes, with their originals."""

    def __init__(self) -> None:
        self.originals: list[tuple[Any, str, Any]] = []

    def setattr(self, target: Any, name: str, value: Any) -> None:
        """Replace ``target.name`` with ``value``, remembering the original (None when there was none)."""
        self.originals.append((target, name, vars(target).get(name)))
        setattr(target, name, value)


def apply() -> Patches:
    """Patch every known gap in this process, once (later calls return the same patches); they stay on."""
    if not _applied:
        patches = Patches()
        for fix in FIXES:
            fix(patches)
        _applied.append(patches)
    return _applied[0]


def arrival_seconds(record: Any) -> float:
    """A moto Kinesis record's arrival time as epoch seconds: moto up to 5.2.5 keeps a float, 5.2.6 a naive UTC
    datetime (``moto.core.utils.utcnow``)."""
    created_at = record.created_at
    if isinstance(created_at, datetime):
        return created_at.replace(tzinfo=UTC).timestamp() if created_at.tzinfo is None \
            else created_at.timestamp()
    return float(created_at)


def _thing_attribute_payload(patches: Patches) -> None:
    """AWS::IoT::Thing: moto expects AttributePayload as a JSON string; CloudFormation gives a mapping."""
    from moto.iot.models import FakeThing

    for method in ("create_from_cloudformation_json", "update_from_cloudformation_json"):
        original = getattr(FakeThing, method)

        def patched(cls: type, name: str, cloudformation_json: Any, *args: Any, _original: Any = original,
                    **kwargs: Any) -> Any:
            properties = cloudformation_json.get("Properties", {})
            payload = properties.get("AttributePayload")
            if isinstance(payload, dict):
                attributes = json.dumps({"attributes": payload.get("Attributes", {})})
                cloudformation_json = {**cloudformation_json,
                                       "Properties": {**properties, "AttributePayload": attributes}}
            return _original.__func__(cls, name, cloudformation_json, *args, **kwargs)

        patches.setattr(FakeThing, method, classmethod(patched))


def _change_set_outputs(patches: Patches) -> None:
    """A stack made through a change set keeps the outputs of the empty review template and registers no
    exports; recompute both after each execution."""
    from moto.cloudformation.models import CloudFormationBackend

    original = CloudFormationBackend.execute_change_set

    def execute(self: Any, change_set_name: str, stack_name: str | None = None) -> None:
        original(self, change_set_name, stack_name)
        change_set = self.change_sets.get(change_set_name) or next(
            cs for cs in self.change_sets.values() if cs.change_set_name == change_set_name)
        stack = self.stacks[change_set.stack_id]
        stack.template_dict = change_set.template_dict
        stack.output_map = stack._create_output_map()
        for export in stack.exports:
            self.exports[export.name] = export

    patches.setattr(CloudFormationBackend, "execute_change_set", execute)


def _kms_key_tags(patches: Patches) -> None:
    """AWS::KMS::Key Tags are read as TagKey/TagValue (the KMS API form); CloudFormation gives Key/Value."""
    from moto.kms.models import Key as KmsKey

    original = KmsKey.create_from_cloudformation_json

    def create(cls: Any, resource_name: str, cloudformation_json: Any, *args: Any, **kwargs: Any) -> Any:
        properties = dict(cloudformation_json.get("Properties", {}))
        properties["Tags"] = [{"TagKey": t["Key"], "TagValue": t["Value"]} for t in properties.get("Tags", [])]
        return original.__func__(cls, resource_name, {**cloudformation_json, "Properties": properties},  # type: ignore[attr-defined]
                                 *args, **kwargs)

    patches.setattr(KmsKey, "create_from_cloudformation_json", classmethod(create))


def _iot_deletes(patches: Patches) -> None:
    """AWS::IoT::Policy and Thing are deleted by their raw name property (an unresolved Fn::Sub here) and fail;
    let each delete itself by its resolved name."""
    from moto.iot.models import FakePolicy, FakeThing, iot_backends

    def delete_policy(self: Any, account_id: str, region_name: str) -> None:
        iot_backends[account_id][region_name].delete_policy(policy_name=self.name)

    def delete_thing(self: Any, account_id: str, region_name: str) -> None:
        iot_backends[account_id][region_name].delete_thing(thing_name=self.thing_name)

    patches.setattr(FakePolicy, "delete", delete_policy)
    patches.setattr(FakeThing, "delete", delete_thing)


def _iot_refs(patches: Patches) -> None:
    """``Ref`` of AWS::IoT::Policy and AWS::IoT::Thing is the name in CloudFormation; moto gives the repr."""
    from moto.iot.models import FakePolicy, FakeThing

    patches.setattr(FakePolicy, "physical_resource_id", property(lambda self: self.name))
    patches.setattr(FakeThing, "physical_resource_id", property(lambda self: self.thing_name))


def _termination_protection(patches: Patches) -> None:
    """UpdateTerminationProtection is missing from moto, and DeleteStack ignores the flag; CloudFormation
    refuses to delete a protected stack."""
    from moto.cloudformation.exceptions import ValidationError
    from moto.cloudformation.models import CloudFormationBackend
    from moto.cloudformation.responses import CloudFormationResponse
    from moto.core.responses import ActionResult

    def update_termination_protection(self: Any) -> Any:
        stack = self.cloudformation_backend.get_stack(self._get_param("StackName"))
        stack.enable_termination_protection = self._get_param("EnableTerminationProtection") in (True, "true")
        return ActionResult({"StackId": stack.stack_id})

    original_delete = CloudFormationBackend.delete_stack

    def delete_stack(self: Any, name_or_stack_id: str) -> None:
        for stack in list(self.stacks.values()):
            if name_or_stack_id in (stack.stack_id, stack.name) and stack.enable_termination_protection:
                raise ValidationError(
                    name_or_stack_id,
                    message=f"Stack [{stack.name}] cannot be deleted while TerminationProtection is enabled")
        original_delete(self, name_or_stack_id)

    patches.setattr(CloudFormationResponse, "update_termination_protection", update_termination_protection)
    patches.setattr(CloudFormationBackend, "delete_stack", delete_stack)


def _fix_iot_endpoint_custom_resource(patches: Patches) -> None:
    """``Custom::IoTEndpoint``: moto runs a custom resource by invoking its Lambda function, which needs Docker,
    and waits for the function's answer. Answer this one as the function does, from moto's IoT backend
    (DescribeEndpoint, iot:Data-ATS); every other custom resource is left to moto."""
    from moto.cloudformation import cloudformation_backends
    from moto.cloudformation.custom_model import CustomModel
    from moto.iot.models import iot_backends

    resource_type = naming.IOT_ENDPOINT_RESOURCE_TYPE
    model: Any = CustomModel  # moto types it abstract; it is instantiated as moto itself does
    original_create: Any = CustomModel.create_from_cloudformation_json
    original_update: Any = CustomModel.update_from_cloudformation_json

    def answer(cloudformation_json: Any, account_id: str, region_name: str, logical_id: str) -> Any:
        endpoint_type = cloudformation_json.get("Properties", {}).get("EndpointType", "iot:Data-ATS")
        backend = iot_backends[account_id][region_name]
        current = getattr(backend, "endpoint", None)
        if current is None or current.endpoint_type != endpoint_type:
            current = backend.describe_endpoint(endpoint_type)
        resource = model(region_name, "", logical_id, "iot-data-endpoint")
        resource.set_data({"Address": current.endpoint})
        return resource

    def create(cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str,
               **kwargs: Any) -> Any:
        if kwargs.get("ResourceType") != resource_type:
            return original_create.__func__(cls, resource_name, cloudformation_json, account_id, region_name,
                                            **kwargs)
        resource = answer(cloudformation_json, account_id, region_name, kwargs["LogicalId"])
        stack = cloudformation_backends[account_id][region_name].get_stack(kwargs["StackId"])
        stack.add_custom_resource(resource)
        return resource

    def update(cls: Any, original_resource: Any, new_resource_name: str, cloudformation_json: Any,
               account_id: str, region_name: str) -> Any:
        if cloudformation_json.get("Type") != resource_type:
            return original_update.__func__(cls, original_resource, new_resource_name, cloudformation_json,
                                            account_id, region_name)
        return answer(cloudformation_json, account_id, region_name,
                      getattr(original_resource, "logical_id", naming.IOT_ENDPOINT))

    patches.setattr(CustomModel, "create_from_cloudformation_json", classmethod(create))
    patches.setattr(CustomModel, "update_from_cloudformation_json", classmethod(update))


def _kinesis_lambda_trigger(patches: Patches) -> None:
    """moto's Kinesis PutRecord invokes every mapped function at once, one record per invocation, in Docker
    (without Docker each record logs "error running docker" into the function's log group). Lambda polls the
    stream in batches instead; ``iotpipe local``'s mapping runner does that, so moto's trigger is turned off."""
    from moto.awslambda.models import LambdaBackend

    def send_kinesis_message(self: Any, *args: Any, **kwargs: Any) -> None:
        """Records stay in the stream for the mapping runner to poll."""

    patches.setattr(LambdaBackend, "send_kinesis_message", send_kinesis_message)


def _cloudwatch_exact_dimensions(patches: Patches) -> None:
    """moto's GetMetricStatistics matches every metric whose dimensions include those asked for; CloudWatch
    matches the exact set. The processor publishes each count under ``Environment`` and under ``Environment,
    SensorType``, so asking for ``Environment`` counted every reading twice (``iotpipe doctor --env local``)."""
    from moto.cloudwatch.models import CloudWatchBackend

    original = CloudWatchBackend.get_metric_statistics

    class _Exact:
        """The backend as ``get_metric_statistics`` reads it, holding only the metrics of one dimension set."""

        def __init__(self, backend: Any, wanted: set[tuple[str, str | None]]) -> None:
            self._backend = backend
            self._wanted = wanted

        def get_all_metrics(self) -> list[Any]:
            return [datum for datum in self._backend.get_all_metrics()
                    if {(dimension.name, dimension.value) for dimension in datum.dimensions} == self._wanted]

    def get_metric_statistics(self: Any, namespace: str, metric_name: str, start_time: Any, end_time: Any,
                              period: int, stats: list[str], dimensions: list[dict[str, str]],
                              unit: str | None = None) -> Any:
        wanted = {(item["Name"], item.get("Value")) for item in dimensions or []}
        return original(_Exact(self, wanted), namespace, metric_name, start_time, end_time,  # type: ignore[arg-type]
                        period, stats, dimensions, unit)

    patches.setattr(CloudWatchBackend, "get_metric_statistics", get_metric_statistics)


def _fix_list_imports(patches: Patches) -> None:
    """ListImports is missing from moto; deploy calls it before changing an export ("you can't modify or remove
    an output value that is referenced by another stack"). Answer it from the live stacks' Fn::ImportValue of a
    literal name, with CloudFormation's error when nothing imports it."""
    from moto.cloudformation.exceptions import ValidationError
    from moto.cloudformation.responses import CloudFormationResponse
    from moto.core.responses import ActionResult

    def imported_names(node: Any) -> set[str]:
        if isinstance(node, list):
            return set().union(*(imported_names(item) for item in node)) if node else set()
        if not isinstance(node, dict):
            return set()
        found = {node["Fn::ImportValue"]} if isinstance(node.get("Fn::ImportValue"), str) else set()
        return found.union(*(imported_names(item) for item in node.values()))

    def list_imports(self: Any) -> Any:
        export_name = self._get_param("ExportName")
        stacks = sorted(stack.name for stack in self.cloudformation_backend.stacks.values()
                        if not stack.status.startswith("DELETE") and export_name in imported_names(stack.template_dict))
        if not stacks:
            raise ValidationError(message=f"Export '{export_name}' is not imported by any stack.")
        return ActionResult({"Imports": stacks})

    patches.setattr(CloudFormationResponse, "list_imports", list_imports)


def _fix_kinesis_shard_scans(patches: Patches) -> None:
    """A Kinesis shard walks all its records from the first on every GetRecords, and lists all its keys to find
    the last sequence number on every put: both grow with the shard, so a long ``iotpipe local`` run slows down
    without bound. Sequence numbers in a moto shard are consecutive integers (``put_record`` uses last + 1), so
    both can start where they are needed."""
    from moto.kinesis.models import Record, Shard

    def get_min_sequence_number(self: Any) -> int:
        return next(iter(self.records)) if self.records else 0

    def get_max_sequence_number(self: Any) -> int:
        return next(reversed(self.records)) if self.records else 0

    def get_records(self: Any, last_sequence_id: str, limit: int | None) -> tuple[list[Record], int, int]:
        last = int(last_sequence_id)
        results: list[Record] = []
        if not self.records:
            return results, last, 0
        newest = self.records[next(reversed(self.records))]
        sequence = max(last + 1, next(iter(self.records)))
        while sequence <= newest.sequence_number and (limit is None or len(results) < limit):
            record = self.records.get(sequence)
            if record is not None:
                results.append(record)
                last = sequence
            sequence += 1
        behind = arrival_seconds(newest) - arrival_seconds(results[-1]) if results else 0.0
        return results, last, int(behind * 1000)

    patches.setattr(Shard, "get_min_sequence_number", get_min_sequence_number)
    patches.setattr(Shard, "get_max_sequence_number", get_max_sequence_number)
    patches.setattr(Shard, "get_records", get_records)


def _fix_kinesis_get_records_response(patches: Patches) -> None:
    """GetRecords goes through moto's generic serializer, which decodes each record's base64 data only to encode it
    again and walks the output shape per field: most of the emulator's time per record read. Write the JSON
    directly, in the same shape (Data as base64 text, ApproximateArrivalTimestamp as epoch seconds)."""
    from moto.kinesis.responses import KinesisResponse

    # moto 5.2.6 parses requests from the service model (Data arrives decoded, kept as raw bytes); before, Data
    # was kept as the request's base64 text.
    raw_data = bool(getattr(KinesisResponse(), "automated_parameter_parsing", False))

    def data_base64(data: str | bytes) -> str:
        if raw_data:
            return base64.b64encode(data if isinstance(data, bytes) else data.encode("utf-8")).decode("ascii")
        return data if isinstance(data, str) else data.decode("ascii")

    def get_records(self: Any) -> tuple[str, dict[str, str]]:
        next_iterator, records, millis_behind = self.kinesis_backend.get_records(
            self._get_param("StreamARN"), self._get_param("ShardIterator"), self._get_param("Limit"))
        body = json.dumps({
            "NextShardIterator": next_iterator,
            "Records": [{"Data": data_base64(record.data),
                         "PartitionKey": record.partition_key,
                         "SequenceNumber": str(record.sequence_number),
                         "ApproximateArrivalTimestamp": round(arrival_seconds(record), 3)} for record in records],
            "MillisBehindLatest": millis_behind,
        })
        # The serializer's content type; a bare string body would go out as text/html.
        return body, {"Content-Type": "application/x-amz-json-1.1"}

    patches.setattr(KinesisResponse, "get_records", get_records)


def _fix_kinesis_closed_shards(patches: Patches) -> None:
    """Resharding as Kinesis does it: a split or merge leaves the parent's records in the parent (moto moves them,
    with new sequence numbers, so a reader sees them twice or not at all), and new records go to open shards only
    (moto keeps writing to the closed parent, where a reader that finished it would never see them)."""
    from collections import OrderedDict

    from moto.kinesis.models import Stream
    from moto.utilities.utils import md5_hash

    original_shard_for_key = Stream.get_shard_for_key
    original_split = Stream.split_shard
    original_merge = Stream.merge_shards

    def get_shard_for_key(self: Any, partition_key: str, explicit_hash_key: str) -> Any:
        shard = original_shard_for_key(self, partition_key, explicit_hash_key)
        if shard is None or shard.is_open:
            return shard
        key = int(explicit_hash_key) if explicit_hash_key else int(md5_hash(partition_key.encode()).hexdigest(), 16)
        return next((candidate for candidate in self.shards.values()
                     if candidate.is_open and candidate.starting_hash <= key < candidate.ending_hash), shard)

    def keeping_records(self: Any, shard_ids: tuple[str, ...], reshard: Callable[[], None]) -> None:
        parents = [self.shards[shard_id] for shard_id in shard_ids if shard_id in self.shards]
        kept = [parent.records for parent in parents]
        for parent in parents:
            parent.records = OrderedDict()  # nothing for moto to move
        try:
            reshard()
        finally:
            for parent, records in zip(parents, kept, strict=True):
                parent.records = records

    def split_shard(self: Any, shard_to_split: str, new_starting_hash_key: str) -> None:
        keeping_records(self, (shard_to_split,),
                        lambda: original_split(self, shard_to_split, new_starting_hash_key))

    def merge_shards(self: Any, shard_to_merge: str, adjacent_shard_to_merge: str) -> None:
        keeping_records(self, (shard_to_merge, adjacent_shard_to_merge),
                        lambda: original_merge(self, shard_to_merge, adjacent_shard_to_merge))

    patches.setattr(Stream, "get_shard_for_key", get_shard_for_key)
    patches.setattr(Stream, "split_shard", split_shard)
    patches.setattr(Stream, "merge_shards", merge_shards)


def _fix_kinesis_put_records_answer(patches: Patches) -> None:
    """moto writes a PutRecords answer through its generic model-driven serializer, which took 55% of the
    server's time for a 500-record call (py-spy); the rule engine of ``iotpipe local`` sends every reading
    through PutRecords. The answer is two plain fields (FailedRecordCount, Records), written as JSON here."""
    from moto.kinesis.responses import KinesisResponse

    def put_records(self: Any) -> tuple[str, dict[str, str]]:
        answer = self.kinesis_backend.put_records(self._get_param("StreamARN"), self._get_param("StreamName"),
                                                  self._get_param("Records"))
        return json.dumps(answer), {"Content-Type": "application/x-amz-json-1.1"}

    patches.setattr(KinesisResponse, "put_records", put_records)


def _service_model_herd(patches: Patches) -> None:
    """moto caches each service's botocore model, but the first requests of a service all load it at once (one
    load per server thread, 100-300 ms of CPU each for DynamoDB): load it once, under a lock."""
    import threading

    import moto.core.responses as moto_responses
    import moto.core.utils as moto_utils

    original = moto_utils.get_service_model
    lock = threading.Lock()

    def get_service_model(service_name: str) -> Any:
        with lock:
            return original(service_name)

    patches.setattr(moto_utils, "get_service_model", get_service_model)
    patches.setattr(moto_responses, "get_service_model", get_service_model)


def _dynamodb_item_size_check(patches: Patches) -> None:
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


def _fix_seed_update_replacements(patches: Patches) -> None:
    """Updating a stack made from the seed template: CloudFormation replaces an AWS::IAM::Role whose RoleName
    changes and an AWS::DynamoDB::Table whose TableName or KeySchema changes (the new one first, then the old
    one is deleted unless UpdateReplacePolicy is Retain), and updates an AWS::Logs::LogGroup in place. moto
    updates the role under its new name (NoSuchEntity) and cannot update a table or a log group at all."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.table import Table
    from moto.iam.models import Role, iam_backends
    from moto.logs.models import LogGroup
    from moto.utilities.utils import get_partition

    original_role_update: Any = Role.update_from_cloudformation_json
    role_model: Any = Role
    table_model: Any = Table

    def update_role(cls: Any, original_resource: Any, new_resource_name: str, cloudformation_json: Any,
                    account_id: str, region_name: str) -> Any:
        name = cloudformation_json.get("Properties", {}).get("RoleName")
        if not name or name == original_resource.name:
            return original_role_update.__func__(cls, original_resource, new_resource_name, cloudformation_json,
                                                 account_id, region_name)
        new = role_model.create_from_cloudformation_json(name, cloudformation_json, account_id, region_name)
        if cloudformation_json.get("UpdateReplacePolicy") != "Retain":
            backend = iam_backends[account_id][get_partition(region_name)]
            for policy in list(original_resource.policies):
                backend.delete_role_policy(original_resource.name, policy)
            backend.delete_role(original_resource.name)
        return new

    # moto calls update_from_cloudformation_json with keywords (original_resource, new_resource_name,
    # cloudformation_json, account_id, region_name); the ones a fix does not read are taken as **_unused.
    def update_table(_cls: Any, original_resource: Any, cloudformation_json: Any, account_id: str,
                     region_name: str, **_unused: Any) -> Any:
        properties = cloudformation_json.get("Properties", {})
        name = properties.get("TableName", original_resource.name)
        if name == original_resource.name and properties.get("KeySchema") == original_resource.schema:
            return original_resource
        new = table_model.create_from_cloudformation_json(name, cloudformation_json, account_id, region_name)
        if cloudformation_json.get("UpdateReplacePolicy") != "Retain":
            dynamodb_backends[account_id][region_name].delete_table(name=original_resource.name)
        return new

    def update_log_group(_cls: Any, original_resource: Any, cloudformation_json: Any, **_unused: Any) -> Any:
        properties = cloudformation_json.get("Properties", {})
        if "RetentionInDays" in properties:
            original_resource.retention_in_days = properties["RetentionInDays"]
        if properties.get("KmsKeyId"):
            original_resource.kms_key_id = properties["KmsKeyId"]
        return original_resource

    patches.setattr(Role, "update_from_cloudformation_json", classmethod(update_role))
    patches.setattr(Table, "update_from_cloudformation_json", classmethod(update_table))
    patches.setattr(LogGroup, "update_from_cloudformation_json", classmethod(update_log_group))


def _stack_delete_recreates(patches: Patches) -> None:
    """After moto deletes a stack, describing it by id (as a delete is waited for) resolves its outputs, and a
    ``Ref`` to a deleted resource parses that resource again, which creates it anew: the DynamoDB table outlived
    ``iotpipe destroy``. From the delete on, a deleted resource resolves to what it was."""
    from moto.cloudformation.parsing import ResourceMap

    original_delete = ResourceMap.delete
    original_getitem = ResourceMap.__getitem__

    def delete(self: Any) -> None:
        vars(self)["_iotpipe_deleted"] = dict(self._parsed_resources)
        original_delete(self)

    def getitem(self: Any, key: str) -> Any:
        deleted = vars(self).get("_iotpipe_deleted")
        if deleted is not None and key not in self._parsed_resources and key in deleted:
            return deleted[key]
        return original_getitem(self, key)

    patches.setattr(ResourceMap, "delete", delete)
    patches.setattr(ResourceMap, "__getitem__", getitem)


def _dispatch_module_scan(patches: Patches) -> None:
    """moto's server finds the service of each request by listing its package directory and testing every entry
    with ``isdir`` (about 200 file-system calls per AWS call, a tenth of the server's CPU under load). The list
    does not change while the server runs: compute it once."""
    import moto.backends as moto_backends

    modules = tuple(moto_backends.list_of_moto_modules())

    def list_of_moto_modules() -> tuple[str, ...]:
        return modules

    patches.setattr(moto_backends, "list_of_moto_modules", list_of_moto_modules)


_BINARY_ATTRIBUTE = re.compile(rb'"BS?"\s*:')


def _dynamodb_write_parsing(patches: Patches) -> None:
    """moto parses every DynamoDB request through botocore's generic shape walker, attribute by attribute: a fifth
    of the emulator's CPU per stored reading. For BatchWriteItem and PutItem, the JSON body already is what that
    walk returns, except for binary attributes (base64 ``B``/``BS``, which it decodes): parse those the slow way,
    everything else with ``json.loads``."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.parse_parameters

    def parse_parameters(self: Any, request: Any) -> None:
        body = self.body
        raw = body.encode("utf-8") if isinstance(body, str) else body
        if (self._get_action() in ("BatchWriteItem", "PutItem") and isinstance(raw, bytes)
                and not _BINARY_ATTRIBUTE.search(raw)):
            self.params = json.loads(raw)
            return
        original(self, request)

    patches.setattr(DynamoHandler, "parse_parameters", parse_parameters)


def _backend_lookup_lock(patches: Patches) -> None:
    """Every request looks its service backend up through ``BackendDict[account]``, which takes a process-wide
    lock and lists the known accounts each time, so the server's request threads queue on it. An account that
    already has its backends needs neither."""
    from moto.core.base_backend import BackendDict

    original = BackendDict.__getitem__

    def getitem(self: Any, account_id: str) -> Any:
        if dict.__contains__(self, account_id):
            return dict.__getitem__(self, account_id)
        return original(self, account_id)

    patches.setattr(BackendDict, "__getitem__", getitem)


def _dynamodb_attribute_values(patches: Patches) -> None:
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


def _dynamodb_item_build(patches: Patches) -> None:
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
        if total > 405_000:  # moto's limit (see _dynamodb_item_size_check): its own code raises its own error
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


def _dynamodb_batch_write_answer(patches: Patches) -> None:
    """moto writes each BatchWriteItem answer through its generic model-driven serializer, which costs more than
    storing the 25 items did (about a tenth of the emulator's CPU per stored reading). The answer is plain JSON
    (ConsumedCapacity, ItemCollectionMetrics, UnprocessedItems): write it as such."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.batch_write_item

    def batch_write_item(self: Any) -> tuple[str, dict[str, str]]:
        answer = original(self).result
        return json.dumps(answer), {"Content-Type": "application/x-amz-json-1.0"}

    patches.setattr(DynamoHandler, "batch_write_item", batch_write_item)


# Services whose moto backends keep state in plain dicts that iotpipe local writes from several threads at once.
SERIALIZED_SERVICES = ("dynamodb", "kinesis", "logs", "cloudwatch")


def _serialized_backends(patches: Patches) -> None:
    """moto's backends are not written for concurrent requests, and its server serves each request on a thread of
    its own (waitress's pool of ``iotpipe local``, Werkzeug's thread per request in the tests). Two requests that
    race lose writes: Kinesis ``Shard.put_record`` reads the last sequence number and stores under the next one
    (moto's comment: "this function is not safe for concurrency"), so two PutRecords on one shard can store two
    records under one number; a DynamoDB table keeps ``items`` in a ``defaultdict``, so two BatchWriteItem calls
    that store the first items of a new partition key can each create its inner dict, and one call's items vanish
    (a local run once stored 105 of 180 readings). One lock per service of :data:`SERIALIZED_SERVICES` runs each
    request's action alone: the request is parsed before and the HTTP answer written after, outside the lock.
    Their actions never wait (SQS, whose ReceiveMessage long-polls, is not among them); S3 writes a new object
    per key, which is safe as it is."""
    import threading

    from moto.core.responses import BaseResponse

    locks = {service: threading.Lock() for service in SERIALIZED_SERVICES}
    original = BaseResponse.call_action

    def call_action(self: Any) -> Any:
        lock = locks.get(self.service_name or "")
        if lock is None:
            return original(self)
        with lock:
            return original(self)

    patches.setattr(BaseResponse, "call_action", call_action)

FIXES: tuple[Callable[[Patches], None], ...] = (
    _thing_attribute_payload,
    _change_set_outputs,
    _kms_key_tags,
    _iot_deletes,
    _iot_refs,
    _termination_protection,
    _fix_iot_endpoint_custom_resource,
    _kinesis_lambda_trigger,
    _cloudwatch_exact_dimensions,
    _service_model_herd,
    _dynamodb_item_size_check,
    _stack_delete_recreates,
    _dispatch_module_scan,
    _dynamodb_write_parsing,
    _backend_lookup_lock,
    _dynamodb_attribute_values,
    _fix_list_imports,
    _fix_kinesis_shard_scans,
    _fix_kinesis_get_records_response,
    _fix_kinesis_closed_shards,
    _fix_kinesis_put_records_answer,
    _dynamodb_batch_write_answer,
    _dynamodb_item_build,
    _fix_seed_update_replacements,
    _serialized_backends,
)
