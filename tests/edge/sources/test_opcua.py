"""The opcua source: node ids, sign-in, an unknown node, and a real asyncua server (its own
process) that is read, windowed, killed and started again."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.ua.status_codes import StatusCodes
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import ValidationError

from edge_agent.sources.opcua import OpcuaSource, OpcuaSourceConfig
from edge_agent.sources.windows import WindowConfig
from tests.edge.sources.collect import Collector
from tests.edge.sources.servers import ServerProcess
from tests.services import free_port

COUNTER, TEMP = "ns=2;s=Machine.Counter", "ns=2;s=Machine.Temp"


def config(**keys: Any) -> OpcuaSourceConfig:
    keys.setdefault("endpoint", f"opc.tcp://127.0.0.1:{free_port()}/aiot/")
    keys.setdefault("channels", {"counter": COUNTER})
    return OpcuaSourceConfig.model_validate({"type": "opcua", **keys})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"channels": {"temp": "Machine.Temp!"}}, "temp: 'Machine.Temp!' is not a node id"),
        ({"endpoint": "http://plc:4840"}, "endpoint"),
        ({"password_file": "pw.txt"}, "password_file: give the username"),
        ({"certificate": "client.pem"}, "certificate and private_key go together"),
        ({"server_certificate": "server.der"}, "server_certificate: for a secure channel"),
        ({"security_mode": "None"}, "security_mode"),
        ({"sampling_interval_ms": -1}, "sampling_interval_ms"),
        ({"node": "ns=2;i=1"}, "node"),
    ],
)
def test_bad_keys_are_refused_by_name(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**keys)


def test_file_keys_are_relative_to_the_config_file(tmp_path: Path) -> None:
    loaded = OpcuaSourceConfig.model_validate(
        {"type": "opcua", "endpoint": "opc.tcp://plc:4840", "channels": {"t": TEMP},
         "username": "edge", "password_file": "secrets/opcua.pw",
         "certificate": "pki/client.pem", "private_key": "pki/client.key"},
        context={"base_dir": tmp_path},
    )  # fmt: skip
    assert loaded.password_file == tmp_path / "secrets/opcua.pw"
    assert loaded.certificate == tmp_path / "pki/client.pem"


SOURCE_TIME = ua.DateTime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
SERVER_TIME = ua.DateTime(2026, 11, 22, 10, 0, 1)  # naive: asyncua's DateTime is UTC


def change(source: OpcuaSource, column: int, value: Any, status: int = 0) -> None:
    data = ua.DataValue(
        ua.Variant(value), ua.StatusCode(ua.UInt32(status)), SourceTimestamp=SOURCE_TIME,
        ServerTimestamp=SERVER_TIME,
    )  # fmt: skip
    source.on_change(column, value, data)


def first_batch(source: OpcuaSource) -> list[tuple[float, list[float]]]:
    """The first batch ``readings()`` yields (its client finds no server: nothing listens)."""
    stop = threading.Event()
    readings = source.readings(stop)
    batch = next(readings)
    stop.set()
    assert next(readings, None) is None  # the source stops: its client thread is joined
    return list(zip(batch.ts.tolist(), batch.values.tolist(), strict=True))


@pytest.mark.parametrize(
    ("timestamps", "expected"),
    [("source", SOURCE_TIME.timestamp()), ("server", SOURCE_TIME.timestamp() + 1),
     ("arrival", 123.0)],
)  # fmt: skip
def test_a_change_is_a_reading_of_one_channel_at_the_chosen_time(
    timestamps: str, expected: float
) -> None:
    source = OpcuaSource(
        config(channels={"a": COUNTER, "b": TEMP}, timestamps=timestamps, max_delay_s=0),
        wall_clock=lambda: 123.0,
    )
    change(source, 1, 21.5)
    [(ts, values)] = first_batch(source)
    assert ts == expected
    assert values[1] == 21.5
    assert values[0] != values[0]  # NaN: a changes nothing


def test_a_bad_status_or_a_value_that_is_no_number_is_a_bad_reading() -> None:
    source = OpcuaSource(config(channels={"a": COUNTER}))
    change(source, 0, 1.0, status=StatusCodes.BadSensorFailure)
    change(source, 0, "press 3")
    change(source, 0, float("inf"))
    assert dict(source.health.bad) == {"status": 1, "unparseable": 2}


# -- against a real asyncua server --------------------------------------------------------


def start(tmp_path: Path, *args: str) -> Iterator[ServerProcess]:
    server = ServerProcess("tests.edge.sources.opcua_server", tmp_path, args=args)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def plc(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from start(tmp_path)


@pytest.fixture
def locked_plc(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from start(tmp_path, "edge", "s3cret")


def endpoint(server: ServerProcess) -> str:
    return f"opc.tcp://127.0.0.1:{server.port}/aiot/"


@pytest.mark.integration
def test_nodes_are_read_and_windowed_and_an_unknown_node_is_named(
    plc: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    channels = {"counter": COUNTER, "ghost": "ns=2;s=Machine.Nope", "temp": TEMP}
    source = OpcuaSource(config(endpoint=endpoint(plc), channels=channels, sampling_interval_ms=50))
    window = WindowConfig(size=10, rate_hz=20, channels=["counter", "temp"])
    with Collector(source, window) as run:
        run.wait_for(lambda: len(run.windows) >= 2)
    assert source.failed_nodes == {"ghost": "BadNodeIdUnknown"}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("node ns=2;s=Machine.Nope (channel ghost) cannot be read" in m for m in errors)
    counters = [v for v in run.values[:, 0].tolist() if v == v]
    assert counters == sorted(counters)
    assert len(counters) >= 10
    window_data = run.windows[-1].data
    # The server keeps temp = 20 + counter / 10: the window's two rows agree.
    assert window_data[1] == pytest.approx(20 + window_data[0] / 10, abs=0.11)
    assert source.health.gaps == 0


@pytest.mark.integration
def test_a_username_and_a_password_from_a_file_sign_in(
    locked_plc: ServerProcess, tmp_path: Path
) -> None:
    password = tmp_path / "opcua.pw"
    password.write_text("s3cret\n")
    source = OpcuaSource(
        config(endpoint=endpoint(locked_plc), username="edge", password_file=password)
    )
    with Collector(source) as run:
        run.wait_for(lambda: len(run.ts) >= 3)
    assert source.health.gaps == 0


@pytest.mark.integration
def test_a_wrong_password_is_a_lost_link_not_a_crash(
    locked_plc: ServerProcess, tmp_path: Path
) -> None:
    password = tmp_path / "opcua.pw"
    password.write_text("guess")
    source = OpcuaSource(
        config(endpoint=endpoint(locked_plc), username="edge", password_file=password,
               reconnect_min_s=0.2, reconnect_max_s=0.2)
    )  # fmt: skip
    with Collector(source) as run:
        run.wait_for(lambda: source.health.gaps == 1)
    assert run.ts == []


def restarted(counters: list[float]) -> bool:
    """The counter went down, then up three times: the new server is being read."""
    drop = next((i for i in range(1, len(counters)) if counters[i] < counters[i - 1]), None)
    return drop is not None and len(counters) - drop >= 3


@pytest.mark.integration
def test_a_server_that_disappears_is_a_gap_and_reading_resumes(
    plc: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    source = OpcuaSource(
        config(endpoint=endpoint(plc), sampling_interval_ms=50, watchdog_s=0.2, timeout_s=1,
               reconnect_min_s=0.2, reconnect_max_s=0.5)
    )  # fmt: skip
    with caplog.at_level(logging.INFO), Collector(source) as run:
        run.wait_for(lambda: len(run.ts) >= 3)
        plc.kill()
        run.wait_for(lambda: source.health.gaps == 1)
        plc.start()  # a new process: its counter starts again from 1
        run.wait_for(lambda: restarted(run.values[:, 0].tolist()), timeout=20)
    assert source.health.gaps == 1
    assert source.health.is_connected
    name = f"source opcua {endpoint(plc)}"
    messages = [r.getMessage() for r in caplog.records if r.name == "edge_agent.sources.readings"]
    assert len([m for m in messages if m.startswith(f"{name}: lost ")]) == 1
    assert [m for m in messages if m.endswith(" again")] == [f"{name}: connected again"]


@pytest.fixture
def secure_plc(tmp_path: Path) -> Iterator[ServerProcess]:
    workdir = tmp_path / "server"
    workdir.mkdir()
    yield from start(workdir, "secure")


def client_certificate(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "client-key.pem", directory / "client-cert.der"
    asyncio.run(
        setup_self_signed_certificate(
            key, cert, CLIENT_URI, socket.gethostname(),
            [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "aiot edge"},
        )
    )  # fmt: skip
    return cert, key


CLIENT_URI = "urn:aiot:test:edge"


@pytest.mark.integration
def test_a_certificate_opens_a_signed_and_encrypted_channel(
    secure_plc: ServerProcess, tmp_path: Path
) -> None:
    cert, key = client_certificate(tmp_path)
    source = OpcuaSource(
        config(endpoint=endpoint(secure_plc), certificate=cert, private_key=key,
               application_uri=CLIENT_URI, security_mode="SignAndEncrypt")
    )  # fmt: skip
    with Collector(source) as run:
        run.wait_for(lambda: len(run.ts) >= 3)
    assert source.health.gaps == 0


@pytest.mark.integration
def test_without_a_certificate_a_secure_only_server_is_a_lost_link(
    secure_plc: ServerProcess,
) -> None:
    source = OpcuaSource(config(endpoint=endpoint(secure_plc), reconnect_min_s=0.2))
    with Collector(source) as run:
        run.wait_for(lambda: source.health.gaps == 1)
    assert run.ts == []
