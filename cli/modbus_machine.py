"""A simulated hydraulic press served over Modbus TCP: the demo's real-protocol machine.

Three process values, each a float32 in two holding registers (big-endian words, as most
PLCs send them): ``temperature_c`` at 0, ``current_a`` at 2 and ``pressure_bar`` at 4. The
values are computed from the wall clock at each read, so any poll rate sees a smooth
signal. Normal operation: the motor current follows the press cycle (a 0.5 Hz stroke), the
oil temperature drifts slowly and the pressure follows the stroke. A fault (a worn pump)
adds a 3 Hz current ripple, pressure drops and a rising temperature; ``fault_every_s``
schedules one now and then. ``normal_readings`` gives the same physics offline, so
``aiot demo`` learns the press's normal (``fit-normal``) before the press starts.
"""

from __future__ import annotations

import asyncio
import math
import struct
import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

CHANNELS = ("temperature_c", "current_a", "pressure_bar")
ADDRESSES = {"temperature_c": 0, "current_a": 2, "pressure_bar": 4}
"""First holding register of each float32 value (two registers each, big-endian words)."""
UNIT = 1
STROKE_HZ = 0.5
RIPPLE_HZ = 3.0


def press_values(t: float, noise: npt.NDArray[np.float64], *, faulty: bool) -> list[float]:
    """The three values ``t`` seconds into the run; ``noise`` is three standard normals."""
    stroke = math.sin(2 * math.pi * STROKE_HZ * t)
    temperature = 58.0 + 1.5 * math.sin(2 * math.pi * t / 600.0) + 0.05 * noise[0]
    current = 12.0 + 2.0 * max(stroke, 0.0) + 0.08 * noise[1]
    pressure = 150.0 + 40.0 * max(stroke, 0.0) + 0.5 * noise[2]
    if faulty:
        current += 1.6 * math.sin(2 * math.pi * RIPPLE_HZ * t)
        pressure -= 18.0 * max(stroke, 0.0)
        temperature += 2.5
    return [temperature, current, pressure]


def normal_readings(seconds: float, rate_hz: float, seed: int = 0) -> npt.NDArray[np.float64]:
    """``[N, 3]`` readings of a healthy press polled at ``rate_hz`` (``CHANNELS`` order)."""
    rng = np.random.default_rng(seed)
    count = int(seconds * rate_hz)
    noise = rng.standard_normal((count, 3))
    rows = [press_values(i / rate_hz, noise[i], faulty=False) for i in range(count)]
    return np.asarray(rows, dtype=np.float64)


def _words(value: float) -> list[int]:
    raw = struct.pack(">f", value)
    return [int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")]


class ModbusMachine:
    """The press as a Modbus TCP device on ``127.0.0.1:port``, served from its own thread."""

    def __init__(
        self,
        port: int,
        *,
        fault_every_s: float | None = None,
        fault_lasts_s: float = 8.0,
        seed: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self.fault_every_s = fault_every_s
        self.fault_lasts_s = fault_lasts_s
        self.forced_fault = False
        """Set by a caller (a test) to make the press faulty until cleared."""
        self._rng = np.random.default_rng(seed)
        self._clock = clock
        self._start = clock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: object | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def faulty(self, t: float) -> bool:
        """Whether the press is faulty ``t`` seconds after it started."""
        if self.forced_fault:
            return True
        if self.fault_every_s is None:
            return False
        phase = t % self.fault_every_s
        return t >= self.fault_every_s and phase < self.fault_lasts_s

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="modbus-press", daemon=True)
        self._thread.start()
        if not self._ready.wait(10.0):
            raise RuntimeError(f"the simulated press did not start on port {self.port}")

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None:
            shutdown = server.shutdown()  # type: ignore[attr-defined]
            asyncio.run_coroutine_threadsafe(shutdown, loop).result(timeout=10.0)
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import SimData, SimDevice
        from pymodbus.simulator.simutils import DataType

        registers = [0] * 8
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        device = SimDevice(
            id=UNIT,
            simdata=(
                bits,
                list(bits),
                [SimData(0, values=registers, datatype=DataType.REGISTERS)],
                [SimData(0, values=[0] * 8, datatype=DataType.REGISTERS)],
            ),
            action=self._on_read,
        )
        server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        self._loop, self._server = asyncio.get_running_loop(), server
        self._ready.set()
        await server.serve_forever()

    async def _on_read(
        self,
        function_code: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: object,
    ) -> None:
        """Fill the holding registers with the press's values at this moment."""
        if function_code != 3:
            return
        t = self._clock() - self._start
        values_now = press_values(t, self._rng.standard_normal(3), faulty=self.faulty(t))
        for name, value in zip(CHANNELS, values_now, strict=True):
            at = ADDRESSES[name]
            registers[at : at + 2] = _words(value)
