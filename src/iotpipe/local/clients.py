"""What the rooms of ``iotpipe local`` need to reach the emulator: something that makes a boto3 client per service.

``iotpipe.aws.ClientFactory`` (and ``iotpipe.local.state.LocalClientFactory``) are one, and so is the supervisor's
shared cache; tests pass their own. Typed as botocore's ``BaseClient``, whose operations botocore makes at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from botocore.client import BaseClient


class Clients(Protocol):
    """Makes (or hands out) a boto3 client for an AWS service, e.g. ``clients.client("kinesis")``."""

    def client(self, service: str) -> BaseClient:
        """A client for ``service``."""
        ...
