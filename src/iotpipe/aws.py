"""boto3 client factory shared by the CLI commands; tests swap it for one pointed at moto."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from iotpipe.errors import AwsError, ConfigError

if TYPE_CHECKING:
    import boto3

T = TypeVar("T")


@dataclass(frozen=True)
class Timeouts:
    """How long an AWS call may take: seconds to connect and to wait for each read of an answer, and the calls
    made in all (the first and its retries). At worst a call takes ``attempts * (connect_s + read_s)`` plus the
    retries' backoff. ``None`` leaves botocore's own (60 s, 60 s, 5 retries: six minutes on an endpoint that never
    answers)."""

    connect_s: float | None = None
    read_s: float | None = None
    attempts: int | None = None

    def config(self) -> dict[str, Any]:
        """The keyword arguments of botocore's ``Config`` for these bounds (standard retries)."""
        retries: dict[str, Any] = {"mode": "standard"}
        retries.update({"total_max_attempts": self.attempts} if self.attempts is not None else {"max_attempts": 5})
        bounds = {"connect_timeout": self.connect_s, "read_timeout": self.read_s}
        return {"retries": retries, **{key: value for key, value in bounds.items() if value is not None}}


# The CLI's budget per AWS call (every command, --connect-timeout, --read-timeout, --max-attempts): no call of
# iotpipe's waits long for its answer (waiters poll, downloads stream), so an endpoint that accepts and never
# answers fails a command in about half a minute rather than six.
CLI_TIMEOUTS = Timeouts(connect_s=5.0, read_s=10.0, attempts=3)
# deploy, diff and destroy: CloudFormation's change-set calls answer slower (moto's, under iotpipe local, create
# every resource inside ExecuteChangeSet), and a timed-out write is retried.
STACK_TIMEOUTS = Timeouts(connect_s=5.0, read_s=30.0, attempts=3)


class EndpointError(AwsError):
    """AWS (or the --endpoint-url) could not be reached or did not answer in time: no later call can do better."""


