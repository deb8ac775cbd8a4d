"""The broker's TLS listener: a local CA and a server certificate for the host, kept in ``<workdir>/tls``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iotpipe.local.processes import connect_host


@dataclass(frozen=True)
class TlsFiles:
    """The local CA (devices verify the broker with ``ca_cert``) and the broker's certificate and key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path




CA_DAYS = 825
SERVER_DAYS = 90


def ensure_tls_files(directory: Path, host: str) -> TlsFiles:
    """The local CA (made once, kept in ``directory``) and a fresh server certificate for ``host``.

    The server certificate names ``localhost``, ``127.0.0.1``, ``::1`` and ``host``, so clients can verify the
    broker's name against ``ca.pem``. Keys are EC P-256, written owner-only.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca_key_path = directory / "ca.key"
    now = _utcnow()
    ca_cert = ca_key = None
    if files.ca_cert.exists() and ca_key_path.exists():
        try:
            ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
            loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
            ca_key = loaded if isinstance(loaded, ec.EllipticCurvePrivateKey) else None
        except ValueError:
            ca_cert = ca_key = None
        if ca_cert is not None and ca_cert.not_valid_after_utc < now + _days(SERVER_DAYS):
            ca_cert = None
    if ca_cert is None or ca_key is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _certificate("iotpipe local CA", ca_key, None, None, CA_DAYS, ())
        write_private(ca_key_path, _key_pem(ca_key))
        files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = ("localhost", "127.0.0.1", "::1", connect_host(host), host)
    server_cert = _certificate("iotpipe local broker", server_key, ca_cert, ca_key, SERVER_DAYS, names)
    write_private(files.server_key, _key_pem(server_key))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    return files


def _utcnow() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def _days(days: int) -> Any:
    import datetime as dt

    return dt.timedelta(days=days)


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _certificate(
    common_name: str, key: Any, issuer_cert: Any, issuer_key: Any, days: int, names: tuple[str, ...]
) -> Any:
    """A CA certificate (no issuer: self-signed) or a server certificate for ``names`` signed by the issuer."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iotpipe local")])
    is_ca = issuer_cert is None
    now = _utcnow()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if is_ca else issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _days(1))
        .not_valid_after(now + _days(days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        alt_names: list[x509.GeneralName] = []
        for name in dict.fromkeys(n for n in names if n and n not in ("0.0.0.0", "::")):
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt_names.append(x509.DNSName(name))
        builder = (builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    return builder.sign(key if is_ca else issuer_key, hashes.SHA256())
