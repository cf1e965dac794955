"""What can stop a long-running command from starting, said in one line with the fix.

A busy port, a database that does not answer and a broker that refuses the login are an
operator's mistakes, not the program's: each exits with status 2 and a line naming the
problem and what to change, never a traceback. Imports of either side stay inside the
functions, so a gateway without the cloud's dependencies can run the edge commands.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from shared.tls import TlsFiles
    from shared.urls import MqttUrl

AUTH_REFUSALS = ("bad user name or password", "not authorized", "bad username or password")
"""paho's reason strings for a refused login (MQTT 5 codes 134 and 135, 3.1.1 codes 4 and 5)."""


def fail(problem: str, fix: str) -> NoReturn:
    """Print ``problem: fix`` on stderr and exit with status 2."""
    typer.echo(f"{problem}: {fix}", err=True)
    raise typer.Exit(2)


def ensure_port_free(host: str, port: int, *, option: str) -> None:
    """Exit with a line naming ``option`` when something already listens on host:port."""
    if port == 0:
        return
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            fail(
                f"port {port} on {host} is not available ({exc.strerror or exc})",
                f"stop what listens there, or pass {option} with another port",
            )


def database_url_shown(url: str) -> str:
    """The URL without its password, fit for a message."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL)"


def open_database(url: str, *, option: str = "--db") -> Engine:
    """An engine on ``url`` with the schema migrated; exits with one line if it cannot."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from cloud_api.db import create_db_engine, migrate
    from shared.errors import StorageError

    fix = f"check {option} (or $AIOT_DATABASE_URL): is the server running, are the host, "
    fix += "port, user and password right?"
    try:
        engine = create_db_engine(url)
    except (ArgumentError, ValueError) as exc:
        fail(f"invalid database URL {database_url_shown(url)!r} ({exc})", fix)
    try:
        migrate(engine)
    except StorageError as exc:
        engine.dispose()
        reason = str(getattr(exc.__cause__, "orig", None) or exc.__cause__ or exc).strip()
        first = reason.splitlines()[0] if reason else "no reason given"
        fail(f"cannot use the database {database_url_shown(url)}: {first}", fix)
    except SQLAlchemyError as exc:  # connecting fails before migrate translates it
        engine.dispose()
        fail(f"cannot use the database {database_url_shown(url)}: {exc}", fix)
    return engine


def wait_for_broker(
    connected: Callable[[], bool],
    refusal: Callable[[], str | None],
    *,
    where: str,
    option: str,
    stop: Callable[[], bool],
    timeout_s: float = 30.0,
) -> bool:
    """Wait until connected; exit with one line if the broker refuses the login.

    False if ``stop`` says to stop first, or the broker does not answer in ``timeout_s``
    (the caller keeps retrying in the background: a broker may come up later).
    """
    deadline = time.monotonic() + timeout_s
    while not stop() and time.monotonic() < deadline:
        if connected():
            return True
        reason = refusal()
        if reason is not None and reason.lower() in AUTH_REFUSALS:
            fail(
                f"the broker {where} refused the login ({reason})",
                f"check the user name and password in {option} against the broker's "
                "password file (aiot cloud broker-config)",
            )
        time.sleep(0.05)
    return False


def check_broker_login(
    broker: MqttUrl, protocol: str, *, tls: TlsFiles | None, option: str, timeout_s: float = 10.0
) -> None:
    """Exit with one line if the broker refuses this login (``broker`` with its password
    resolved, over ``tls`` for mqtts://). A broker that does not answer is not an error here:
    the workers connect in the background and retry until it does."""
    from typing import Any

    from cloud_api.mqtt import make_client

    answered = threading.Event()
    refusals: list[str] = []

    def on_connect(_client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            refusals.append(str(reason))
        answered.set()

    client_id = f"aiot-login-{uuid.uuid4().hex[:8]}"
    client = make_client(broker, tls=tls, client_id=client_id, protocol=protocol)
    client.on_connect = on_connect
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except OSError:
        return
    client.loop_start()
    try:
        answered.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    if refusals and refusals[0].lower() in AUTH_REFUSALS:
        fail(
            f"the broker {broker.host}:{broker.port} refused the login ({refusals[0]})",
            f"check the user name and password in {option} against the broker's password "
            "file (aiot cloud broker-config)",
        )
