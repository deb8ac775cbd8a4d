"""moto's IoT resources as CloudFormation makes them."""

from __future__ import annotations

import json
from typing import Any

from iotpipe.local.emulator.moto_compat.base import Patch, Recorder


def _thing_attribute_payload(patches: Recorder) -> None:
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


def _deletes_by_name(patches: Recorder) -> None:
    """AWS::IoT::Policy and Thing are deleted by their raw name property (an unresolved Fn::Sub here) and fail;
    let each delete itself by its resolved name."""
    from moto.iot.models import FakePolicy, FakeThing, iot_backends

    def delete_policy(self: Any, account_id: str, region_name: str) -> None:
        iot_backends[account_id][region_name].delete_policy(policy_name=self.name)

    def delete_thing(self: Any, account_id: str, region_name: str) -> None:
        iot_backends[account_id][region_name].delete_thing(thing_name=self.thing_name)

    patches.setattr(FakePolicy, "delete", delete_policy)
    patches.setattr(FakeThing, "delete", delete_thing)


def _refs_are_names(patches: Recorder) -> None:
    """``Ref`` of AWS::IoT::Policy and AWS::IoT::Thing is the name in CloudFormation; moto gives the repr."""
    from moto.iot.models import FakePolicy, FakeThing

    patches.setattr(FakePolicy, "physical_resource_id", property(lambda self: self.name))
    patches.setattr(FakeThing, "physical_resource_id", property(lambda self: self.thing_name))


PATCHES: tuple[Patch, ...] = (
    Patch("iot.thing_attribute_payload", "parity",
          "AWS::IoT::Thing AttributePayload given as a mapping",
          _thing_attribute_payload),
    Patch("iot.deletes_by_name", "parity",
          "AWS::IoT::Policy and Thing deleted by their resolved name",
          _deletes_by_name),
    Patch("iot.refs_are_names", "parity",
          "Ref of AWS::IoT::Policy and Thing is the name",
          _refs_are_names),
)