@dataclass(frozen=True)
class ClientFactory:
    """Creates boto3 clients for one region, profile and (for moto or LocalStack) endpoint URL, each call bounded by
    ``timeouts``."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    timeouts: Timeouts = Timeouts()

    def check(self) -> None:
        """Refuse a malformed region or endpoint URL before any AWS call (botocore would print a traceback)."""
        from iotpipe.config import validate_region
        if self.region:
            validate_region(self.region)
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"--endpoint-url {self.endpoint_url!r} is not an http(s) URL; give the scheme, "
                               f"e.g. --endpoint-url http://{self.endpoint_url.split('://')[-1] or '127.0.0.1:4566'}")

    def session(self) -> boto3.session.Session:
        """A boto3 session for this profile and region."""
        # Imported here: boto3 costs ~170 ms to import and `iotpipe render` never calls AWS.
        import boto3

        return boto3.session.Session(profile_name=self.profile, region_name=self.region)

    def client(self, service: str) -> Any:
        """A client for ``service`` with standard retries, the timeouts and the endpoint override, if any."""
        from botocore.config import Config

        self.check()
        config = Config(**self.timeouts.config())
        client = self.session().client(service, endpoint_url=self.endpoint_url, config=config)
        # botocore reads a 200 HTML page from a web server as an empty answer (an empty device list): refuse it.
        client.meta.events.register("after-call.*.*", refuse_html)
        return client


def refuse_html(http_response: Any = None, model: Any = None, **_: Any) -> None:
    """botocore ``after-call`` hook: an HTML answer means the endpoint is not an AWS API (AwsError)."""
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
    try:
        stacks = call_aws("cloudformation", "describe-stacks", cloudformation.describe_stacks,
                          StackName=stack_name)["Stacks"]
    except AwsError as exc:
        if "does not exist" in exc.aws_message:
            raise AwsError(f"stack {stack_name} does not exist; deploy it first: iotpipe deploy with the same "
                           "--env and --config (and --region)", service=exc.service, operation=exc.operation,
                           code=exc.code, aws_message=exc.aws_message) from None
        raise
    return {item["OutputKey"]: item["OutputValue"] for item in stacks[0].get("Outputs", [])}


THROTTLE_CODES = frozenset({"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
                            "SlowDown"})
ACCESS_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
                          "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException"})
NO_CREDENTIALS = "no AWS credentials: run `aws configure`, pass --profile, or export AWS_PROFILE"
NO_REGION = "no AWS region: pass --region, set region in iotpipe.toml, or export AWS_DEFAULT_REGION"


def aws_error(exc: BaseException, service: str = "", operation: str = "") -> AwsError | None:
    """The :class:`AwsError` for a botocore exception raised by ``service``'s ``operation``; None if not one.

    The message names the call and AWS's code and message; credential, region and endpoint problems name the fix.
    """
    if not type(exc).__module__.startswith("botocore"):
        return None
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ReadTimeoutError,
    )
    from botocore.parsers import ResponseParserError

    operation = operation or str(getattr(exc, "operation_name", "") or "AWS call")
    call = f"{service} {operation}" if service else operation
    lead = "" if call == "AWS call" else f"{call}: "  # a region or credential problem is not about one call
    names = {"service": service, "operation": operation}
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "") or "Error")
        message = clean_message(str(error.get("Message", "") or exc))
        detail = {**names, "code": code, "aws_message": message}
        if code in THROTTLE_CODES:
            return AwsError(f"{call} was throttled by AWS ({code}: {message}) even after retries; wait a minute "
                            "and run the command again", **detail)
        if code in ACCESS_CODES:
            return AwsError(f"{call} was denied ({code}: {message}); check the credentials and IAM permissions "
                            "of the profile in use (--profile)", **detail)
        return AwsError(f"{call} failed: {code}: {message}", **detail)
    if isinstance(exc, ResponseParserError):  # not a BotoCoreError: an endpoint that answered with garbage
        return AwsError(f"{lead}the endpoint answered with something that is not an AWS API response ("
                        f"{clean_message(str(exc), 120)}); check --endpoint-url (and that the emulator is running), "
                        "or retry if AWS had a transient fault", **names)
    if isinstance(exc, NoRegionError):
        return AwsError(f"{lead}{NO_REGION}", **names)
    if isinstance(exc, NoCredentialsError):
        return AwsError(f"{lead}{NO_CREDENTIALS}", **names)
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        return EndpointError(f"{lead}no answer in time, on every attempt ({exc}); check --endpoint-url, --region "
                             "and the network, or raise --read-timeout, --connect-timeout or --max-attempts",
                             **names)
    if isinstance(exc, EndpointConnectionError):
        return EndpointError(f"{lead}cannot reach AWS ({exc}); check --endpoint-url, --region and the network",
                             **names)
    if isinstance(exc, BotoCoreError):
        return AwsError(f"{call} failed: {clean_message(str(exc))}", **names)
    return None


@contextmanager
def aws_call(service: str, operation: str) -> Iterator[None]:
    """Run the AWS calls of the ``with`` block, turning a botocore error into an :class:`AwsError`.

    The one way iotpipe calls AWS: ``with aws_call("iot", "describe-thing"): iot.describe_thing(...)``; branch on
    the raised error's ``code`` for an expected failure (``ResourceNotFoundException``).
    """
    try:
        yield
    except Exception as exc:
        error = aws_error(exc, service, operation)
        if error is None:
            raise
        raise error from None


def call_aws(service: str, operation: str, method: Callable[..., T], /, **kwargs: Any) -> T:
    """``method(**kwargs)`` inside :func:`aws_call`."""
    with aws_call(service, operation):
        return method(**kwargs)


def explain_aws_failure(exc: BaseException) -> str | None:
    """A one-line message with what to do for a botocore error that escaped a command; None if not one."""
    error = aws_error(exc)
    return str(error) if error is not None else None


def json_safe(value: Any) -> Any:
    """An AWS response (or part of one) as plain JSON data: timestamps become ISO 8601 text, bytes their size."""

    def fallback(item: Any) -> Any:
        if isinstance(item, datetime):
            return item.isoformat()
        if isinstance(item, bytes | bytearray):
            return len(item)
        return str(item)

    return json.loads(json.dumps(value, default=fallback))


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
