"""Sensor sources plus windowing, each against a bare baseline measured in the same run.

* **csv** (``bench_sources``): readings/s of the ``csv`` source at ``speed: 0`` through the
  windowing stage (``build_source(..., WindowConfig(...)).samples()``) on a generated file
  with a timestamp column, against ``numpy.loadtxt`` of the same file cut into the same
  windows by numpy stride tricks; ``pandas.read_csv`` too when installed.
* **mqtt** (``bench_sources``): a publisher in its own process sends N readings as fast as
  it can to a real Mosquitto; readings/s received and windowed by the ``mqtt`` source, from
  the moment the publisher is told to go until the last window is cut, against a bare paho
  subscriber receiving and ``json.loads``-ing the same messages. Alternated round by round.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import multiprocessing
import multiprocessing.connection
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as mqtt
from numpy.lib.stride_tricks import sliding_window_view
from paho.mqtt.enums import CallbackAPIVersion

from bench.result import Goal, Result
from cli.broker import MosquittoProcess
from edge_agent.sources.csv import CsvSourceConfig
from edge_agent.sources.mqtt import MqttSource, MqttSourceConfig
from edge_agent.sources.registry import build_source
from edge_agent.sources.windows import WindowConfig, WindowedSource

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

CHANNELS = ("a", "b", "c", "d")
RATE_HZ = 1000.0
SIZE, HOP = 128, 64
CSV_ROWS, CSV_ROUNDS = 500_000, 5
MQTT_READINGS = SIZE + 468 * HOP  # 30 080: the last reading completes the last window
MQTT_ROUNDS = 3
MQTT_MAX_DELAY_S = 0.05  # the reorder buffer's wait: the last readings leave this late


def signals(rows: int, channels: int, seed: int, rate_hz: float = RATE_HZ) -> F64:
    """``[rows, channels]`` of sines at different frequencies plus noise (a running machine)."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)[:, np.newaxis] / rate_hz
    freqs = 7.0 + 13.0 * np.arange(channels)
    values: F64 = np.sin(2 * np.pi * freqs * t) + 0.1 * rng.standard_normal((rows, channels))
    return values


def stride_windows(values: F64, size: int = SIZE, hop: int = HOP) -> F32:
    """``[N, C]`` readings -> ``[B, C, size]`` float32 windows every ``hop``, materialised."""
    by_channel = np.ascontiguousarray(values.T, dtype=np.float32)
    view = sliding_window_view(by_channel, size, axis=1)[:, ::hop]  # [C, B, size]
    return np.ascontiguousarray(view.transpose(1, 0, 2))


def write_csv(path: Path, rows: int) -> None:
    """A CSV with a time column ``t`` (seconds, 1 kHz from 0) and the four channels."""
    values = signals(rows, len(CHANNELS), seed=1)
    table = np.column_stack((np.arange(rows) / RATE_HZ, values))
    np.savetxt(path, table, fmt="%.6f", delimiter=",", header=",".join(("t", *CHANNELS)),
               comments="")  # fmt: skip


def csv_source_windows(path: Path) -> tuple[float, list[F32]]:
    """Seconds to read ``path`` through the ``csv`` source and the windowing stage; the
    windows. The time column makes the rate unknown to the source: the window resamples
    to ``RATE_HZ`` (the file's own rate, so every reading is one column)."""
    start = time.perf_counter()
    config = CsvSourceConfig.model_validate(
        {"type": "csv", "path": str(path), "timestamp": "t", "speed": 0}
    )
    source = build_source(config, WindowConfig(size=SIZE, hop=HOP, rate_hz=RATE_HZ))
    windows = [np.asarray(x.data, np.float32) for x in source.samples(threading.Event())]
    return time.perf_counter() - start, windows


def loadtxt(path: Path) -> F64:
    table: F64 = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    return table


def pandas_read_csv(path: Path) -> F64:
    table: F64 = importlib.import_module("pandas").read_csv(path, dtype=np.float64).to_numpy()
    return table


