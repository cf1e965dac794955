"""TLS for every link that leaves the machine: the one builder of client ``SSLContext``s.

Both sides' paho factories and the edge's HTTPS downloads build their context here, from
``TlsFiles`` (a CA file or the system's CAs, an optional client certificate and key for
mutual TLS, hostname verification on unless turned off). A file that cannot be used is a
ConfigError naming the file and why, before any connection is tried.

A certificate failure is explained by ``explain``: which certificate (the peer's, by its
subject, or our client certificate by its file) and why (expired, another host's, signed by a
CA we do not trust), from OpenSSL's verify code or the peer's TLS alert. paho raises TLS
errors inside its network thread and reports only "connect failed"; a context from
``client_context(files, on_failure=...)`` hands each failure to ``on_failure`` as it happens
(once per series: a repeat of the same failure is not handed again until a connection got
data through).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from shared.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Whom to trust and who we are: ``ca_file`` (None: the system's CAs), an optional client
    certificate ``cert_file`` with its ``key_file``; ``insecure`` turns verification off."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True
    insecure: bool = False


FailureHandler = Callable[[str], None]

INSECURE = (
    "TLS to %s: insecure is set, so no certificate is verified: anyone on the path can read "
    "and change the traffic (set ca_file instead)"
)
"""The warning for ``insecure``, with the peer's name for ``%s`` (a logging format)."""


def client_context(
    files: TlsFiles, *, peer: str = "the server", on_failure: FailureHandler | None = None
) -> ssl.SSLContext:
    """A client context for ``files``; ConfigError naming the file that cannot be used.

    With ``on_failure``, each TLS failure of a connection made with this context is explained
    (``peer`` names the other end: "the broker 127.0.0.1:8883") and handed to it, once per
    series.
    """
    context = _WatchedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if files.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        _load_ca(context, files.ca_file)
        context.check_hostname = files.check_hostname
    if files.cert_file is not None or files.key_file is not None:
        _load_client_cert(context, files)
    context.watch = _Watch(files, peer, on_failure)
    return context


def _load_ca(context: ssl.SSLContext, ca_file: Path | None) -> None:
    if ca_file is None:
        context.load_default_certs()
        return
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except ssl.SSLError:  # an OSError too: first
        raise ConfigError(f"ca_file {ca_file}: holds no PEM certificate") from None
    except OSError as exc:
        raise ConfigError(f"ca_file {ca_file}: cannot read it: {exc.strerror}") from None


def _load_client_cert(context: ssl.SSLContext, files: TlsFiles) -> None:
    if files.cert_file is None or files.key_file is None:
        raise ConfigError("give cert_file and key_file together (a client certificate)")
    for key, path in (("cert_file", files.cert_file), ("key_file", files.key_file)):
        if not path.is_file():
            raise ConfigError(f"{key} {path}: no such file")
    try:
        context.load_cert_chain(str(files.cert_file), str(files.key_file), password=_no_password)
    except OSError as exc:  # ssl.SSLError is an OSError
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise ConfigError(
            f"cert_file {files.cert_file} with key_file {files.key_file}: unusable ({reason}; "
            "PEM files, a key without a passphrase that belongs to the certificate)"
        ) from None


def _no_password() -> str:
    # An encrypted key would make OpenSSL prompt on the terminal; a daemon has none.
    raise ConfigError("the key_file is encrypted: give a key without a passphrase")


_VERIFY_REASONS = {
    9: "is not valid yet",
    10: "has expired",
    18: "is self-signed and not trusted",
    19: "is signed by a CA we do not trust",
    20: "is signed by a CA we do not trust",
    21: "is signed by a CA we do not trust",
    2: "is signed by a CA we do not trust",
    23: "has been revoked",
    26: "is not meant for a TLS server",
    62: "is not valid for this host name",
    64: "is not valid for this IP address",
}
"""OpenSSL's X509_V_ERR_* codes -> what they mean for the peer's certificate."""

