"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``) over ``$NOTIFY_SOCKET``.

The protocol is one datagram of ``KEY=VALUE`` lines on a Unix socket, so the stdlib's socket
module is all it takes (no libsystemd binding on the gateway). Outside systemd there is no
``$NOTIFY_SOCKET`` and every call does nothing. The watchdog pings only while the agent's own
check says it is alive: a wedged agent stops pinging, and systemd restarts it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

Check = Callable[[], str | None]
"""Returns None while the process is healthy, else why it is not."""


class Notifier:
    """Sends notify messages to systemd; a no-op when not started by systemd."""

    def __init__(self, address: str | None) -> None:
        # "@name" is an abstract socket: its first byte is NUL on the wire.
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        self._failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """The notifier systemd asked for in ``NOTIFY_SOCKET`` (none: a no-op)."""
        return cls(environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to notify."""
        return self._address is not None

    def send(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; False when there is nobody to tell."""
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            if not self._failed:  # once: the watchdog would repeat it every few seconds
                log.warning("cannot notify systemd on %s: %s", self._address, exc)
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str = "") -> bool:
        """Start-up is complete: systemd may start what waits for this unit."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        """Shutdown has begun: systemd waits for the exit (up to TimeoutStopSec)."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """Alive: resets systemd's watchdog timer."""
        return self.send("WATCHDOG=1")


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between pings: half of ``WatchdogSec`` (``WATCHDOG_USEC``), or None if the
    watchdog is off or meant for another process (``WATCHDOG_PID``)."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


class Watchdog:
    """A thread that pings systemd's watchdog every ``interval_s`` while ``check`` passes."""

    def __init__(self, notifier: Notifier, check: Check, interval_s: float) -> None:
        self._notifier = notifier
        self._check = check
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._unhealthy: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            problem = self._check()
            if problem is None:
                self._notifier.watchdog()
                if self._unhealthy is not None:
                    log.info("agent healthy again; watchdog pings resume")
            elif problem != self._unhealthy:
                log.error("agent unhealthy (%s): watchdog pings stop, systemd restarts", problem)
            self._unhealthy = problem
            self._stop.wait(self._interval_s)