def baseline_windows(path: Path, read: Callable[[Path], F64]) -> tuple[float, F32]:
    """Seconds to read the whole file with ``read`` and cut the same windows with numpy."""
    start = time.perf_counter()
    windows = stride_windows(read(path)[:, 1:])
    return time.perf_counter() - start, windows


def _same_windows(source: list[F32], baseline: F32) -> None:
    """The comparison is fair only if both sides cut the same windows."""
    if len(source) != len(baseline) or not (
        np.allclose(source[0], baseline[0], atol=1e-5)
        and np.allclose(source[-1], baseline[-1], atol=1e-5)
    ):
        raise AssertionError(f"csv source cut {len(source)} windows, numpy {len(baseline)}")


def csv_results(workdir: Path) -> list[Result]:
    """Against numpy.loadtxt (the goal the issue sets) and, when installed, pandas.read_csv
    (the fastest common reader; it is no dependency of the project)."""
    path = workdir / "readings.csv"
    write_csv(path, CSV_ROWS)
    readers = {"numpy.loadtxt": loadtxt}
    if importlib.util.find_spec("pandas") is not None:
        pandas = importlib.import_module("pandas").__version__
        readers[f"pandas {pandas} read_csv"] = pandas_read_csv
    source_s: list[float] = []
    baseline_s: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(CSV_ROUNDS):
        for name, read in readers.items():
            seconds, expected = baseline_windows(path, read)
            baseline_s[name].append(seconds)
        seconds, windows = csv_source_windows(path)
        source_s.append(seconds)
        _same_windows(windows, expected)
    details: dict[str, float | int | str] = {
        "rows": CSV_ROWS, "channels": len(CHANNELS), "window": SIZE, "hop": HOP,
        "windows": len(windows), "rounds": CSV_ROUNDS,
        "file_mb": round(path.stat().st_size / 2**20, 1),
    }  # fmt: skip
    return [
        Result(
            name=f"csv source (speed 0) + windows, against {name.split()[0]}",
            value=CSV_ROWS / statistics.median(source_s),
            unit="readings/s",
            baseline=CSV_ROWS / statistics.median(seconds),
            baseline_name=f"{name} + numpy stride windows",
            goal=Goal.ratio(">=", 0.5),
            details=details,
        )
        for name, seconds in baseline_s.items()
    ]


def payloads(count: int) -> list[bytes]:
    """One JSON message per reading: its time ``t`` (1 kHz from 0) and the four channels."""
    values = np.round(signals(count, len(CHANNELS), seed=2), 6).tolist()
    return [
        json.dumps({"t": i / RATE_HZ, **dict(zip(CHANNELS, row, strict=True))}).encode()
        for i, row in enumerate(values)
    ]


def publisher(port: int, conn: Connection) -> None:
    """A publisher process: for each topic it receives, publish every reading at QoS 1 as
    fast as paho goes, and answer with the seconds until the broker acknowledged them all."""
    messages = payloads(MQTT_READINGS)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sources-pub")
    client.max_inflight_messages_set(0)  # no window: as fast as it can
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    conn.send("ready")
    while (topic := conn.recv()) is not None:
        start = time.perf_counter()
        infos = [client.publish(topic, message, qos=1) for message in messages]
        for info in infos:
            info.wait_for_publish(timeout=60)
        conn.send(time.perf_counter() - start)
    client.disconnect()
    client.loop_stop()


