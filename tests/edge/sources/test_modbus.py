"""The modbus source: register maps, byte and word orders, and a real pymodbus TCP server
(its own process) that serves registers, disappears and comes back."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge_agent.sources.modbus import (
    ModbusChannelConfig,
    ModbusSource,
    ModbusSourceConfig,
    decode,
    plan_reads,
)
from edge_agent.sources.windows import WindowConfig
from tests.edge.sources import modbus_server
from tests.edge.sources.collect import Collector
from tests.edge.sources.servers import ServerProcess


def channel(**keys: Any) -> ModbusChannelConfig:
    return ModbusChannelConfig.model_validate(keys)


def config(**keys: Any) -> ModbusSourceConfig:
    keys.setdefault("host", "127.0.0.1")
    keys.setdefault("channels", {"temp": {"address": 0}})
    return ModbusSourceConfig.model_validate({"type": "modbus", **keys})


@pytest.mark.parametrize(
    ("fmt", "value", "keys"),
    [
        ("h", -1234, {"data_type": "int16"}),
        ("H", 65000, {"data_type": "uint16"}),
        ("i", -100000, {"data_type": "int32"}),
        ("I", 4_000_000_000, {"data_type": "uint32"}),
        ("f", 21.5, {"data_type": "float32"}),
        ("f", 3.25, {"data_type": "float32", "word_order": "little"}),
        ("f", -7.5, {"data_type": "float32", "byte_order": "little"}),
        ("f", 1e6, {"data_type": "float32", "byte_order": "little", "word_order": "little"}),
        ("d", 1 / 3, {"data_type": "float64"}),
        ("d", -2.5e-9, {"data_type": "float64", "word_order": "little"}),
        ("I", 123456, {"data_type": "uint32", "byte_order": "little"}),
    ],
)
def test_values_decode_in_every_byte_and_word_order(
    fmt: str, value: float, keys: dict[str, Any]
) -> None:
    order = {k: keys.get(k, "big") for k in ("byte_order", "word_order")}
    registers = modbus_server.words(fmt, value, **order)
    assert decode(registers, channel(address=0, **keys)) == pytest.approx(value)


def test_scale_and_offset_apply_after_decoding() -> None:
    got = decode([215], channel(address=0, scale=0.1, offset=-1))
    assert got == pytest.approx(20.5)


def test_the_abcd_orders_name_the_bytes_a_device_sends() -> None:
    # 0x41AC0000 is 21.5 as a big-endian float32: ABCD = 41 AC 00 00.
    abcd, cdab, badc, dcba = [0x41AC, 0x0000], [0x0000, 0x41AC], [0xAC41, 0x0000], [0x0000, 0xAC41]
    assert decode(abcd, channel(address=0, data_type="float32")) == 21.5
    assert decode(cdab, channel(address=0, data_type="float32", word_order="little")) == 21.5
    assert decode(badc, channel(address=0, data_type="float32", byte_order="little")) == 21.5
    dcba_channel = channel(address=0, data_type="float32", byte_order="little", word_order="little")
    assert decode(dcba, dcba_channel) == 21.5


def test_channels_in_consecutive_registers_share_a_read() -> None:
    channels = [
        channel(address=0, data_type="float32"),
        channel(address=2),
        channel(address=5),  # a hole at 3-4: not read
        channel(address=0, register="input"),
        channel(address=6, data_type="float64"),
    ]
    blocks = plan_reads(channels)
    assert [(b.register, b.start, b.count, [c for c, _ in b.channels]) for b in blocks] == [
        ("holding", 0, 3, [0, 1]),
        ("holding", 5, 5, [2, 4]),
        ("input", 0, 1, [3]),
    ]


def test_a_read_never_exceeds_the_request_limit() -> None:
    channels = [channel(address=a, data_type="float64") for a in range(0, 400, 4)]
    blocks = plan_reads(channels, max_read=125)
    assert [b.count for b in blocks] == [124, 124, 124, 28]


@pytest.mark.parametrize(
    ("channels", "message"),
    [
        ({"a": {"address": 10, "data_type": "float32"}, "b": {"address": 11}},
         r"b\.address: uint16 at holding register 11 overlaps a \(float32 at 10\.\.11\)"),
        ({"a": {"address": 0, "data_type": "float64"}, "b": {"address": 1},
          "c": {"address": 3, "data_type": "int16"}},
         r"b\.address: uint16 at holding register 1 overlaps a"),
        ({"a": {"address": 0, "data_type": "float64"}, "b": {"address": 2, "register": "input"},
          "c": {"address": 3, "register": "holding"}},
         r"c\.address: uint16 at holding register 3 overlaps a \(float64 at 0\.\.3\)"),
        ({"a": {"address": 65535, "data_type": "float32"}},
         r"address: float32 takes 2 registers, and from 65535 that runs past"),
        ({"a": {"address": 0, "data_type": "float16"}}, "data_type"),
        ({"a": {"address": 0, "byte_order": "middle"}}, "byte_order"),
        ({}, "channels"),
    ],
)  # fmt: skip
def test_a_register_map_that_does_not_fit_is_refused_naming_the_key(
    channels: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        config(channels=channels)


def test_the_same_address_in_holding_and_input_registers_is_fine() -> None:
    config(channels={"a": {"address": 0}, "b": {"address": 0, "register": "input"}})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"host": None}, "exactly one of host"),
        ({"serial_port": "/dev/ttyUSB0"}, "exactly one of host"),
        ({"baudrate": 19200}, "baudrate: for serial_port"),
        ({"host": None, "serial_port": "/dev/ttyUSB0", "port": 5020}, "port: for host"),
        ({"unit_id": 256}, "unit_id"),
        ({"rate_hz": 0}, "rate_hz"),
        ({"reconnect_min_s": 5, "reconnect_max_s": 1}, "reconnect_max_s"),
    ],
)
def test_bad_link_keys_are_refused_by_name(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**keys)


def test_an_rtu_link_takes_serial_settings() -> None:
    rtu = config(host=None, serial_port="/dev/ttyUSB0", baudrate=19200, parity="E")
    assert rtu.where == "modbus rtu /dev/ttyUSB0 unit 1"


# -- against a real pymodbus server -------------------------------------------------------


@pytest.fixture
def device(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess("tests.edge.sources.modbus_server", tmp_path)
    server.start()
    yield server
    server.kill()


DEVICE_MAP = {
    "pressure": {"address": 0, "data_type": "int16", "scale": 0.01},
    "temp": {"address": 1, "data_type": "float32"},
    "flow": {"address": 3, "data_type": "float32", "word_order": "little"},
    "energy": {"address": 5, "data_type": "uint32", "byte_order": "little"},
    "reads": {"address": 7, "data_type": "float64"},
    "oil": {"address": 11, "scale": 0.1},
    "level": {"address": 0, "register": "input"},
    "torque": {"address": 1, "register": "input", "data_type": "int32"},
}


@pytest.mark.integration
def test_registers_are_polled_decoded_and_windowed(device: ServerProcess) -> None:
    source = ModbusSource(config(port=device.port, rate_hz=50, channels=DEVICE_MAP))
    with Collector(source, WindowConfig(size=5, channels=["reads", "temp"])) as run:
        run.wait_for(lambda: len(run.windows) >= 2)
    first = run.values[0]
    assert first[:4].tolist() == pytest.approx([-12.34, 21.5, 3.25, 123456])
    assert first[5:].tolist() == pytest.approx([21.5, 42, -100000])
    reads = run.values[:, 4].tolist()
    assert reads == sorted(reads)
    assert len(set(reads)) == len(reads)  # every poll a fresh read of the device
    assert run.windows[0].data[1].tolist() == [21.5] * 5
    assert source.health.snapshot()["readings"] == len(reads)
    assert source.health.gaps == 0


@pytest.mark.integration
def test_an_address_the_device_refuses_is_a_bad_reading_and_the_rest_is_read(
    device: ServerProcess,
) -> None:
    channels = {"temp": {"address": 1, "data_type": "float32"}, "ghost": {"address": 500}}
    source = ModbusSource(config(port=device.port, rate_hz=50, channels=channels))
    with Collector(source) as run:
        run.wait_for(lambda: len(run.ts) >= 3)
    assert run.values[0, 0] == 21.5
    assert run.values[0, 1] != run.values[0, 1]  # NaN: not read
    assert source.health.bad["refused"] >= 3


@pytest.mark.integration
def test_a_device_that_disappears_is_a_gap_and_polling_resumes(
    device: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    source = ModbusSource(
        config(port=device.port, rate_hz=20, reconnect_min_s=0.1, reconnect_max_s=0.2,
               channels={"reads": {"address": 7, "data_type": "float64"}})
    )  # fmt: skip
    with caplog.at_level(logging.INFO), Collector(source) as run:
        run.wait_for(lambda: len(run.ts) >= 3)
        device.kill()
        run.wait_for(lambda: source.health.gaps == 1)
        before = len(run.ts)
        device.start()  # a new process: its read counter starts again
        run.wait_for(lambda: len(run.ts) >= before + 3)
    assert source.health.gaps == 1
    assert source.health.missed >= 1
    assert source.health.is_connected
    messages = [r.getMessage() for r in caplog.records if r.name == "edge_agent.sources.readings"]
    name = f"source modbus tcp://127.0.0.1:{device.port} unit 1"
    lost = [m for m in messages if ": lost " in m]
    assert len(lost) == 1  # once, however many reconnection attempts failed
    assert lost[0].startswith(f"{name}: lost the connection (")
    assert [m for m in messages if m.endswith(" again")] == [f"{name}: connected again"]
