"""The AWS name rules a config must follow: environment, stack, region, tag, parameter and price names."""

from __future__ import annotations

import math
import re
from typing import Any

from iotpipe.config.fields import FieldError
from iotpipe.errors import ConfigError

ENV_NAME_PATTERN = re.compile(r"^[a-z0-9]{1,20}$")
# CloudFormation's stack name pattern (CreateStack StackName).
STACK_NAME_PATTERN = re.compile(r"^[a-zA-Z][-a-zA-Z0-9]{0,127}$")
# AWS region names: us-east-1, eu-central-2, us-gov-west-1, cn-north-1, us-iso-east-1, us-isob-east-1.
REGION_PATTERN = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")


TAG_VALUE_PATTERN = re.compile(r"^[\w .:/=+\-@]*$")
MAX_TAG_KEY_LENGTH = 128
MAX_TAG_VALUE_LENGTH = 256
TAG_KEY_PATTERN = re.compile(r"^[\w .:/=+\-@]{1,128}$")
PARAMETER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9]{1,255}$")
# Key ARNs only (not aliases): IAM grants on the key are scoped to its ARN.
KMS_KEY_PATTERN = re.compile(r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+)?$")
EMAIL_PATTERN = re.compile(r"^([^@\s]+@[^@\s]+\.[^@\s]+)?$")


PRICE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def check_env_name(env: Any) -> str:
    """``env`` if it can name an environment (it goes into bucket and stack names), else ConfigError."""
    if not isinstance(env, str) or not ENV_NAME_PATTERN.fullmatch(env):
        raise FieldError("env", f"{env!r} is not a valid environment name; use 1-20 lowercase letters or digits "
                                "(it becomes part of bucket and stack names)")
    return env


def _price_problem(service: Any, item: Any, value: Any) -> str | None:
    if not (isinstance(service, str) and isinstance(item, str) and PRICE_NAME_PATTERN.fullmatch(service)
            and PRICE_NAME_PATTERN.fullmatch(item)):
        return "price names are lowercase words as in the price table (e.g. [prices.dynamodb] " \
               "write_request_units = 0.625)"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return f"{value!r} is not a price; give USD per unit as a number >= 0"
    return None


def validate_region(region: str, what: str = "--region") -> str:
    """``region`` if it looks like an AWS region name, else ConfigError (exit 2) before any AWS call."""
    if not REGION_PATTERN.fullmatch(region):
        raise ConfigError(f"{what} {region!r} is not an AWS region name (e.g. us-east-1, eu-central-1)")
    return region


def validate_stack_name(name: str, what: str = "stack_name") -> str:
    """``name`` if CloudFormation accepts it as a stack name, else ConfigError."""
    if not STACK_NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{what}: {name!r} is not a CloudFormation stack name; use a letter followed by up to "
                          "127 letters, digits or hyphens")
    return name


def validate_tag(key: str, value: str, what: str = "tag") -> tuple[str, str]:
    """A stack tag as CloudFormation and the tagged services accept it, else ConfigError.

    Tags: keys 1-128 characters, values up to 256, and the ``aws:`` prefix is reserved for AWS.
    """
    if not key or len(key) > MAX_TAG_KEY_LENGTH:
        raise ConfigError(f"{what} key {key!r}: use 1 to {MAX_TAG_KEY_LENGTH} characters")
    if key.lower().startswith("aws:"):
        raise ConfigError(f"{what} key {key!r}: the aws: prefix is reserved for AWS; choose another key")
    if not TAG_KEY_PATTERN.fullmatch(key):
        raise ConfigError(f"{what} key {key!r}: use letters, digits, spaces and _ . : / = + - @")
    if not value:
        raise ConfigError(f"{what} {key}: the value is empty; give a value (KEY=VALUE)")
    if len(value) > MAX_TAG_VALUE_LENGTH:
        raise ConfigError(f"{what} {key}: the value has {len(value)} characters; at most {MAX_TAG_VALUE_LENGTH}")
    if not TAG_VALUE_PATTERN.fullmatch(value):
        raise ConfigError(f"{what} {key}: the value may use letters, digits, spaces and _ . : / = + - @")
    return key, value
