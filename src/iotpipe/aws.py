"""boto3 client factory shared by the CLI commands; tests swap it for one pointed at moto."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import boto3


@dataclass(frozen=True)
class ClientFactory:
    """Creates boto3 clients for one region, profile and (for moto or LocalStack) endpoint URL."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None

    def check(self) -> None:
        """Refuse a malformed region or endpoint URL before any AWS call (botocore would print a traceback)."""
        from iotpipe.config import validate_region
        from iotpipe.errors import AwsError

        if self.region:
            validate_region(self.region)
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise AwsError(f"--endpoint-url {self.endpoint_url!r} is not an http(s) URL; give the scheme, "
                               f"e.g. --endpoint-url http://{self.endpoint_url.split('://')[-1] or '127.0.0.1:4566'}")

    def session(self) -> boto3.session.Session:
        """A boto3 session for this profile and region."""
        # Imported here: boto3 costs ~170 ms to import and `iotpipe render` never calls AWS.
        import boto3

        return boto3.session.Session(profile_name=self.profile, region_name=self.region)

    def client(self, service: str) -> Any:
        """A client for ``service`` with standard retries and the endpoint override, if any."""
        from botocore.config import Config

        self.check()
        config = Config(retries={"mode": "standard", "max_attempts": 5})
        client = self.session().client(service, endpoint_url=self.endpoint_url, config=config)
        # botocore reads a 200 HTML page from a web server as an empty answer (an empty device list): refuse it.
        client.meta.events.register("after-call.*.*", refuse_html)
        return client


def refuse_html(http_response: Any = None, model: Any = None, **_: Any) -> None:
    """botocore ``after-call`` hook: an HTML answer means the endpoint is not an AWS API (AwsError)."""
    from iotpipe.errors import AwsError

    if http_response is None or getattr(model, "has_streaming_output", False):
        return  # reading a streamed body here would consume it (an S3 object may well be HTML)
    # The body, not the content type: moto itself labels some JSON answers text/html.
    head = bytes(getattr(http_response, "content", b"") or b"")[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        title = _TITLE.search(head.decode("utf-8", "replace"))
        what = f"{html.unescape(title.group(1).strip())}, " if title else ""
        raise AwsError(f"the endpoint answered with an HTML page ({what}HTTP {http_response.status_code}), not an "
                       "AWS API response; check --endpoint-url (and that the emulator is running)")


def stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    """The outputs of ``stack_name`` as ``{OutputKey: OutputValue}``; AwsError when the stack does not exist."""
    from botocore.exceptions import ClientError

    from iotpipe.errors import AwsError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            raise AwsError(f"stack {stack_name} does not exist; deploy it first: iotpipe deploy with the same "
                           "--env and --config (and --region)") from None
        raise AwsError(f"describe-stacks {stack_name} failed: {clean_message(str(exc))}") from None
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
    from botocore.parsers import ResponseParserError

    if isinstance(exc, ResponseParserError):
        return ("the endpoint answered with something that is not an AWS API response ("
                f"{clean_message(str(exc), 120)}); check --endpoint-url (and that the emulator is running)")
    if isinstance(exc, NoRegionError):
        return "no AWS region: pass --region, set region in iotpipe.toml, or export AWS_DEFAULT_REGION"
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials: run `aws configure`, pass --profile, or export AWS_PROFILE"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS: {exc}; check --endpoint-url, --region and the network"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        operation = getattr(exc, "operation_name", "AWS call")
        message = clean_message(str(error.get("Message", exc)))
        return f"{operation} failed: {error.get('Code', 'Error')}: {message}"
    if isinstance(exc, BotoCoreError):
        return f"AWS call failed: {clean_message(str(exc))}"
    return None


_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML = re.compile(r"<!doctype html|<html[\s>]", re.IGNORECASE)


def looks_like_html(text: str) -> bool:
    """True when ``text`` holds an HTML page."""
    return _HTML.search(text) is not None


def clean_message(text: str, limit: int = 300) -> str:
    """An error message fit for one line: an HTML page (an endpoint that is not AWS) becomes its title."""
    if _HTML.search(text):
        title = _TITLE.search(text)
        what = html.unescape(title.group(1).strip()) if title else "an HTML page"
        return (f"the endpoint answered with an HTML page ({what}), not an AWS API response; check --endpoint-url")
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
