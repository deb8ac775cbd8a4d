"""Every result deploy, devices and doctor return has as_dict(): JSON-serialisable, carrying every field."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from iotpipe import devices, doctor
from iotpipe.config import PipelineConfig
from iotpipe.deploy import client, execute, plan, preflight, status
from iotpipe.package import Artefact

MODULES: tuple[ModuleType, ...] = (client, plan, execute, status, preflight, devices, doctor)
NOT_RESULTS = {client.Clock}  # an injected time source, not something the library reports
# Fields as_dict reports by a summary rather than verbatim: (type, field) -> what the summary must show.
SUMMARISED = {(plan.DeployRequest, "template_body"), (plan.TemplateSource, "body"), (doctor.Context, "config")}

CHANGE = client.Change(action="Modify", logical_id="LogicalA", resource_type="AWS::S3::Bucket",
                       replacement="True", physical_id="phys-a")
STACK = client.Stack(name="stk-name", stack_id="arn:stack-id", status="UPDATE_COMPLETE", status_reason="why-status",
                     termination_protection=True, outputs=(("OutKey", "out-value"),),
                     parameters=(("ParamKey", "param-value"),), tags=(("TagKey", "tag-value"),),
                     exports=(("ExpOut", "export-name"),))
EVENT = client.StackEvent(event_id="ev-1", timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                          logical_id="LogicalE", resource_type="AWS::SQS::Queue", status="CREATE_FAILED",
                          reason="ev-reason")
REQUEST = plan.DeployRequest(stack_name="req-stack", template_body="Resources: {}", env="qa", parameters=(
    ("EnvironmentSuffix", "qa"),), tags=(("Owner", "plant-7"),), termination_protection=True,
    on_failure="delete", timeout_minutes=12.5, reserved_concurrency=9,
    artefacts=(Artefact(key="processor/abc.zip", body=b"zip-bytes"),))
SOURCE = plan.TemplateSource(body="inline-body", url="https://bucket.s3/t.yaml", bucket="art-bucket",
                             bucket_created=True)
FILES = devices.DeviceFiles(certificate=Path("/c/press-1.cert.pem"), private_key=Path("/c/press-1.private.key"),
                            connection=Path("/c/press-1.connection.json"))
REVOKED = devices.RevokedDevice(thing_name="press-2", deleted_certificates=("cert-del",),
                                detached_only_certificates=("cert-shared",), detached_policies=("pol-a",))
CHECK = doctor.Check(name="topic rule", status=doctor.FAIL, detail="rule-detail", action="rule-action")

RESULTS: list[Any] = [
    CHANGE, STACK, EVENT, REQUEST, SOURCE, FILES, REVOKED, CHECK,
    client.ChangeSet(change_set_id="arn:cs", stack_id="arn:stack-cs", status="CREATE_COMPLETE",
                     status_reason="cs-reason", execution_status="AVAILABLE", changes=(CHANGE,)),
    execute.DeployResult(stack_name="res-stack", action="update", executed=True, status="UPDATE_COMPLETE",
                         changes=(CHANGE,), outputs=(("K1", "v1"),), termination_protection=False,
                         notes=("a-note",)),
    execute.DestroyResult(stack_name="gone-stack", deleted=True, objects_deleted=(("bucket-x", 42),)),
    plan.DestroyPlan(stack_name="dp-stack", stack=STACK, buckets=("b-1",), retained_buckets=("b-2",)),
    plan.DeployPlan(request=REQUEST, action="create", stack=STACK, changes=(CHANGE,), source=SOURCE,
                    change_set_id="cs-1", stack_id="st-1", created_review_stack=True),
    status.StatusReport(stack=STACK, events=(EVENT,), pending_changes=(CHANGE,)),
    preflight.Replacement(logical_id="Table", resource_type="AWS::DynamoDB::Table", properties=("KeySchema",),
                          refusal="named-refusal"),
    preflight.ExportChange(export_name="exp-name", output_key="OutX", importers=("other-stack",)),
    preflight.ConcurrencyCheck(account_limit=1000, unreserved=900, current_reservation=7, requested=50),
    devices.RegisteredDevice(thing_name="press-1", thing_arn="arn:thing", certificate_id="cert-1",
                             certificate_arn="arn:cert", policy_name="pol", endpoint="abc-ats.iot", port=8883,
                             topic="sensor/press-1/data", files=FILES),
    devices.Device(thing_name="press-3", thing_arn="arn:thing-3", attributes=(("environment", "dev"),),
                   certificate_ids=("cert-3",)),
    devices.PolicyTarget(certificate_arn="arn:aws:iot:eu-west-1:1:cert/cert-t", things=("press-4",)),
    devices.ReleasedPolicy(revoked=(REVOKED,), detached_certificates=("cert-x",), deleted_versions=("3",)),
    doctor.Report(checks=(CHECK,)),
    doctor.Context(config=PipelineConfig(env="qa"), account="123456789012", region="eu-west-1",
                   stack={"StackId": "arn:ctx", "CreationTime": datetime(2026, 1, 1, tzinfo=UTC)},
                   resources=({"LogicalResourceId": "RawDataBucket", "PhysicalResourceId": "raw-bucket"},)),
]


def _field_leaves(value: Any) -> Iterator[Any]:
    """The primitive values a result holds, field by field (summarised fields left out)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            if (type(value), field.name) not in SUMMARISED:
                yield from _field_leaves(getattr(value, field.name))
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _field_leaves(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _field_leaves(item)
    elif isinstance(value, datetime):
        yield value.isoformat()
    elif isinstance(value, bytes):
        yield len(value)
    elif isinstance(value, Path):
        yield str(value)
    elif value is not None:
        yield value


def _json_leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _json_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_leaves(item)
    else:
        yield value


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_as_dict_is_json_and_carries_every_field(result: Any) -> None:
    data = json.loads(json.dumps(result.as_dict()))  # no default=: plain JSON types only
    shown = [repr(leaf) for leaf in _json_leaves(data)]
    missing = [leaf for leaf in _field_leaves(result) if repr(leaf) not in shown]
    assert not missing, f"{type(result).__name__}.as_dict() lacks {missing}"


def test_summarised_fields_are_summarised() -> None:
    assert REQUEST.as_dict()["template"] == {"bytes": 13, "sha256": plan.hashlib.sha256(b"Resources: {}").hexdigest()}
    assert SOURCE.as_dict()["inlineBytes"] == len("inline-body")
    context = RESULTS[-1].as_dict()
    assert context["env"] == "qa" and context["stackName"] == PipelineConfig(env="qa").resolved_stack_name


def test_every_result_type_has_as_dict_and_a_case_here() -> None:
    covered = {type(result) for result in RESULTS}
    for module in MODULES:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not dataclasses.is_dataclass(cls) or cls in NOT_RESULTS:
                continue
            if not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
                continue  # DeployClient holds clients; it is not a result
            assert callable(getattr(cls, "as_dict", None)), f"{cls.__qualname__} has no as_dict()"
            assert cls in covered, f"{cls.__qualname__} has no case in RESULTS"
