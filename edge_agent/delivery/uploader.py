"""The uploader: a thread that sends spooled samples to ``POST /api/v1/samples`` over HTTP.

It is never in a pipeline's path: it reads the spool oldest first, sends each sample as a
multipart form (its metadata as JSON and its blob) with the agent's HTTP Basic credentials
(the ones model downloads use), and deletes it from the spool only when the cloud says it is
stored: 201, or 200 for a sample it stored before (uploads are idempotent by sample id, so a
resend after a lost answer costs nothing). A sample the cloud refuses for good (a 4xx that
names it: too large, does not decode, another sample's id) is dropped, counted and logged.
Anything else (no network, a 5xx, 401 while credentials are being fixed) waits with a
doubling backoff and tries the same sample again, so an outage only delays uploads.
"""

from __future__ import annotations

import http.client
import logging
import threading
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field

from edge_agent.delivery.spool import Spool, SpoolEntry
from shared.messages import utcnow
from shared.tls import TlsFiles, client_context

log = logging.getLogger(__name__)

SAMPLES_PATH = "/api/v1/samples"
BATCH = 32
IDLE_S = 1.0
"""How long an empty spool waits before it looks again (a written sample wakes it sooner)."""
_REFUSED = frozenset({400, 409, 413, 415, 422})
"""Answers that refuse a sample for good. Not 404: a wrong base URL or an older cloud answers
it to every sample, and dropping them all would lose the spool."""
"""Answers that name a problem of the sample itself: sending it again cannot help."""


@dataclass(slots=True)
class UploadCounters:
    """What the uploader did since the agent started."""

    uploaded: Counter[str] = field(default_factory=Counter)
    """Samples the cloud stored, by pipeline."""
    bytes_uploaded: Counter[str] = field(default_factory=Counter)
    """Blob bytes of those samples, by pipeline."""
    refused: int = 0
    failures: int = 0


@dataclass(frozen=True, slots=True)
class UploadTarget:
    """Where and as whom: the cloud API's base URL and the agent's credentials (the
    ``Authorization`` header model downloads send, ``DownloadPolicy.headers``)."""

    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    tls: TlsFiles | None = None
    """The CA (and client certificate) an https:// API is verified with (``cloud.tls``)."""
    timeout_s: float = 30.0
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0


class Uploader:
    """Drains the spool to the cloud in its own thread until ``stop``."""

    def __init__(self, spool: Spool, target: UploadTarget) -> None:
        self._spool = spool
        self._target = target
        self._url = target.base_url.rstrip("/") + SAMPLES_PATH
        https = self._url.startswith("https://")
        # Built once (a ConfigError naming the file at start-up, as for downloads).
        self._context = (
            client_context(target.tls or TlsFiles(), peer="the cloud API") if https else None
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counters = UploadCounters()
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sample-uploader")
        self._thread.start()

    def stop(self) -> None:
        """End the thread after the request in hand (what is left waits in the spool)."""
        self._stop.set()
        self._spool.arrived.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        backoff = self._target.backoff_s
        while not self._stop.is_set():
            entries = self._spool.oldest(BATCH)
            if not entries:
                self._spool.arrived.clear()
                self._spool.arrived.wait(IDLE_S)
                continue
            if self.upload(entries):
                backoff = self._target.backoff_s
            else:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._target.backoff_max_s)

    def upload(self, entries: list[SpoolEntry]) -> bool:
        """Send ``entries`` in order; False at the first that must be tried again later."""
        for entry in entries:
            if self._stop.is_set():
                return True
            problem = self._send(entry)
            if problem is not None:
                self.counters.failures += 1
                if not self._failing:
                    log.warning("sample upload to %s fails, will retry: %s", self._url, problem)
                    self._failing = True
                return False
            if self._failing:
                log.info("sample uploads work again")
                self._failing = False
        return True

    def _send(self, entry: SpoolEntry) -> str | None:
        """Deliver one sample; None when it has left the spool, else why to retry."""
        try:
            meta, blob = entry.read()
        except FileNotFoundError:  # dropped by the spool's bounds meanwhile
            self._spool.remove(entry)
            return None
        except (OSError, ValueError) as exc:  # unreadable or damaged: it can never be sent
            log.error("sample %s cannot be read, removed: %s", entry.id, exc)
            self.counters.refused += 1
            self._spool.remove(entry)
            return None
        body, content_type = multipart({"meta": meta}, ("blob", blob))
        headers = {"Content-Type": content_type, **self._target.headers}
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self._target.timeout_s, context=self._context
            ) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            if exc.code in _REFUSED:
                self.counters.refused += 1
                log.error("the cloud refused sample %s (HTTP %d): %s", entry.id, exc.code, detail)
                self._spool.remove(entry)
                return None
            return f"HTTP {exc.code}: {detail}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            return str(getattr(exc, "reason", exc)) or type(exc).__name__
        self.counters.uploaded[entry.pipeline] += 1
        self.counters.bytes_uploaded[entry.pipeline] += len(blob)
        self._spool.remove(entry)
        return None


def multipart(fields: dict[str, bytes], file: tuple[str, bytes]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body of text ``fields`` and one file; and its content type."""
    boundary = f"aiot-{uuid.uuid4().hex}-{int(utcnow().timestamp())}"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
            "Content-Type: application/json\r\n\r\n".encode()
        )
        parts.append(value + b"\r\n")
    name, data = file
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    parts.append(data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
