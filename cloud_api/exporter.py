"""The HTTP side of a worker process: ``/metrics``, ``/livez`` and ``/readyz`` on its own port.

A stand-alone worker (``aiot cloud ingest`` today; the rollout, escalation and training
workers the same way) has no API to answer Prometheus or a Kubernetes probe, so it starts
one of these beside its threads: its own registry, and two checks that return None while
healthy, else the reason (the probe answers 503 with it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import ThreadingWSGIServer

Check = Callable[[], str | None]
"""None while healthy, else why not."""


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes are not worth a log line each."""


class Exporter:
    """Serves a worker's metrics and probes until ``stop``; ``start`` raises OSError when
    the port is taken (the CLI names it and the option to change)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str,
        port: int,
        live: Check,
        ready: Check,
    ) -> None:
        self._registry = registry
        self._checks = {"/livez": live, "/readyz": ready}
        self._host = host
        self._port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (port 0 asks for any free one)."""
        return int(self._server.server_port) if self._server is not None else 0

    def start(self) -> None:
        self._server = make_server(
            self._host, self._port, self._app, ThreadingWSGIServer, handler_class=_Quiet
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="exporter", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        check = self._checks.get(path)
        if check is not None:
            problem = check()
            status = "200 OK" if problem is None else "503 Service Unavailable"
            body, kind = f"{problem or 'ok'}\n".encode(), "text/plain; charset=utf-8"
        elif path == "/metrics":
            # This process's own values, even when PROMETHEUS_MULTIPROC_DIR is set for the API.
            status, body, kind = "200 OK", generate_latest(self._registry), CONTENT_TYPE_LATEST
        else:
            status, body, kind = "404 Not Found", b"/metrics, /livez or /readyz\n", "text/plain"
        start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]
