"""Fixtures for the dashboard: the real app served by uvicorn on a free port, and Chromium.

Chromium is Debian's package (``make services`` installs it); Playwright only drives it, its own
browser download is never used.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright
from sqlalchemy.orm import Session

from cloud_api.auth import create_api_key
from cloud_api.config import Settings
from cloud_api.main import create_app
from tests.cloud.helpers import Publisher, wait_until
from tests.services import Mosquitto

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"

# How long `expect` waits for the page to show something: generous on a shared 2-core machine.
expect.set_options(timeout=20_000)


class LiveServer:
    """The real app behind a real HTTP port, as a browser reaches it. ``stop()`` and ``start()``
    again restart it on the same port with a new app, as a replica restarts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self._app: FastAPI | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app(self) -> FastAPI:
        assert self._app is not None, "the server is not started"
        return self._app

    def start(self) -> None:
        """Serve a new app on the port (a free one the first time), bound here: no race for it.

        Streams still open at ``stop()`` are cut after a second, as a crashing replica would.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._app = create_app(self.settings)
        config = uvicorn.Config(
            self._app, log_level="warning", ws="none", lifespan="on", timeout_graceful_shutdown=1
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn")
        self._server, self._thread, self._sock = server, thread, sock
        thread.start()
        wait_until(lambda: server.started or not thread.is_alive(), what="uvicorn to start")
        assert server.started, "uvicorn stopped while starting: see the log above"
        if self._app.state.ingest is not None:
            self._app.state.ingest.wait_connected()

    def stop(self) -> None:
        """Stop serving (lifespan shutdown included); ``start()`` binds the same port again."""
        if self._server is None or self._thread is None or self._sock is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
        assert not self._thread.is_alive(), "uvicorn did not stop"
        self._server = self._thread = self._sock = None

    def session(self) -> Session:
        """A session on the app's own database."""
        session: Session = self.app.state.sessionmaker()
        return session


@contextmanager
def running(settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(settings)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def live_settings(broker: Mosquitto, tmp_path: Path) -> Settings:
    """SQLite, ingest on the session broker (its own session), a quick live stream."""
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'cloud.db'}",
        mqtt_url=broker.url,
        ingest_client_id=f"ingest-{uuid.uuid4().hex[:12]}",
        ingest_flush_s=0.01,
        ingest_session_expiry_s=60,
        data_dir=tmp_path,
        stream_poll_s=0.1,
        stream_settle_s=0.2,
        stream_heartbeat_s=1.0,
    )


@pytest.fixture
def live_api(live_settings: Settings) -> Iterator[LiveServer]:
    with running(live_settings) as server:
        yield server


@pytest.fixture
def quiet_api(tmp_path: Path) -> Iterator[LiveServer]:
    """The app without ingest (no broker): enough to load the page and its modules."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'cloud.db'}", ingest_enabled=False, data_dir=tmp_path
    )
    with running(settings) as server:
        yield server


@pytest.fixture
def api_key(live_api: LiveServer) -> str:
    """A real read-scope key in the app's database: what a dashboard is given."""
    with live_api.session() as session:
        return create_api_key(session, name="dashboard-test", scope="read")[1]


@pytest.fixture
def mqtt(broker: Mosquitto) -> Iterator[Publisher]:
    client = Publisher("127.0.0.1", broker.port).connect()
    yield client
    client.close()


# Per module, not per session: while Playwright's sync API is open, its event loop counts as
# running in the main thread, so a later test's asyncio.run() would fail.
@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test` (it installs it) or apt-get chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Traffic:
    """What the page asked for and what it complained about."""

    requests: list[Request] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def on_request(self, request: Request) -> None:
        self.requests.append(request)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def api_calls(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.url.split("?", 1)[0].endswith(path)]


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh browser context (empty localStorage) at a wall-screen size."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1100})
    yield context.new_page()
    context.close()


@pytest.fixture
def traffic(page: Page) -> Traffic:
    record = Traffic()
    page.on("request", record.on_request)
    page.on("console", record.on_console)
    page.on("pageerror", lambda error: record.page_errors.append(str(error)))
    return record
