"""cli/server.py: the listener ``serve_in_thread`` binds for port 0."""

from __future__ import annotations

import asyncio
import socket

from cli.server import _bound


def test_connections_accepted_on_the_port_0_listener_have_nagle_off() -> None:
    """asyncio turns Nagle off only on sockets whose proto says TCP. A listener made with
    proto 0 passed that on to every connection, and each response written as headers then
    body waited ~40 ms for the client's delayed ACK."""
    nodelay: list[int] = []

    class Record(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def accept_one() -> None:
        listener = _bound("127.0.0.1")
        server = await asyncio.get_running_loop().create_server(Record, sock=listener)
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if nodelay:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(accept_one())
    assert nodelay == [1]
