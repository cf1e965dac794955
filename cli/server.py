"""The API served by uvicorn in a thread of this process: the demo, benchmarks and tests.

``aiot cloud serve`` runs uvicorn in the foreground; here the caller keeps its own main thread
(the demo's live view, a benchmark's clock, a test's assertions) while the real app, lifespan
included, answers HTTP on a real port.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

START_TIMEOUT_S = 30.0


@contextmanager
def serve_in_thread(
    app: FastAPI,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_certfile: Path | None = None,
    ssl_keyfile: Path | None = None,
) -> Iterator[str]:
    """Serve ``app`` until the block ends (port 0: a free one); yields its base URL (https://
    with ``ssl_certfile`` and ``ssl_keyfile``, uvicorn's options of `aiot cloud serve`).

    The app's lifespan has run (database migrated, workers started) when the URL is yielded,
    and its shutdown has finished when the block is left. RuntimeError if it fails to start.
    """
    # Port 0: bind here and hand uvicorn the socket, so no other process can take the port
    # between choosing it and serving on it.
    sockets = [] if port else [_bound(host)]
    port = port or sockets[0].getsockname()[1]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": sockets or None}, name="uvicorn", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start on {host}:{port}: see the log above")
            time.sleep(0.02)
        yield f"{'https' if ssl_certfile else 'http'}://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join()
        for sock in sockets:
            sock.close()


def _bound(host: str) -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio turns Nagle off only on sockets that say they are TCP
    # (``base_events._set_nodelay``), and accepted connections inherit the listener's proto.
    # With proto 0 every response written in two parts (headers, body) waited ~40 ms for the
    # client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock
