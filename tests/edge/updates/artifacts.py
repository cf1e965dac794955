"""A local HTTP server for model artifacts (stdlib, one thread, 127.0.0.1, a free port).

It answers ``Range: bytes=N-`` with 206 like the cloud API, and can misbehave on purpose:
``fail_next`` requests get a 503, ``cut_next`` responses stop after half their body (the
connection closes with bytes missing), ``ignore_range`` answers 200 with the whole file.
Every request is recorded (path, Range and Authorization headers).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass
class Request:
    path: str
    range: str | None
    authorization: str | None


@dataclass
class ArtifactServer:
    files: dict[str, bytes] = field(default_factory=dict)
    fail_next: int = 0
    cut_next: int = 0
    ignore_range: bool = False
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> ArtifactServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _take(self, what: str) -> bool:
        with self._lock:
            left: int = getattr(self, what)
            if left > 0:
                setattr(self, what, left - 1)
                return True
            return False


def _handler(server: ArtifactServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return  # quiet tests

        def do_GET(self) -> None:
            server.requests.append(
                Request(self.path, self.headers.get("Range"), self.headers.get("Authorization"))
            )
            if server._take("fail_next"):
                self.send_error(503, "try again later")
                return
            body = server.files.get(self.path)
            if body is None:
                self.send_error(404, "no such artifact")
                return
            start, status = 0, 200
            wanted = self.headers.get("Range")
            if wanted and not server.ignore_range:
                start = int(wanted.removeprefix("bytes=").rstrip("-"))
                if start >= len(body):
                    self.send_error(416, "range not satisfiable")
                    return
                status = 206
            part = body[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(part)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            if server._take("cut_next"):
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(part)

    return Handler
