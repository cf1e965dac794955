"""The ``modbus`` source: poll a device's registers (Modbus TCP or RTU) at a fixed rate.

Each channel is a value in holding or input registers: ``address``, ``data_type`` (16, 32
or 64 bits: one, two or four registers), ``byte_order`` within a register and
``word_order`` between registers (devices disagree: ABCD, CDAB, BADC, DCBA), then
``value * scale + offset``. A register map whose values overlap, or run past the last
register, is a config error naming the channel's key.

Channels in consecutive registers of one kind are read in one request. A device that
answers with an exception (an illegal address) or not at all (a timeout) gives a bad
reading, counted per reason; a connection that fails is a gap: logged once, retried with
exponential backoff, its recovery logged once and the polls it missed counted.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import Field, field_validator, model_validator
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from edge_agent.config_types import StrictConfig
from edge_agent.sources.backoff import Backoff
from edge_agent.sources.readings import Readings, SourceHealth

DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64"]
FORMATS: dict[str, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "float32": ("f", 2),
    "float64": ("d", 4),
}
"""data type -> (struct format, registers)."""
MAX_READ = 125
"""Registers one read request may return (the Modbus PDU limit)."""
SERIAL_KEYS = frozenset({"baudrate", "bytesize", "parity", "stopbits"})


class ModbusChannelConfig(StrictConfig):
    """Where one channel's value is, and how its registers make a number."""

    address: int = Field(ge=0, le=65535, description="the first register, 0-based")
    # `register` is the key; the attribute cannot be called so (pydantic's BaseModel has one).
    table: Literal["holding", "input"] = Field(default="holding", alias="register")
    data_type: DataType = "uint16"
    byte_order: Literal["big", "little"] = Field(default="big", description="within a register")
    word_order: Literal["big", "little"] = Field(default="big", description="between registers")
    scale: float = 1.0
    offset: float = 0.0

    @property
    def words(self) -> int:
        """Registers the value takes."""
        return FORMATS[self.data_type][1]

    @model_validator(mode="after")
    def _fits(self) -> ModbusChannelConfig:
        if self.address + self.words > 65536:
            raise ValueError(
                f"address: {self.data_type} takes {self.words} registers, and from "
                f"{self.address} that runs past the last register (65535)"
            )
        return self


def check_register_map(channels: dict[str, ModbusChannelConfig]) -> None:
    """Raise ValueError naming the key of a channel whose registers overlap another's."""
    for kind in ("holding", "input"):
        mine = sorted((c.address, n) for n, c in channels.items() if c.table == kind)
        reach, owner = -1, ""  # the last register taken so far, and by which channel
        for address, name in mine:
            if address <= reach:
                other = channels[owner]
                raise ValueError(
                    f"{name}.address: {channels[name].data_type} at {kind} register {address} "
                    f"overlaps {owner} ({other.data_type} at {other.address}..{reach})"
                )
            end = address + channels[name].words - 1
            if end > reach:
                reach, owner = end, name


class ModbusSourceConfig(StrictConfig):
    """A Modbus device polled at ``rate_hz``: TCP (``host``) or RTU (``serial_port``)."""

    type: Literal["modbus"]
    host: str | None = Field(default=None, description="Modbus TCP")
    port: int = Field(default=502, ge=1, le=65535)
    serial_port: str | None = Field(default=None, description="Modbus RTU: /dev/ttyUSB0, ...")
    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    unit_id: int = Field(default=1, ge=0, le=255, description="the device (slave) id")
    rate_hz: float = Field(default=1.0, gt=0, le=1000, description="polls per second")
    timeout_s: float = Field(default=1.0, gt=0, le=60, description="for an answer")
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    channels: dict[str, ModbusChannelConfig] = Field(min_length=1)

    @field_validator("channels")
    @classmethod
    def _check_map(cls, value: dict[str, ModbusChannelConfig]) -> dict[str, ModbusChannelConfig]:
        check_register_map(value)
        return value

    @model_validator(mode="after")
    def _one_link(self) -> ModbusSourceConfig:
        if (self.host is None) == (self.serial_port is None):
            raise ValueError("give exactly one of host (Modbus TCP) and serial_port (RTU)")
        serial = sorted(SERIAL_KEYS & self.model_fields_set)
        if self.host is not None and serial:
            raise ValueError(f"{', '.join(serial)}: for serial_port (RTU) only")
        if self.serial_port is not None and "port" in self.model_fields_set:
            raise ValueError("port: for host (Modbus TCP) only")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self

    @property
    def where(self) -> str:
        if self.host is not None:
            return f"modbus tcp://{self.host}:{self.port} unit {self.unit_id}"
        return f"modbus rtu {self.serial_port} unit {self.unit_id}"


def decode(registers: list[int], channel: ModbusChannelConfig) -> float:
    """A channel's value from its registers (as many as its data type takes)."""
    fmt, words = FORMATS[channel.data_type]
    ordered = registers[:words] if channel.word_order == "big" else registers[:words][::-1]
    raw = b"".join(word.to_bytes(2, channel.byte_order) for word in ordered)
    value: float = struct.unpack(">" + fmt, raw)[0]
    return value * channel.scale + channel.offset


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers from ``start``, and the channels in it."""

    register: Literal["holding", "input"]
    start: int
    count: int
    channels: tuple[tuple[int, ModbusChannelConfig], ...]
    """(column of the reading, channel) pairs."""


def plan_reads(channels: list[ModbusChannelConfig], max_read: int = MAX_READ) -> list[Block]:
    """Channels in consecutive registers of one kind share a request (gaps are not read:
    a device may refuse an address that holds nothing)."""
    blocks: list[Block] = []
    order = sorted(enumerate(channels), key=lambda item: (item[1].table, item[1].address))
    for column, channel in order:
        last = blocks[-1] if blocks else None
        if (
            last is not None
            and last.register == channel.table
            and last.start + last.count == channel.address
            and last.count + channel.words <= max_read
        ):
            blocks[-1] = Block(
                last.register, last.start, last.count + channel.words,
                (*last.channels, (column, channel)),
            )  # fmt: skip
        else:
            blocks.append(
                Block(channel.table, channel.address, channel.words, ((column, channel),))
            )
    return blocks


class Client(Protocol):
    """The part of a pymodbus sync client the source uses."""

    @property
    def connected(self) -> bool: ...
    def connect(self) -> bool: ...
    def close(self) -> None: ...
    def read_holding_registers(self, address: int, *, count: int, device_id: int) -> Any: ...
    def read_input_registers(self, address: int, *, count: int, device_id: int) -> Any: ...


def make_client(config: ModbusSourceConfig) -> Client:
    """A pymodbus sync client for the config's link; no retries: the poll loop decides."""
    # pymodbus logs every failed attempt as an error; SourceHealth logs the transitions.
    logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)
    if config.host is not None:
        return ModbusTcpClient(config.host, port=config.port, timeout=config.timeout_s, retries=0)
    assert config.serial_port is not None  # one of the two, by validation
    return ModbusSerialClient(
        config.serial_port, baudrate=config.baudrate, bytesize=config.bytesize,
        parity=config.parity, stopbits=config.stopbits, timeout=config.timeout_s, retries=0,
    )  # fmt: skip


class _LinkDownError(Exception):
    """The connection failed during a poll."""


class ModbusSource:
    """Polls the config's registers at ``rate_hz``; one reading per poll."""

    def __init__(
        self,
        config: ModbusSourceConfig,
        *,
        client_factory: Callable[[ModbusSourceConfig], Client] = make_client,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.health = SourceHealth(config.where)
        self._blocks = plan_reads(list(config.channels.values()))
        self._client_factory = client_factory
        self._wall_clock = wall_clock
        self._down_since: float | None = None

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.config.channels)

    @property
    def rate_hz(self) -> float:
        return self.config.rate_hz

    def readings(self, stop: threading.Event) -> Iterator[Readings]:
        client = self._client_factory(self.config)
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        period = 1.0 / self.config.rate_hz
        next_poll = time.monotonic()
        try:
            while not stop.is_set():
                if not client.connected and not self._connect(client):
                    stop.wait(backoff.next())
                    next_poll = time.monotonic()
                    continue
                backoff.reset()
                delay = next_poll - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
                # A poll that runs late starts the schedule again: no burst to catch up.
                next_poll = max(next_poll + period, time.monotonic())
                ts = self._wall_clock()
                try:
                    values = self._poll(client)
                except _LinkDownError as exc:
                    client.close()
                    self._lost(str(exc))
                    continue
                if any(v == v for v in values):  # NaN != NaN: at least one value read
                    self.health.ok()
                    yield Readings.one(ts, values)
        finally:
            client.close()

    def _connect(self, client: Client) -> bool:
        if not client.connect():
            self._lost("the connection (cannot connect)")
            return False
        if self._down_since is not None:
            missed = int((time.monotonic() - self._down_since) * self.config.rate_hz)
            self.health.add_missed(missed)
            self._down_since = None
        self.health.connected("connected")
        return True

    def _lost(self, detail: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
        self.health.disconnected(detail)

    def _poll(self, client: Client) -> list[float]:
        values = [float("nan")] * len(self.config.channels)
        unit = self.config.unit_id
        for block in self._blocks:
            read = (
                client.read_holding_registers
                if block.register == "holding"
                else client.read_input_registers
            )
            where = f"{block.register} registers {block.start}..{block.start + block.count - 1}"
            try:
                response = read(block.start, count=block.count, device_id=unit)
            except ConnectionException as exc:
                raise _LinkDownError(f"the connection ({exc})") from None
            except ModbusIOException as exc:
                self.health.bad_reading("timeout", f"{where}: {exc}")
                continue
            except ModbusException as exc:
                self.health.bad_reading("error", f"{where}: {exc}")
                continue
            if response.isError():
                self.health.bad_reading("refused", f"{where}: {response}")
                continue
            registers: list[int] = response.registers
            for column, channel in block.channels:
                offset = channel.address - block.start
                values[column] = decode(registers[offset : offset + channel.words], channel)
        return values


def build(config: ModbusSourceConfig) -> ModbusSource:
    """The registry's factory for ``type: modbus``."""
    return ModbusSource(config)
