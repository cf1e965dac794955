"""A local MQTT broker for the demo and the tests: Mosquitto as a process, else amqtt in-process.

amqtt is pure Python and speaks MQTT 3.1.1 only, so whoever uses this broker must choose the
protocol it reports (``LocalBroker.protocol``).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cloud_api.broker_config import ListenerTls, listener_conf


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class LocalBroker(Protocol):
    """What the demo needs of a broker."""

    port: int

    @property
    def url(self) -> str: ...
    @property
    def protocol(self) -> str: ...
    @property
    def name(self) -> str: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class MosquittoProcess:
    """Mosquitto in the foreground with a config in ``workdir``; stop/start keep the port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_config: str = ""
    persistent: bool = False
    allow_anonymous: bool = True
    """False with ``password_file`` and ``acl_file`` in ``extra_config`` (broker-config's files)."""
    process: subprocess.Popen[bytes] | None = None
    name: str = "mosquitto"
    protocol: str = "5"
    tls: ListenerTls | None = None
    """A TLS listener (mqtts://) instead of plain MQTT."""

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        # A persistent broker keeps sessions and queued QoS 1 messages across a restart.
        persistence = (
            f"persistence true\npersistence_location {self.workdir}/\n"
            if self.persistent
            else "persistence false\n"
        )
        # `user root` keeps Mosquitto from dropping privileges when started as root (CI).
        conf.write_text(
            f"{listener_conf(self.port, '127.0.0.1', self.tls)}"
            f"allow_anonymous {str(self.allow_anonymous).lower()}\n"
            f"{persistence}"
            "user root\n"
            "max_inflight_messages 0\n"
            "max_queued_messages 100000\n"
            f"{self.extra_config}"
        )
        with (self.workdir / "mosquitto.log").open("ab") as log:
            # Its own session: Ctrl-C in the terminal reaches us, and we stop the broker
            # last, after the clients that need it have said goodbye.
            self.process = subprocess.Popen(
                ["mosquitto", "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(self.port)

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files, keeping its connections."""
        if self.process is None:
            raise RuntimeError("mosquitto is not running")
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@dataclass
class AmqttBroker:
    """The pure-Python amqtt broker on its own event loop thread (MQTT 3.1.1 only)."""

    port: int = field(default_factory=free_port)
    name: str = "amqtt (embedded, MQTT 3.1.1)"
    protocol: str = "3.1.1"
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        started = threading.Event()

        async def serve() -> None:
            broker = Broker(config)
            await broker.start()
            started.set()
            while not self._stopping.is_set():
                await asyncio.sleep(0.1)
            await broker.shutdown()

        self._thread = threading.Thread(
            target=loop.run_until_complete, args=(serve(),), name="amqtt", daemon=True
        )
        self._thread.start()
        if not started.wait(10):
            raise TimeoutError("amqtt broker did not start within 10 s")

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout=10)
            self._thread = None


def local_broker(workdir: Path) -> LocalBroker:
    """Mosquitto when it is installed, else the embedded amqtt broker."""
    if shutil.which("mosquitto"):
        return MosquittoProcess(workdir)
    return AmqttBroker()
