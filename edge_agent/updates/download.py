"""Downloading a model artifact over HTTP: timeout, retries with backoff, resume with Range.

The standard library's urllib is enough (a gateway's edge install stays small). Bytes land
in ``<file>.part``; a later attempt, or the next start of the agent, asks for the rest with
``Range: bytes=N-``. A server that answers 200 instead of 206 sends the whole file, which
then starts again from byte 0. The file gets its final name only when it has every byte.
Errors are translated here into TransportError (the peer) and ContractError (the artifact
is longer than its manifest says). An https:// URL is verified against the policy's TLS files
(``cloud.tls``; the system's CAs without them); a certificate that fails is not retried, and
the error names the certificate and why (``shared.tls.explain``).
"""

from __future__ import annotations

import base64
import http.client
import logging
import re
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from shared.errors import ConfigError, ContractError, TransportError
from shared.tls import TlsFiles, client_context, explain

log = logging.getLogger(__name__)

CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(?:\d+|\*)")
_RETRYABLE_4XX = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class DownloadPolicy:
    """How hard to try: ``tries`` attempts in all, waits of ``backoff_s``, doubling."""

    timeout_s: float = 30.0
    tries: int = 5
    backoff_s: float = 1.0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsFiles | None = None

    def headers(self) -> dict[str, str]:
        if self.username is None:
            return {}
        token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def part_path(dest: Path) -> Path:
    """Where the bytes of ``dest`` collect until the download is complete."""
    return dest.with_name(dest.name + ".part")


def download(
    url: str, dest: Path, *, size: int, policy: DownloadPolicy, stop: threading.Event
) -> None:
    """Fetch ``url`` into ``dest`` (``size`` bytes expected), resuming a partial file.

    Raises TransportError when every attempt failed (or ``stop`` was set), ContractError when
    the server sends more than ``size`` bytes.
    """
    part = part_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    context = _context(url, policy)
    last = ""
    for attempt in range(1, policy.tries + 1):
        try:
            if _attempt(url, part, size, policy, stop, context):
                part.replace(dest)
                return
            last = f"the response ended after {_size(part)} of {size} bytes"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}"
            if exc.code == 416:  # our partial file is not a prefix the server knows
                part.unlink(missing_ok=True)
            elif 400 <= exc.code < 500 and exc.code not in _RETRYABLE_4XX:
                raise TransportError(f"download failed: {last} from {url}") from None
        except TransportError as exc:  # a 206 for other bytes than we asked: start again
            last = str(exc)
            part.unlink(missing_ok=True)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            _refuse_certificate(exc, url, policy)
            last = _describe(exc)
        if stop.is_set():
            raise TransportError(f"download stopped: {last}")
        if attempt < policy.tries:
            log.warning("download of %s, try %d of %d: %s", url, attempt, policy.tries, last)
            if stop.wait(policy.backoff_s * 2 ** (attempt - 1)):
                raise TransportError(f"download stopped: {last}")
    raise TransportError(f"download failed after {policy.tries} tries: {last}")


def _context(url: str, policy: DownloadPolicy) -> ssl.SSLContext | None:
    """The TLS context of an https:// URL (None for http://); TransportError naming the TLS
    file that cannot be used."""
    if not url.startswith("https://"):
        return None
    try:
        return client_context(policy.tls or TlsFiles(), peer="the cloud API")
    except ConfigError as exc:
        raise TransportError(f"download failed: cloud.tls.{exc}") from None


def _refuse_certificate(exc: Exception, url: str, policy: DownloadPolicy) -> None:
    """TransportError naming the certificate, if ``exc`` is a certificate that failed (no
    retry makes it valid)."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ssl.SSLCertVerificationError):
        parts = urlsplit(url)
        address = (parts.hostname or "", parts.port or 443)
        files = policy.tls or TlsFiles()
        why = explain(reason, files=files, peer="the cloud API", address=address)
        raise TransportError(f"download failed: {why}") from None


def _attempt(
    url: str,
    part: Path,
    size: int,
    policy: DownloadPolicy,
    stop: threading.Event,
    context: ssl.SSLContext | None,
) -> bool:
    """One request; True when ``part`` holds ``size`` bytes."""
    have = _size(part)
    if have > size:
        part.unlink()
        have = 0
    if have == size:
        return True
    headers = policy.headers()
    if have:
        headers["Range"] = f"bytes={have}-"
    # The base URL is checked to be http(s) when the config is read (CloudConfig.api_url).
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    with urllib.request.urlopen(  # noqa: S310
        request, timeout=policy.timeout_s, context=context
    ) as response:
        offset = _offset(response, have)
        with part.open("r+b" if offset else "wb") as file:
            file.seek(offset)
            file.truncate()
            written = offset
            while not stop.is_set():
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                if written > size:
                    raise ContractError(
                        f"the artifact at {url} is longer than the {size} bytes of its manifest"
                    )
                file.write(chunk)
    return _size(part) == size


def _offset(response: http.client.HTTPResponse, have: int) -> int:
    """Where the body starts in the file: ``have`` for a matching 206, else 0 (a whole file)."""
    if response.status != 206:
        return 0
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None or int(match.group(1)) != have:
        raise TransportError(
            f"the server answered range {response.headers.get('Content-Range')!r} "
            f"to a request from byte {have}"
        )
    return have


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _describe(exc: Exception) -> str:
    if isinstance(exc, urllib.error.URLError):
        return f"cannot reach the server: {exc.reason}"
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed in the middle of the response"
    return str(exc) or type(exc).__name__
