"""Exponential delays between reconnection attempts, for sources that reconnect."""

from __future__ import annotations


class Backoff:
    """Delays ``minimum``, twice that, four times, ... up to ``maximum``; ``reset`` on success."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self._next = minimum

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.minimum