def mqtt_source_seconds(
    broker: MosquittoProcess, conn: Connection, topic: str
) -> tuple[float, float]:
    """Seconds from telling the publisher to go until the ``mqtt`` source's windowing stage
    has cut the last window (which the last reading completes), and the publisher's own."""
    config = MqttSourceConfig.model_validate({
        "type": "mqtt", "url": broker.url, "topic": topic, "qos": 1, "timestamp": "t",
        "max_delay_s": MQTT_MAX_DELAY_S, "channels": {name: name for name in CHANNELS},
    })  # fmt: skip
    windowed = build_source(config, WindowConfig(size=SIZE, hop=HOP, rate_hz=RATE_HZ))
    assert isinstance(windowed, WindowedSource)
    assert isinstance(windowed.source, MqttSource)
    source = windowed.source
    expected = (MQTT_READINGS - SIZE) // HOP + 1
    stop, finished = threading.Event(), threading.Event()
    end = 0.0

    def consume() -> None:
        nonlocal end
        for sample in windowed.samples(stop):
            if sample.seq + 1 == expected:
                end = time.perf_counter()
                finished.set()
                stop.set()

    consumer = threading.Thread(target=consume, name="bench-mqtt-source")
    consumer.start()
    try:
        if not source.subscribed.wait(10):
            raise TimeoutError("the mqtt source did not subscribe within 10 s")
        start = time.perf_counter()
        conn.send(topic)
        if not finished.wait(60):
            raise TimeoutError(
                f"the mqtt source took {source.health.readings} readings and cut "
                f"{windowed.windower.windows} of {expected} windows in 60 s"
            )
    finally:
        stop.set()
        consumer.join(10)
    published: float = conn.recv()
    return end - start, published


def bare_subscriber_seconds(
    broker: MosquittoProcess, conn: Connection, topic: str
) -> tuple[float, float]:
    """The same messages to a bare paho subscriber (same protocol and QoS as the source)
    that ``json.loads`` each one: seconds from go until the last one is decoded."""
    subscribed, finished = threading.Event(), threading.Event()
    received = 0
    end = 0.0

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        nonlocal received, end
        json.loads(message.payload)
        received += 1
        if received == MQTT_READINGS:
            end = time.perf_counter()
            finished.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{topic}")
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise TimeoutError("the bare subscriber did not subscribe within 10 s")
        start = time.perf_counter()
        conn.send(topic)
        if not finished.wait(60):
            raise TimeoutError(f"the bare subscriber got {received} of {MQTT_READINGS} in 60 s")
    finally:
        client.disconnect()
        client.loop_stop()
    published: float = conn.recv()
    return end - start, published


def mqtt_result(workdir: Path) -> Result:
    broker = MosquittoProcess(workdir)
    broker.start()
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    process = context.Process(target=publisher, args=(broker.port, child_conn), daemon=True)
    process.start()
    child_conn.close()  # the publisher's end: recv() raises EOFError if the publisher dies
    try:
        if not multiprocessing.connection.wait([conn, process.sentinel], 60) or not conn.poll():
            raise TimeoutError(f"the publisher did not connect (exit code {process.exitcode})")
        conn.recv()
        bare, source = [], []
        for i in range(MQTT_ROUNDS):
            bare.append(bare_subscriber_seconds(broker, conn, f"bench/bare/{i}"))
            source.append(mqtt_source_seconds(broker, conn, f"bench/source/{i}"))
        conn.send(None)
        process.join(10)
    finally:
        if process.is_alive():
            process.kill()
        broker.stop()
    return Result(
        name="mqtt source + windows (JSON, sensor timestamps, QoS 1)",
        value=MQTT_READINGS / statistics.median(s for s, _ in source),
        unit="readings/s",
        baseline=MQTT_READINGS / statistics.median(s for s, _ in bare),
        baseline_name="bare paho subscriber + json.loads",
        goal=Goal.ratio(">=", 0.5),
        details={"readings": MQTT_READINGS, "channels": len(CHANNELS), "window": SIZE,
                 "hop": HOP, "rate_hz": RATE_HZ, "max_delay_s": MQTT_MAX_DELAY_S,
                 "rounds": MQTT_ROUNDS, "publisher_readings_per_s": round(
                     MQTT_READINGS / statistics.median(p for _, p in bare + source))},
    )  # fmt: skip


def bench_sources() -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="aiot-bench-sources-"))
    return [*csv_results(workdir), mqtt_result(workdir)]
