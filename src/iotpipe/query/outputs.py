"""The stack's outputs the read commands need (resource names; see the data contract in docs/contract.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from iotpipe.aws import stack_outputs
from iotpipe.config import PipelineConfig
from iotpipe.errors import AwsError


class ClientSource(Protocol):
    """Anything that makes boto3 clients by service name (``iotpipe.aws.ClientFactory``)."""

    def client(self, service: str) -> Any: ...


def stack_names(clients: ClientSource, cfg: PipelineConfig) -> dict[str, str]:
    """The stack's outputs (resource names) for ``cfg``'s environment."""
    return stack_outputs(clients.client("cloudformation"), cfg.resolved_stack_name)


def required_output(outputs: Mapping[str, str], key: str, cfg: PipelineConfig) -> str:
    """The output ``key`` of the stack; AwsError saying to redeploy when the stack predates it."""
    value = outputs.get(key)
    if not value:
        raise AwsError(
            f"stack {cfg.resolved_stack_name} has no output {key}; redeploy it with this version of "
            f"iotpipe: iotpipe deploy --env {cfg.env}"
        )
    return value
