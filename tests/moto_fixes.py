"""moto 5.2 gaps met when our template is deployed through its CloudFormation, patched in one place.

The template stays right; these make moto behave as CloudFormation does. The moto server of the test session
runs in this process (``ThreadedMotoServer``), so patching moto's classes reaches it too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from moto.cloudformation.models import CloudFormationBackend
from moto.iot.models import FakePolicy, FakeThing, iot_backends
from moto.kms.models import Key as KmsKey


def apply(patch: pytest.MonkeyPatch) -> None:
    """Patch every known gap; undone with ``patch.undo()``."""
    _thing_attribute_payload(patch)
    _change_set_outputs(patch)
    _kms_key_tags(patch)
    _iot_deletes(patch)


def _thing_attribute_payload(patch: pytest.MonkeyPatch) -> None:
    """AWS::IoT::Thing: moto expects AttributePayload as a JSON string; CloudFormation gives a mapping."""
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

        patch.setattr(FakeThing, method, classmethod(patched))


def _change_set_outputs(patch: pytest.MonkeyPatch) -> None:
    """A stack made through a change set keeps the outputs of the empty review template and registers no
    exports; recompute both after each execution."""
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

    patch.setattr(CloudFormationBackend, "execute_change_set", execute)


def _kms_key_tags(patch: pytest.MonkeyPatch) -> None:
    """AWS::KMS::Key Tags are read as TagKey/TagValue (the KMS API form); CloudFormation gives Key/Value."""
    original = KmsKey.create_from_cloudformation_json

    def create(cls: Any, resource_name: str, cloudformation_json: Any, *args: Any, **kwargs: Any) -> Any:
        properties = dict(cloudformation_json.get("Properties", {}))
        properties["Tags"] = [{"TagKey": t["Key"], "TagValue": t["Value"]} for t in properties.get("Tags", [])]
        return original.__func__(cls, resource_name, {**cloudformation_json, "Properties": properties},
                                 *args, **kwargs)

    patch.setattr(KmsKey, "create_from_cloudformation_json", classmethod(create))


def _iot_deletes(patch: pytest.MonkeyPatch) -> None:
    """AWS::IoT::Policy and Thing are deleted by their raw name property (an unresolved Fn::Sub here) and fail;
    let each delete itself by its resolved name."""

    def delete_policy(self: FakePolicy, account_id: str, region_name: str) -> None:
        iot_backends[account_id][region_name].delete_policy(policy_name=self.name)

    def delete_thing(self: FakeThing, account_id: str, region_name: str) -> None:
        iot_backends[account_id][region_name].delete_thing(thing_name=self.thing_name)

    patch.setattr(FakePolicy, "delete", delete_policy, raising=False)
    patch.setattr(FakeThing, "delete", delete_thing, raising=False)
