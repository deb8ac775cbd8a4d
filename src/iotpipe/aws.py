"""boto3 client factory shared by the CLI commands; tests swap it for one pointed at moto."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3


@dataclass(frozen=True)
class ClientFactory:
    """Creates boto3 clients for one region, profile and (for moto or LocalStack) endpoint URL."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None

    def session(self) -> boto3.session.Session:
        """A boto3 session for this profile and region."""
        # Imported here: boto3 costs ~170 ms to import and `iotpipe render` never calls AWS.
        import boto3

        return boto3.session.Session(profile_name=self.profile, region_name=self.region)

    def client(self, service: str) -> Any:
        """A client for ``service`` with standard retries and the endpoint override, if any."""
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "max_attempts": 5})
        return self.session().client(service, endpoint_url=self.endpoint_url, config=config)


def stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    """The outputs of ``stack_name`` as ``{OutputKey: OutputValue}``; AwsError when the stack does not exist."""
    from botocore.exceptions import ClientError

    from iotpipe.errors import AwsError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            raise AwsError(f"stack {stack_name} does not exist; deploy it first: iotpipe deploy --env <env>") \
                from None
        raise AwsError(f"describe-stacks {stack_name} failed: {exc}") from None
    return {item["OutputKey"]: item["OutputValue"] for item in stacks[0].get("Outputs", [])}


def explain_aws_failure(exc: BaseException) -> str | None:
    """A one-line message with what to do for a botocore error that escaped a command; None if not one."""
    if not type(exc).__module__.startswith("botocore"):
        return None
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
    )

    if isinstance(exc, NoRegionError):
        return "no AWS region: pass --region, set region in iotpipe.toml, or export AWS_DEFAULT_REGION"
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials: run `aws configure`, pass --profile, or export AWS_PROFILE"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS: {exc}; check --endpoint-url, --region and the network"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        operation = getattr(exc, "operation_name", "AWS call")
        return f"{operation} failed: {error.get('Code', 'Error')}: {error.get('Message', exc)}"
    if isinstance(exc, BotoCoreError):
        return f"AWS call failed: {exc}"
    return None
