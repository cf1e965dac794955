"""The `aiot` command line: the composition root of the platform."""

from __future__ import annotations

import logging


def configure_logging(level: str = "INFO") -> None:
    """One log format for every `aiot` process."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