_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "wants a client certificate and we sent none "
    "(set cert_file and key_file)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "refused our client certificate {cert}: it has expired",
    "TLSV1_ALERT_UNKNOWN_CA": "refused our client certificate {cert}: it is signed by a CA "
    "the server does not trust",
    "SSLV3_ALERT_BAD_CERTIFICATE": "refused our client certificate {cert}",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "refused our client certificate {cert}",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "refused our client certificate {cert}: it is revoked",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "refused the TLS handshake (no common protocol or "
    "cipher, or a client certificate it wants)",
    "WRONG_VERSION_NUMBER": "does not speak TLS on this port (a plain mqtt:// or http:// port?)",
}
"""A TLS alert or protocol error (``SSLError.reason``) -> what the server did."""

_HANDSHAKE_CUT = (
    "closed the connection in the TLS handshake (a plain mqtt:// or http:// port, or a "
    "server that refused us without saying why: see its log)"
)


def explain(exc: BaseException, *, files: TlsFiles, peer: str, address: tuple[str, int]) -> str:
    """What a TLS error means, naming the certificate and why; ``str(exc)`` if not TLS."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = _VERIFY_REASONS.get(exc.verify_code, f"was refused ({exc.verify_message})")
        trusted = f"ca_file {files.ca_file}" if files.ca_file else "the system's CAs"
        if exc.verify_code in (2, 18, 19, 20, 21):
            reason += f" ({trusted})"
        return f"{peer}'s certificate {_describe_peer(address)} {reason}"
    if isinstance(exc, ssl.SSLError):
        what = _ALERTS.get(exc.reason or "")
        cert = str(files.cert_file) if files.cert_file else "(none)"
        if what is not None:
            return f"{peer} {what.format(cert=cert)}"
        if isinstance(exc, ssl.SSLEOFError):
            return f"{peer} {_HANDSHAKE_CUT}"
        return f"TLS with {peer} failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return f"{peer} did not answer the TLS handshake (a plain mqtt:// or http:// port?)"
    if isinstance(exc, ConnectionError):
        return f"{peer} {_HANDSHAKE_CUT}"
    return str(exc) or type(exc).__name__


def _describe_peer(address: tuple[str, int]) -> str:
    """``"CN=broker (issued by CN=Test CA, valid 2026-01-01 to 2026-02-01)"``: the peer's
    certificate, fetched again without verification (the failed handshake kept none)."""
    try:
        pem = ssl.get_server_certificate(address, timeout=5)
        cert = x509.load_pem_x509_certificate(pem.encode())
    except (OSError, ValueError):
        return f"at {address[0]}:{address[1]}"
    return (
        f"{_name(cert.subject)} (issued by {_name(cert.issuer)}, valid "
        f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} to {cert.not_valid_after_utc:%Y-%m-%d %H:%M}"
        " UTC)"
    )


def _name(name: x509.Name) -> str:
    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={common[0].value!s}" if common else name.rfc4514_string() or "(no name)"


class _Watch:
    """Explains each failure once per series and hands it to the handler."""

    def __init__(self, files: TlsFiles, peer: str, handler: FailureHandler | None) -> None:
        self._files = files
        self._peer = peer
        self._handler = handler
        self._lock = threading.Lock()
        self._last: tuple[str, int] | None = None

    def failed(self, exc: OSError, address: tuple[str, int]) -> None:
        key = (getattr(exc, "reason", None) or type(exc).__name__, getattr(exc, "verify_code", 0))
        with self._lock:
            if key == self._last or self._handler is None:
                return
            self._last = key
        self._handler(explain(exc, files=self._files, peer=self._peer, address=address))

    def worked(self) -> None:
        self._last = None


class _WatchedSocket(ssl.SSLSocket):
    """An SSLSocket that tells its context's watch about TLS errors and the first data."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except OSError as exc:  # SSLError, or a peer that closed or never answered
            self._report(exc)
            self.close()  # paho drops the socket without closing it
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            data = super().recv(buflen, flags)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:  # a TLS 1.3 server refuses a client certificate here
            self._report(exc)
            raise
        if data:
            _watch_of(self.context).worked()
        return data

    def _report(self, exc: OSError) -> None:
        try:
            host, port = self.getpeername()[:2]
        except OSError:
            host, port = self.server_hostname or "?", 0
        _watch_of(self.context).failed(exc, (self.server_hostname or host, port))


class _WatchedContext(ssl.SSLContext):
    sslsocket_class = _WatchedSocket
    watch: _Watch


def _watch_of(context: Any) -> _Watch:
    watch: _Watch = context.watch
    return watch
