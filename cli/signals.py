"""SIGTERM and SIGINT mean the same to every long-running command: stop in order, say so.

``docker stop``, systemd and ``kill`` send SIGTERM; a terminal sends SIGINT. Python's
defaults differ (SIGINT raises KeyboardInterrupt, SIGTERM ends the process on the spot,
leaving children such as the demo's broker behind), so each command installs one of these.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def interrupt_on_stop_signals() -> Iterator[None]:
    """Inside the block, the first SIGTERM or SIGINT raises KeyboardInterrupt in the main
    thread (as Ctrl-C does); later ones are noted and ignored, so the clean-up that the
    first one started (stopping children in order) is not cut short."""
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            log.warning("%s: already stopping", signal.Signals(signum).name)
            return
        stopping.set()
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def stop_event_on_stop_signals(*, announce: bool = True) -> Iterator[threading.Event]:
    """Inside the block, SIGTERM or SIGINT sets the event yielded (a worker's main loop
    waits on it); the handlers before are restored after. Without ``announce`` it logs
    nothing (uvicorn, which has said it already, raises the signal again once stopped)."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        if announce:
            log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
