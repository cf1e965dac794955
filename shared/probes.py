"""The HTTP side of a process without an API: ``/metrics`` and the probes on its own port.

The edge agent (its local exporter) and the cloud's stand-alone workers (``aiot cloud
ingest``, ``aiot cloud escalations``) answer Prometheus and the liveness and readiness
probes of systemd and Kubernetes the same way, so the server is written once, here:
``/metrics`` from the process's own registry (its own values, even where the API sets
``PROMETHEUS_MULTIPROC_DIR``), ``/livez`` and ``/readyz`` from checks that return None while
healthy, else the reason (the probe answers 503 with it), 404 for any other path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

Check = Callable[[], str | None]
"""A probe's check: None while healthy, else the reason it is not."""

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes are not worth a log line each."""


def probe_app(registry: CollectorRegistry, checks: dict[str, Check]) -> WsgiApp:
    """A WSGI app: ``/metrics`` from ``registry``; each path of ``checks`` a probe."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        check = checks.get(path)
        problem: str | None
        if check is None:
            status, problem = "404 Not Found", f"/metrics or {', '.join(sorted(checks))}"
        else:
            problem = check()
            status = "200 OK" if problem is None else "503 Service Unavailable"
        body = f"{problem or 'ok'}\n".encode()
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body)))])  # fmt: skip
        return [body]

    return app


class ProbeServer:
    """Serves a registry's ``/metrics`` and the ``/livez`` and ``/readyz`` probes on
    ``host:port`` (port 0: any free one) until ``stop``; ``start`` raises OSError when it
    cannot listen (each side says what to change)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str,
        port: int,
        live: Check = lambda: None,
        ready: Check = lambda: None,
    ) -> None:
        self._app = probe_app(registry, {"/livez": live, "/readyz": ready})
        self._host = host
        self._port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when port 0 asked for any); 0 while not serving."""
        return int(self._server.server_port) if self._server is not None else 0

    def start(self) -> None:
        self._server = make_server(
            self._host, self._port, self._app, ThreadingWSGIServer, handler_class=_Quiet
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probes", daemon=True
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
