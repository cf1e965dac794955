"""The ``opcua`` source: subscribe to an OPC UA server's nodes (asyncua).

Each channel is a node id (``ns=2;s=Press.Temperature``, ``ns=3;i=1002``) monitored with
``sampling_interval_ms``; the server reports a value when it changes, stamped with its
source time (or the server's, or the arrival time, as ``timestamps`` says). One change is
one reading of one channel (NaN for the others): ``windows.py`` holds or resamples them.
Changes of several nodes may arrive out of source-time order: a reorder buffer puts them
back within ``max_delay_s``.

Sign-in is anonymous, a username with its password read from ``password_file``, and/or a
secure channel with the client's ``certificate`` and ``private_key`` files. A node the
server does not know is logged as an error once, naming the node id; the other nodes keep
being read. asyncua is asyncio: its loop runs in the source's own thread, which
reconnects with exponential backoff (a lost server is one gap, logged once, its recovery
once) and watches the connection by reading the server's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies
from asyncua.ua.uaerrors import UaStringParsingError
from pydantic import Field, field_validator, model_validator

from edge_agent.config_types import FilePath, StrictConfig
from edge_agent.sources.backoff import Backoff
from edge_agent.sources.readings import Readings, SourceHealth
from edge_agent.sources.reorder import Inbox

log = logging.getLogger(__name__)

JOIN_S = 10.0
"""How long stopping waits for the client thread to say goodbye to the server."""


class OpcuaSourceConfig(StrictConfig):
    """Nodes of an OPC UA server, one channel each."""

    type: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://", description="opc.tcp://host:port/path")
    channels: dict[str, str] = Field(min_length=1, description="channel -> node id")
    sampling_interval_ms: float = Field(default=100.0, ge=0, le=3_600_000)
    publishing_interval_ms: float | None = Field(
        default=None, gt=0, le=3_600_000, description="how often changes are sent; = sampling"
    )
    timestamps: Literal["source", "server", "arrival"] = "source"
    max_delay_s: float = Field(default=0.5, ge=0, le=60)
    username: str | None = None
    password_file: FilePath | None = Field(default=None, description="a file with the password")
    certificate: FilePath | None = Field(default=None, description="the client's, .pem or .der")
    private_key: FilePath | None = None
    server_certificate: FilePath | None = Field(
        default=None, description="pin the server's; unset: take the endpoint's"
    )
    security_policy: Literal["Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] = (
        "Basic256Sha256"
    )
    security_mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    application_uri: str | None = Field(
        default=None, description="the client's URI, as written in its certificate"
    )
    timeout_s: float = Field(default=4.0, gt=0, le=600)
    watchdog_s: float = Field(default=1.0, gt=0, le=600, description="how often to check")
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)

    @field_validator("channels")
    @classmethod
    def _node_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for name, node_id in value.items():
            try:
                ua.NodeId.from_string(node_id)
            except UaStringParsingError:
                raise ValueError(
                    f"{name}: {node_id!r} is not a node id (like ns=2;s=Press.Temp or ns=2;i=7)"
                ) from None
        return value

    @model_validator(mode="after")
    def _credentials(self) -> OpcuaSourceConfig:
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file: give the username it belongs to")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        if self.server_certificate is not None and self.certificate is None:
            raise ValueError("server_certificate: for a secure channel (certificate) only")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


def _epoch(when: datetime | None) -> float | None:
    if when is None:
        return None
    if when.tzinfo is None:  # asyncua's DateTime is UTC
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _number(value: Any) -> float | None:
    """A finite float from a node's value, or None when it holds no number."""
    if isinstance(value, bool | int | float) and math.isfinite(value):
        return float(value)
    return None


class _Changes:
    """asyncua's subscription handler: each data change becomes a reading in the inbox.

    One per session: once the session is over (``retired``), a late word from its
    subscription (asyncua reports a lost one after the fact) says nothing about the next.
    """

    def __init__(self, source: OpcuaSource, nodes: dict[ua.NodeId, int]) -> None:
        self._source = source
        self._nodes = nodes
        self.retired = False

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        column = self._nodes.get(node.nodeid)
        if column is not None and not self.retired:
            self._source.on_change(column, val, data.monitored_item.Value)

    def status_change_notification(self, status: Any) -> None:
        if not self.retired:
            self._source.on_status(status)


