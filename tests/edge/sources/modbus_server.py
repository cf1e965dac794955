"""A Modbus TCP device for the tests, run as its own process: ``python -m ... PORT``.

Unit 1 serves a register map with one value of each kind and order (encoded here with
``struct``, independently of the source's decoder), and a float64 counter that goes up by
one on every read of the holding registers, so a test sees fresh readings.
"""

from __future__ import annotations

import asyncio
import struct
import sys

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

UNIT = 1


def words(fmt: str, value: float, *, byte_order: str = "big", word_order: str = "big") -> list[int]:
    raw = struct.pack(">" + fmt, value)
    regs = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if byte_order == "little":
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    return regs if word_order == "big" else regs[::-1]


HOLDING = [
    *words("h", -1234),  # 0: int16
    *words("f", 21.5),  # 1-2: float32 ABCD
    *words("f", 3.25, word_order="little"),  # 3-4: float32 CDAB
    *words("I", 123456, byte_order="little"),  # 5-6: uint32 BADC
    *words("d", 0.0),  # 7-10: float64, the read counter
    *words("H", 215),  # 11: uint16, x0.1 = 21.5
]
INPUT = [*words("H", 42), *words("i", -100000)]  # 0: uint16, 1-2: int32
COUNTER = 7


async def count_reads(
    function_code: int, start: int, address: int, count: int, registers: list[int], values: object
) -> None:
    if function_code == 3:  # read holding registers
        reads = struct.unpack(">d", struct.pack(">4H", *registers[COUNTER : COUNTER + 4]))[0]
        registers[COUNTER : COUNTER + 4] = words("d", reads + 1)


def device() -> SimDevice:
    bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
    return SimDevice(
        id=UNIT,
        simdata=(
            bits,
            list(bits),
            [SimData(0, values=HOLDING, datatype=DataType.REGISTERS)],
            [SimData(0, values=INPUT, datatype=DataType.REGISTERS)],
        ),
        action=count_reads,
    )


async def serve(port: int) -> None:
    server = ModbusTcpServer(device(), address=("127.0.0.1", port))
    await server.serve_forever()


def main() -> None:
    asyncio.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
