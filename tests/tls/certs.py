"""A throwaway PKI for TLS tests, made with ``cryptography``: a CA, a server certificate for
127.0.0.1 and localhost, a client certificate, an expired server certificate, and a second CA
that signed none of them (the "wrong CA")."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files (keys are mode 0600)."""

    ca: Path
    wrong_ca: Path
    server_cert: Path
    server_key: Path
    expired_cert: Path
    expired_key: Path
    client_cert: Path
    client_key: Path
    expired_client_cert: Path
    expired_client_key: Path
    elsewhere_cert: Path
    elsewhere_key: Path
    """A server certificate for elsewhere.example only (the wrong host for 127.0.0.1)."""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


_CA_USAGE = x509.KeyUsage(
    digital_signature=True, key_cert_sign=True, crl_sign=True,
    content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, encipher_only=False, decipher_only=False,
)  # fmt: skip


def _ca(common_name: str) -> tuple[x509.Certificate, Key]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    common_name: str,
    ca: tuple[x509.Certificate, Key],
    *,
    server: bool,
    valid: tuple[dt.datetime, dt.datetime],
    names: tuple[str, ...] = ("localhost", "127.0.0.1"),
) -> tuple[x509.Certificate, Key]:
    key = ec.generate_private_key(ec.SECP256R1())
    ca_cert, ca_key = ca
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_alt_name(name) for name in names]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write(directory: Path, stem: str, pair: tuple[x509.Certificate, Key]) -> tuple[Path, Path]:
    cert, key = pair
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def make_pki(directory: Path) -> Pki:
    """Write every file of the throwaway PKI into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca("aiot test CA")
    wrong = _ca("some other CA")
    now = dt.datetime.now(dt.UTC)
    current = (now - dt.timedelta(days=1), now + dt.timedelta(days=10))
    past = (now - dt.timedelta(days=20), now - dt.timedelta(days=10))
    ca_path, _ = _write(directory, "ca", ca)
    wrong_path, _ = _write(directory, "wrong-ca", wrong)
    server = _write(directory, "server", _leaf("aiot test broker", ca, server=True, valid=current))
    expired = _write(directory, "expired", _leaf("aiot old broker", ca, server=True, valid=past))
    client = _write(directory, "client", _leaf("press-line-3", ca, server=False, valid=current))
    old_client = _write(
        directory, "expired-client", _leaf("press-line-3", ca, server=False, valid=past)
    )
    elsewhere = _write(
        directory,
        "elsewhere",
        _leaf("elsewhere", ca, server=True, valid=current, names=("elsewhere.example",)),
    )
    return Pki(
        ca=ca_path,
        wrong_ca=wrong_path,
        server_cert=server[0],
        server_key=server[1],
        expired_cert=expired[0],
        expired_key=expired[1],
        client_cert=client[0],
        client_key=client[1],
        expired_client_cert=old_client[0],
        expired_client_key=old_client[1],
        elsewhere_cert=elsewhere[0],
        elsewhere_key=elsewhere[1],
    )