class OpcuaSource:
    """Yields the subscribed nodes' changes in source-time order until ``stop``."""

    def __init__(
        self, config: OpcuaSourceConfig, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.health = SourceHealth(f"opcua {config.endpoint}")
        self.failed_nodes: dict[str, str] = {}
        """Channel -> why its node cannot be read (the server does not know it, ...)."""
        self._wall_clock = wall_clock
        delay = config.max_delay_s if config.timestamps != "arrival" else 0.0
        self._inbox = Inbox(len(config.channels), delay, self.health)
        self._halt = threading.Event()

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.config.channels)

    @property
    def rate_hz(self) -> float | None:
        return None

    def readings(self, stop: threading.Event) -> Iterator[Readings]:
        halt = self._halt = threading.Event()
        thread = threading.Thread(
            target=asyncio.run, args=(self._run(halt, stop),), name="opcua", daemon=True
        )
        thread.start()
        try:
            yield from self._inbox.drain(stop)
        finally:
            halt.set()
            thread.join(JOIN_S)

    def on_status(self, status: Any) -> None:
        """The server ended or timed out the subscription (not when we stop: that is us)."""
        if not self._halt.is_set():
            code = getattr(getattr(status, "Status", None), "name", status)
            self.health.disconnected(f"the subscription ({code})")

    def on_change(self, column: int, value: Any, data: ua.DataValue) -> None:
        """One reported change (asyncua's thread): into the inbox, or counted as bad."""
        name = self.channels[column]
        status = data.StatusCode
        if status is not None and not status.is_good():
            self.health.bad_reading("status", f"{name}: {status.name}")
            return
        number = _number(value)
        if number is None:
            self.health.bad_reading("unparseable", f"{name}: {value!r:.40} is not a number")
            return
        ts = {
            "source": _epoch(data.SourceTimestamp),
            "server": _epoch(data.ServerTimestamp),
            "arrival": None,
        }[self.config.timestamps]
        row = [math.nan] * len(self.channels)
        row[column] = number
        self._inbox.put(self._wall_clock() if ts is None else ts, row)

    async def _run(self, halt: threading.Event, stop: threading.Event) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        while not (halt.is_set() or stop.is_set()):
            client = await self._client()
            try:
                await self._session(client, lambda: halt.is_set() or stop.is_set(), backoff)
            except Exception as exc:  # the thread must outlive any failure of the link
                if not halt.is_set():
                    self.health.disconnected(f"the server ({type(exc).__name__}: {exc})")
            finally:
                await _quietly(client.disconnect())
            delay = backoff.next()
            while delay > 0 and not (halt.is_set() or stop.is_set()):
                await asyncio.sleep(min(delay, 0.1))
                delay -= 0.1

    async def _client(self) -> Client:
        config = self.config
        client = Client(config.endpoint, timeout=config.timeout_s)
        if config.application_uri is not None:
            client.application_uri = config.application_uri
        if config.username is not None:
            client.set_user(config.username)
        if config.password_file is not None:
            client.set_password(config.password_file.read_text().rstrip("\r\n"))
        if config.certificate is not None and config.private_key is not None:
            await client.set_security(
                getattr(security_policies, f"SecurityPolicy{config.security_policy}"),
                certificate=str(config.certificate),
                private_key=str(config.private_key),
                server_certificate=(
                    str(config.server_certificate) if config.server_certificate else None
                ),
                mode=getattr(ua.MessageSecurityMode, config.security_mode),
            )
        return client

    async def _session(self, client: Client, halted: Callable[[], bool], backoff: Backoff) -> None:
        """One session: connect, then read until ``halted()`` or the link fails."""
        config = self.config
        await client.connect()
        self.health.connected("connected")
        nodes = {ua.NodeId.from_string(n): i for i, n in enumerate(config.channels.values())}
        changes = _Changes(self, nodes)
        try:
            await self._subscribe(client, changes, backoff, halted)
        finally:
            changes.retired = True

    async def _subscribe(
        self, client: Client, changes: _Changes, backoff: Backoff, halted: Callable[[], bool]
    ) -> None:
        """Subscribe every node, then watch the server until ``halted()`` or the link fails."""
        config = self.config
        interval = config.publishing_interval_ms or config.sampling_interval_ms or 100.0
        subscription = await client.create_subscription(interval, changes)
        results = await subscription.subscribe_data_change(
            [client.get_node(node) for node in config.channels.values()],
            sampling_interval=ua.Double(config.sampling_interval_ms),
        )
        self._report_nodes(results)
        backoff.reset()
        next_check = time.monotonic() + config.watchdog_s
        while not halted():
            await asyncio.sleep(0.05)
            if time.monotonic() >= next_check:
                state = client.nodes.server_state.read_value()
                await asyncio.wait_for(state, timeout=config.timeout_s)
                next_check = time.monotonic() + config.watchdog_s

    def _report_nodes(self, results: list[int | ua.StatusCode]) -> None:
        """Log each node the server refused, once; the others are read."""
        for (name, node_id), result in zip(self.config.channels.items(), results, strict=True):
            if isinstance(result, ua.StatusCode):
                if name not in self.failed_nodes:
                    log.error(
                        "source %s: node %s (channel %s) cannot be read: %s; reading the others",
                        self.health.name, node_id, name, result.name,
                    )  # fmt: skip
                self.failed_nodes[name] = result.name
            else:
                self.failed_nodes.pop(name, None)


async def _quietly(step: Any) -> None:
    """Await a goodbye to a server that may be gone; its failure changes nothing."""
    with contextlib.suppress(Exception):  # the link is being dropped anyway
        await asyncio.wait_for(step, timeout=2.0)


def build(config: OpcuaSourceConfig) -> OpcuaSource:
    """The registry's factory for ``type: opcua``."""
    return OpcuaSource(config)
