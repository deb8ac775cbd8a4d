"""Shared fixtures: fake AWS credentials, and a moto server on a free loopback port.

The library's and the CLI's tests run on moto with iotpipe's ``parity`` and ``api`` patches only
(:data:`iotpipe.local.emulator.moto_compat.LIBRARY_KINDS`): moto made to answer as AWS does, never moto rewritten
for speed. A test of the emulator itself takes ``emulator_patches`` (every kind, undone after the test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from iotpipe.local.emulator import moto_compat

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach AWS: fake credentials and a fixed region for every test."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port for the whole session (parity and api patches); yields its URL."""
    moto_compat.apply(moto_compat.LIBRARY_KINDS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_endpoint(moto_server: str) -> Iterator[str]:
    """The session moto server, reset before each test so tests do not see each other's resources."""
    import urllib.request

    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request) as response:
        response.read()
    yield moto_server


@pytest.fixture
def emulator_patches() -> Iterator[moto_compat.Applied]:
    """Every moto patch, as the emulator of ``iotpipe local`` runs (the speed ones too), undone after the test;
    yields the handle of the patches this fixture added."""
    applied = moto_compat.apply(moto_compat.ALL_KINDS)
    try:
        yield applied
    finally:
        applied.undo()
