"""Errors the library raises; the CLI maps them to exit codes (2 for usage/config, 1 for operations)."""

from __future__ import annotations


class IotpipeError(Exception):
    """Base of every error iotpipe raises on purpose; its message is meant for the user."""

    exit_code = 1


class ConfigError(IotpipeError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""

    exit_code = 2


class ParameterError(ConfigError):
    """An argument of a library function is not allowed; ``parameter`` names it (the CLI names its flag instead).

    The message reads ``limit=0 is out of range; use 1 to 1000``: the parameter, the value given and ``problem``
    (what is wrong and what is allowed).
    """

    def __init__(self, parameter: str, value: object, problem: str) -> None:
        super().__init__(f"{parameter}={value!r} {problem}")
        self.parameter = parameter
        self.value = value
        self.problem = problem

    def for_option(self, flag: str) -> ConfigError:
        """The same error as a command-line user should read it: ``--limit 0 is out of range; ...``."""
        return ConfigError(f"{flag} {self.value} {self.problem}")


class TemplateError(IotpipeError):
    """A template could not be read or is not a CloudFormation template."""

    exit_code = 2


class BlueprintError(IotpipeError):
    """A ``--blueprint`` could not be loaded, failed, or returned something other than a Composition."""

    exit_code = 2


class LintError(IotpipeError):
    """A template has lint findings that block the requested operation."""


class AwsError(IotpipeError):
    """An AWS call failed; the message names the call, the reason and what to do.

    ``service`` and ``operation`` name the call (empty when the error is not about one call), ``code`` is AWS's
    error code (``ResourceNotFoundException``; empty for credential, endpoint and parse failures) and
    ``aws_message`` AWS's own message, so callers can branch on the code without parsing the text.
    """

    def __init__(self, message: str, *, service: str = "", operation: str = "", code: str = "",
                 aws_message: str = "") -> None:
        super().__init__(message)
        self.service = service
        self.operation = operation
        self.code = code
        self.aws_message = aws_message


class DeployError(IotpipeError):
    """A stack operation failed or was refused."""


class LocalError(IotpipeError):
    """``iotpipe local`` could not start, find or stop a part of the local pipeline."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
