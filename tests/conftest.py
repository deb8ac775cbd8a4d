"""Shared fixtures: fake AWS credentials, and a moto server on a free loopback port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto.iot.models import FakeThing
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach AWS: fake credentials and a fixed region for every test."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _thing_payload_as_json(original: Any) -> Any:
    """moto 5.2 expects AttributePayload as a JSON string; CloudFormation takes a mapping."""

    def patched(cls: type, resource_name: str, cloudformation_json: Any, *args: Any, **kwargs: Any) -> Any:
        properties = cloudformation_json.get("Properties", {})
        payload = properties.get("AttributePayload")
        if isinstance(payload, dict):
            attributes = payload.get("Attributes", {})
            properties = {**properties, "AttributePayload": json.dumps({"attributes": attributes})}
            cloudformation_json = {**cloudformation_json, "Properties": properties}
        return original.__func__(cls, resource_name, cloudformation_json, *args, **kwargs)

    return classmethod(patched)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port for the whole session; yields its endpoint URL."""
    patch = pytest.MonkeyPatch()
    for method in ("create_from_cloudformation_json", "update_from_cloudformation_json"):
        patch.setattr(FakeThing, method, _thing_payload_as_json(getattr(FakeThing, method)))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        patch.undo()


@pytest.fixture
def moto_endpoint(moto_server: str) -> Iterator[str]:
    """The session moto server, reset before each test so tests do not see each other's resources."""
    import urllib.request

    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request) as response:
        response.read()
    yield moto_server
