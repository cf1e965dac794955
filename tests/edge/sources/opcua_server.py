"""An OPC UA server for the tests, run as its own process: ``python -m ... PORT [USER PASS]``.

Namespace ``urn:aiot:test`` holds a machine: ``Machine.Counter`` (an Int64 that goes up by
one every 50 ms), ``Machine.Temp`` (a Double, 20 + counter / 10), ``Machine.Label`` (a
String, not a number). With a user and password, anonymous sessions are refused.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager

NAMESPACE = "urn:aiot:test"
TICK_S = 0.05


class OneUser(UserManager):
    """Lets in one user with one password, nobody else."""

    def __init__(self, name: str, password: str) -> None:
        self._name, self._password = name, password

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None,
        certificate: Any = None,
    ) -> User | None:  # fmt: skip
        if username == self._name and password == self._password:
            return User(role=UserRole.User, name=username)
        return None


async def serve(port: int, credentials: list[str]) -> None:
    server = Server(user_manager=OneUser(*credentials) if credentials else None)
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/aiot/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    if credentials:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    ns = await server.register_namespace(NAMESPACE)
    machine = await server.nodes.objects.add_object(
        ua.NodeId.from_string(f"ns={ns};s=Machine"), "Machine"
    )
    counter = await machine.add_variable(
        ua.NodeId.from_string(f"ns={ns};s=Machine.Counter"), "Counter", 0, ua.VariantType.Int64
    )
    temp = await machine.add_variable(
        ua.NodeId.from_string(f"ns={ns};s=Machine.Temp"), "Temp", 20.0
    )
    await machine.add_variable(
        ua.NodeId.from_string(f"ns={ns};s=Machine.Label"), "Label", "press 3"
    )
    async with server:
        count = 0
        while True:
            await asyncio.sleep(TICK_S)
            count += 1
            await counter.write_value(ua.Variant(count, ua.VariantType.Int64))
            await temp.write_value(20.0 + count / 10)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2:4]))


if __name__ == "__main__":
    main()
