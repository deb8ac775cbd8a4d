"""moto's KMS keys as CloudFormation makes them."""

from __future__ import annotations

from typing import Any

from iotpipe.local.emulator.moto_compat.base import Patch, Recorder


def _key_tags(patches: Recorder) -> None:
    """AWS::KMS::Key Tags are read as TagKey/TagValue (the KMS API form); CloudFormation gives Key/Value."""
    from moto.kms.models import Key as KmsKey

    original = KmsKey.create_from_cloudformation_json

    def create(cls: Any, resource_name: str, cloudformation_json: Any, *args: Any, **kwargs: Any) -> Any:
        properties = dict(cloudformation_json.get("Properties", {}))
        properties["Tags"] = [{"TagKey": t["Key"], "TagValue": t["Value"]} for t in properties.get("Tags", [])]
        return original.__func__(cls, resource_name, {**cloudformation_json, "Properties": properties},  # type: ignore[attr-defined]
                                 *args, **kwargs)

    patches.setattr(KmsKey, "create_from_cloudformation_json", classmethod(create))


PATCHES: tuple[Patch, ...] = (
    Patch("kms.key_tags", "parity",
          "AWS::KMS::Key Tags given as Key/Value",
          _key_tags),
)
