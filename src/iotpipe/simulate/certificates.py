"""Registered devices' TLS credentials, read from the connection files ``iotpipe device register`` writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from iotpipe.devices import validate_thing_name
from iotpipe.errors import ConfigError, ParameterError


@dataclass(frozen=True)
class DeviceCredentials:
    """A registered device's TLS connection, read from the connection file ``device register`` wrote."""

    device_id: str
    endpoint: str
    port: int
    certificate: Path
    private_key: Path
    ca_file: Path | None
    # False for a plain broker (a connection file written for ``iotpipe local``): no TLS, no client certificate.
    tls: bool = True
    # A plain broker's login: ``iotpipe local``'s changes every run, so it is never in the connection file; the
    # caller adds the running one's (see :func:`with_login`).
    username: str | None = None
    password: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON object: device id, endpoint and port, the paths of its files (``caFile`` null: system CAs) and a
        plain broker's login user (whether there is a password, never the password)."""
        return {"deviceId": self.device_id, "endpoint": self.endpoint, "port": self.port,
                "certificate": str(self.certificate), "privateKey": str(self.private_key),
                "caFile": str(self.ca_file) if self.ca_file else None, "tls": self.tls,
                "username": self.username, "passwordSet": self.password is not None}


def with_login(devices: list[DeviceCredentials], broker_url: str, username: str | None,
               password: str | None) -> list[DeviceCredentials]:
    """``devices`` with the login of the plain broker at ``broker_url`` (``mqtt://host:port``) added to those whose
    connection file points at it; the others unchanged."""
    parsed = urlsplit(broker_url)
    return [replace(device, username=username, password=password)
            if not device.tls and (device.endpoint, device.port) == (parsed.hostname, parsed.port) else device
            for device in devices]


def load_cert_dir(cert_dir: str | Path) -> list[DeviceCredentials]:
    """The devices in ``cert_dir``: every ``<id>.json`` connection file with its certificate and key."""
    base = Path(cert_dir)
    if not base.is_dir():
        raise ParameterError(
            "cert_dir", str(base), "is not a directory; register devices first: "
            "iotpipe device register DEVICE_ID --out-dir " + str(base)
        )
    devices = []
    for path in sorted(base.glob("*.json")):
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
            device_id = validate_thing_name(str(settings["clientId"]))
            ca_name = settings.get("caFile")
            credentials = DeviceCredentials(
                device_id=device_id,
                endpoint=str(settings["endpoint"]),
                port=int(settings["port"]),
                certificate=base / settings["certificateFile"],
                private_key=base / settings["privateKeyFile"],
                ca_file=base / ca_name if ca_name else _default_ca(base),
                tls=bool((settings.get("broker") or {}).get("tls", True)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{path} is not a device connection file ({exc}); it is written by iotpipe device register"
            ) from None
        missing = [str(p) for p in (credentials.certificate, credentials.private_key) if not p.exists()]
        if missing:
            raise ConfigError(f"{path}: missing {', '.join(missing)}")
        devices.append(credentials)
    if not devices:
        raise ParameterError(
            "cert_dir", str(base), "has no device connection files (*.json); register devices first"
        )
    return devices


def _default_ca(base: Path) -> Path | None:
    # AWS IoT ATS endpoints chain to Amazon Root CA 1, which system trust stores carry; a local copy wins.
    candidate = base / "AmazonRootCA1.pem"
    return candidate if candidate.exists() else None
