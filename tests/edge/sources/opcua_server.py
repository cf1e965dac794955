"""An OPC UA server for the tests, its own process: ``python -m ... PORT [USER PASS | secure]``.

Namespace ``urn:aiot:test`` holds a machine: ``Machine.Counter`` (an Int64 that goes up by
one every 50 ms), ``Machine.Temp`` (a Double, 20 + counter / 10), ``Machine.Label`` (a
String, not a number). With a user and password, anonymous sessions are refused; with
``secure``, only a signed and encrypted channel (Basic256Sha256) is offered, with a
certificate the server makes for itself in its working directory.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

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


async def secure(server: Server) -> None:
    key, cert = Path("server-key.pem"), Path("server-cert.der")
    await setup_self_signed_certificate(
        key, cert, "urn:aiot:test:server", socket.gethostname(),
        [ExtendedKeyUsageOID.SERVER_AUTH], {"commonName": "aiot test server"},
    )  # fmt: skip
    await server.load_certificate(cert)
    await server.load_private_key(key)
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])


async def serve(port: int, args: list[str]) -> None:
    credentials = args if len(args) == 2 else []
    server = Server(user_manager=OneUser(*credentials) if credentials else None)
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/aiot/")
    if args == ["secure"]:
        await secure(server)
    else:
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
