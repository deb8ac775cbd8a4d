"""moto's CloudFormation, where our template meets it: change sets, protection, imports, the IoT endpoint
custom resource, updates of a stack made from the seed template and deletes."""

from __future__ import annotations

from typing import Any

from iotpipe import contract as naming
from iotpipe.local.emulator.moto_compat.base import Patch, Recorder


def _change_set_outputs(patches: Recorder) -> None:
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


def _update_termination_protection(patches: Recorder) -> None:
    """UpdateTerminationProtection is missing from moto (CreateStack's EnableTerminationProtection is kept)."""
    from moto.cloudformation.responses import CloudFormationResponse
    from moto.core.responses import ActionResult

    def update_termination_protection(self: Any) -> Any:
        stack = self.cloudformation_backend.get_stack(self._get_param("StackName"))
        stack.enable_termination_protection = self._get_param("EnableTerminationProtection") in (True, "true")
        return ActionResult({"StackId": stack.stack_id})

    patches.setattr(CloudFormationResponse, "update_termination_protection", update_termination_protection)


def _protected_stack_delete(patches: Recorder) -> None:
    """moto's DeleteStack ignores termination protection; CloudFormation refuses to delete a protected stack."""
    from moto.cloudformation.exceptions import ValidationError
    from moto.cloudformation.models import CloudFormationBackend

    original_delete = CloudFormationBackend.delete_stack

    def delete_stack(self: Any, name_or_stack_id: str) -> None:
        for stack in list(self.stacks.values()):
            if name_or_stack_id in (stack.stack_id, stack.name) and stack.enable_termination_protection:
                raise ValidationError(
                    name_or_stack_id,
                    message=f"Stack [{stack.name}] cannot be deleted while TerminationProtection is enabled")
        original_delete(self, name_or_stack_id)

    patches.setattr(CloudFormationBackend, "delete_stack", delete_stack)


def _iot_endpoint_custom_resource(patches: Recorder) -> None:
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


def _list_imports(patches: Recorder) -> None:
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


def _seed_update_replacements(patches: Recorder) -> None:
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


def _stack_delete_recreates(patches: Recorder) -> None:
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


PATCHES: tuple[Patch, ...] = (
    Patch("cloudformation.change_set_outputs", "parity",
          "a stack made through a change set gets its outputs and exports",
          _change_set_outputs),
    Patch("cloudformation.update_termination_protection", "api",
          "UpdateTerminationProtection",
          _update_termination_protection),
    Patch("cloudformation.protected_stack_delete", "parity",
          "DeleteStack refuses a stack with termination protection",
          _protected_stack_delete),
    Patch("cloudformation.iot_endpoint_custom_resource", "api",
          "Custom::IoTEndpoint answered from moto's IoT backend (no Docker)",
          _iot_endpoint_custom_resource),
    Patch("cloudformation.list_imports", "api",
          "ListImports",
          _list_imports),
    Patch("cloudformation.seed_update_replacements", "parity",
          "role, table and log group updates replace or update in place as CloudFormation does",
          _seed_update_replacements),
    Patch("cloudformation.stack_delete_recreates", "parity",
          "describing a deleted stack does not create its resources again",
          _stack_delete_recreates),
)
