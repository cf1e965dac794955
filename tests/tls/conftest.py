"""A throwaway PKI and Mosquitto brokers with TLS listeners (one per test: each test picks
the certificate the broker shows and whether it wants ours)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloud_api.broker_config import ListenerTls
from cloud_api.passwords import mosquitto_hash
from tests.services import Mosquitto
from tests.tls.certs import Pki, make_pki

StartBroker = Callable[..., Mosquitto]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[StartBroker]:
    """Starts Mosquitto with a TLS listener: ``expired`` shows the expired certificate,
    ``elsewhere`` one for another host, ``mutual`` wants a client certificate from the test
    CA, ``users`` (name -> password) turns anonymous logins off."""
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed")
    started: list[Mosquitto] = []

    def start(
        *,
        expired: bool = False,
        elsewhere: bool = False,
        mutual: bool = False,
        users: dict[str, str] | None = None,
    ) -> Mosquitto:
        workdir = tmp_path / f"broker-{len(started)}"
        workdir.mkdir()
        cert, key = pki.server_cert, pki.server_key
        if expired:
            cert, key = pki.expired_cert, pki.expired_key
        elif elsewhere:
            cert, key = pki.elsewhere_cert, pki.elsewhere_key
        server = Mosquitto(workdir, tls=ListenerTls(pki.ca, cert, key, require_certificate=mutual))
        if users is not None:
            passwd = workdir / "passwd"
            passwd.write_text("".join(f"{u}:{mosquitto_hash(p)}\n" for u, p in users.items()))
            server.allow_anonymous = False
            server.extra_config = f"password_file {passwd}\n"
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
