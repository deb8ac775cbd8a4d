"""Running `iotpipe local` from tests as a user does: the CLI in a subprocess, in a folder of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from iotpipe.local.state import STATE_DIR_VARIABLE

CLI = [sys.executable, "-c", "from iotpipe.cli import main; main()"]
# The detector's state item of each device (docs/contract.md 12): an item of the table, not a reading.
STATE_SORT_KEY = "#detector"


def cli(*args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """``iotpipe ARGS`` in a subprocess, its output captured."""
    return subprocess.run([*CLI, *args], env={**os.environ}, capture_output=True, text=True, timeout=timeout_s,
                          check=False)


def local_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str) -> Iterator[Path]:
    """A project folder with ``config`` as its iotpipe.toml and its own state folder; `local down` at the end."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(STATE_DIR_VARIABLE, str(tmp_path / "state"))
    (tmp_path / "iotpipe.toml").write_text(config)
    yield tmp_path
    subprocess.run([*CLI, "local", "down"], env={**os.environ}, capture_output=True, timeout=30, check=False)


def emulator_client(info: dict[str, Any], service: str) -> Any:
    """A boto3 client of the run ``local up --output json`` described, with its access key (the only one the
    emulator takes)."""
    return boto3.client(service, endpoint_url=info["awsEndpoint"], region_name="us-east-1",
                        aws_access_key_id=info["awsAccessKeyId"], aws_secret_access_key=info["awsSecretAccessKey"])


def stored_readings(info: dict[str, Any], table: str) -> int:
    """Readings in ``table`` of the run ``local up --output json`` described, leaving out the detector's state
    items."""
    dynamodb = emulator_client(info, "dynamodb")
    pages = dynamodb.get_paginator("scan").paginate(TableName=table, Select="COUNT", FilterExpression="sk <> :state",
                                                    ExpressionAttributeValues={":state": {"S": STATE_SORT_KEY}})
    return sum(page["Count"] for page in pages)
