"""The ``mqtt`` source: sensors that already publish on a local broker.

Each channel is a number taken from a message: a JSON field path (``payload.temp``,
``data[0].value``) or ``$``, the whole payload (JSON or a bare number as text), on the
source's topic or a topic of its own. One message gives one reading with the channels it
carries (NaN for the others). Its time is a JSON field (epoch seconds or milliseconds, or
ISO 8601) or the arrival time.

Messages stamped by the sensor may arrive out of order: a reorder buffer holds each for at
most ``max_delay_s`` and releases them in time order; a reading older than one already
released is counted as ``late`` and dropped. A payload without a number where one was
expected is counted as ``unparseable``. A broker that goes away is a gap, logged once;
paho reconnects with backoff, and the recovery is logged once.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as mqtt
from pydantic import Field, field_validator, model_validator

from edge_agent.broker import BrokerConfig
from edge_agent.config_types import StrictConfig
from edge_agent.mqtt_client import make_client
from edge_agent.sources import timestamps
from edge_agent.sources.readings import Readings, SourceHealth
from edge_agent.sources.reorder import Inbox

PathKey = str | int
_STEP = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def parse_path(path: str) -> tuple[PathKey, ...]:
    """``a.b[0].c`` -> ``("a", "b", 0, "c")``; ``$`` -> ``()``; ValueError if malformed."""
    if path == "$":
        return ()
    keys: list[PathKey] = []
    at = 0
    while at < len(path):
        match = _STEP.match(path, at)
        if match is None or (at == 0 and path.startswith(".")):
            raise ValueError(f"{path!r} is not a field path (like payload.temp or data[0].value)")
        name, index = match.groups()
        keys.append(name if name is not None else int(index))
        at = match.end()
    if not keys:
        raise ValueError("an empty field path: use $ for the whole payload")
    return tuple(keys)


class MqttChannelConfig(StrictConfig):
    """Where one channel's number is: a field path, on a topic (the source's by default)."""

    path: str = Field(default="$", description="a JSON field path; $ = the whole payload")
    topic: str | None = Field(default=None, description="default: the source's topic")

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        parse_path(value)
        return value


class MqttSourceConfig(BrokerConfig):
    """Readings from messages on a local broker (URL, ``tls:`` and credentials: see
    ``edge_agent.broker``)."""

    type: Literal["mqtt"]
    topic: str | None = Field(default=None, description="wildcards allowed")
    channels: dict[str, str | MqttChannelConfig] = Field(
        min_length=1, description="channel -> field path, or {path, topic}"
    )
    timestamp: str | None = Field(default=None, description="a field path; unset: arrival time")
    max_delay_s: float = Field(
        default=0.5, ge=0, le=60, description="how long a reading may wait for older ones"
    )
    qos: Literal[0, 1] = 0
    client_id: str | None = None
    keepalive: int = Field(default=30, ge=5, le=65535)
    reconnect_min_s: int = Field(default=1, ge=1)
    reconnect_max_s: int = Field(default=30, ge=1)

    @field_validator("channels")
    @classmethod
    def _check_paths(
        cls, value: dict[str, str | MqttChannelConfig]
    ) -> dict[str, str | MqttChannelConfig]:
        for name, channel in value.items():
            if isinstance(channel, str):
                try:
                    parse_path(channel)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return value

    @field_validator("timestamp")
    @classmethod
    def _check_timestamp(cls, value: str | None) -> str | None:
        if value is not None and parse_path(value) == ():
            raise ValueError("the timestamp is a field of the payload, not $")
        return value

    @model_validator(mode="after")
    def _check_topics(self) -> MqttSourceConfig:
        lost = [n for n, c in self.channels.items() if isinstance(c, str) or c.topic is None]
        if self.topic is None and lost:
            raise ValueError(f"channels {', '.join(lost)} have no topic: give topic")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self

    def channel_paths(self) -> list[tuple[str, str, tuple[PathKey, ...]]]:
        """``(name, topic, path)`` per channel, in order."""
        out = []
        for name, channel in self.channels.items():
            spec = MqttChannelConfig(path=channel) if isinstance(channel, str) else channel
            topic = spec.topic or self.topic
            assert topic is not None  # checked above
            out.append((name, topic, parse_path(spec.path)))
        return out


class _NotANumberError(ValueError):
    """A field holds no number (the message says which and what it holds)."""


_MISSING = object()


def _field(document: Any, path: tuple[PathKey, ...]) -> Any:
    """The value at ``path`` (the document itself for ``$``), or ``_MISSING``."""
    for key in path:
        if isinstance(document, str):  # a payload that is not JSON has no fields
            return _MISSING
        try:
            document = document[key]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return document


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise _NotANumberError(f"{what}: {value[:40]!r} is not a number") from None
    else:
        raise _NotANumberError(f"{what}: {json.dumps(value)[:40]} is not a number")
    if not math.isfinite(number):
        raise _NotANumberError(f"{what}: {value!r} is not a finite number")
    return number


MAX_ROUTES = 4096
"""Topics whose channel match is remembered (a wildcard over many device ids stays bounded)."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one message gave: a reading, ``values`` NaN where the message has no field."""

    ts: float
    values: list[float]


class MessageParser:
    """Turns one message into a reading by the source's channel table; pure."""

    def __init__(self, config: MqttSourceConfig) -> None:
        self._channels = config.channel_paths()
        self._timestamp = parse_path(config.timestamp) if config.timestamp else None
        self._routes: dict[str, list[int]] = {}
        """Topic -> the channels whose subscription it matches (paho's matcher is ~2 us a
        call; a plant's sensors publish on a handful of topics, so each is matched once)."""

    def _channels_of(self, topic: str) -> list[int]:
        route = self._routes.get(topic)
        if route is None:
            route = [
                i
                for i, (_, sub, _) in enumerate(self._channels)
                if mqtt.topic_matches_sub(sub, topic)
            ]
            if len(self._routes) < MAX_ROUTES:
                self._routes[topic] = route
        return route

    def parse(self, topic: str, payload: bytes | bytearray, arrived: float) -> Parsed:
        """A reading; raises _NotANumberError (unparseable) or LookupError (nothing in it)."""
        document: Any = _MISSING
        values = [math.nan] * len(self._channels)
        found = False
        for i in self._channels_of(topic):
            name, _, path = self._channels[i]
            if document is _MISSING:
                document = _decode(payload)
            value = _field(document, path)
            if value is _MISSING:
                continue
            values[i] = _number(value, f"{topic}: channel {name}")
            found = True
        if not found:
            raise LookupError(f"{topic}: no channel's field in {payload[:60]!r}")
        if self._timestamp is None:
            return Parsed(arrived, values)
        return Parsed(self._time(document, topic), values)

    def _time(self, document: Any, topic: str) -> float:
        stamp = _field(document, self._timestamp or ())
        try:
            if isinstance(stamp, str):
                return timestamps.from_text(stamp)
            if isinstance(stamp, int | float) and not isinstance(stamp, bool):
                return timestamps.from_number(float(stamp))
        except ValueError as exc:
            raise _NotANumberError(f"{topic}: timestamp: {exc}") from None
        shown = "missing" if stamp is _MISSING else f"{json.dumps(stamp)[:40]} is not a time"
        raise _NotANumberError(f"{topic}: timestamp {shown}")


def _decode(payload: bytes | bytearray) -> Any:
    """The JSON document, or the payload as text (a bare number that is not JSON: "+3")."""
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return payload.decode("utf-8", "replace").strip()


class MqttSource:
    """Subscribes on ``readings()`` and yields readings in time order until ``stop``."""

    def __init__(
        self, config: MqttSourceConfig, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self._broker = config.broker
        self._parser = MessageParser(config)
        self._topics = sorted({topic for _, topic, _ in config.channel_paths()})
        self.health = SourceHealth(f"mqtt {self._broker} {','.join(self._topics)}")
        self._wall_clock = wall_clock
        # Readings stamped by the sensor may come out of order; arrival times cannot.
        delay = config.max_delay_s if config.timestamp else 0.0
        self._inbox = Inbox(len(config.channels), delay, self.health)
        self._closing = False
        self.subscribed = threading.Event()
        """Set while the broker has acknowledged the subscription (tests and health wait)."""

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.config.channels)

    @property
    def rate_hz(self) -> float | None:
        return None

    def readings(self, stop: threading.Event) -> Iterator[Readings]:
        client = self._client()
        client.connect_async(self._broker.host, self._broker.port, self.config.keepalive)
        self._closing = False
        client.loop_start()
        try:
            yield from self._inbox.drain(stop)
        finally:
            self._closing = True  # our own disconnect is no outage
            client.disconnect()
            client.loop_stop()

    def _client(self) -> mqtt.Client:
        client = make_client(
            self.config.endpoint(),
            tls=self.config.tls_files(),
            client_id=self.config.client_id or "",
            protocol="3.1.1",
            reconnect_min_s=self.config.reconnect_min_s,
            reconnect_max_s=self.config.reconnect_max_s,
        )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    # The callbacks run on paho's network thread: they parse, count and queue, nothing more.

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self.health.disconnected(f"the broker (it refused us: {reason})")
            return
        self.health.connected("connected")
        topics: list[tuple[str, int]] = [(topic, self.config.qos) for topic in self._topics]
        client.subscribe(topics)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], props: Any
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            self.health.disconnected(f"the subscription (refused: {', '.join(refused)})")
        else:
            self.subscribed.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.health.disconnected("the broker (cannot connect)")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.subscribed.clear()
        if not self._closing:
            self.health.disconnected(f"the broker ({reason})")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            parsed = self._parser.parse(message.topic, message.payload, self._wall_clock())
        except _NotANumberError as exc:
            self.health.bad_reading("unparseable", str(exc))
            return
        except LookupError as exc:
            self.health.bad_reading("missing", str(exc))
            return
        self._inbox.put(parsed.ts, parsed.values)


def build(config: MqttSourceConfig) -> MqttSource:
    """The registry's factory for ``type: mqtt``."""
    return MqttSource(config)
