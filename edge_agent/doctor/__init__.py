"""``aiot edge doctor``: why is this agent not sending? Every check with a fix.

The checks run in the order a problem would show itself: the config (and what
``validate-config`` checks), the files it names and the directories the agent writes, the
secrets others could read, room on disk for the bounded stores, the broker (DNS, TCP, TLS,
login, ACL), the cloud API (reachable, credentials, clock skew from its ``Date`` header),
each model and each source, and, when one runs, the live agent through its metrics port.
``local``, ``network``, ``devices`` and ``live`` hold them; ``run`` puts them in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.config import load_config
from edge_agent.doctor.check import Check
from edge_agent.doctor.devices import model_checks, source_checks
from edge_agent.doctor.live import live_checks
from edge_agent.doctor.local import config_checks, disk_checks, file_checks, secret_checks
from edge_agent.doctor.network import broker_checks, cloud_checks
from shared.errors import ConfigError

__all__ = ["Check", "run"]


def run(
    path: Path, *, timeout_s: float = 5.0, clock: Callable[[], float] = time.time
) -> list[Check]:
    """Every check for the agent configured in ``path``; stops after the config if it is
    invalid (nothing else can be read from it)."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        return [Check.failed("config", str(exc), "correct the key, file and line named")]
    return [
        *config_checks(path, config),
        *file_checks(config),
        *secret_checks(path, config),
        *disk_checks(config),
        *broker_checks(config, timeout_s=timeout_s),
        *cloud_checks(config, timeout_s=timeout_s, clock=clock),
        *model_checks(config),
        *source_checks(config, timeout_s=timeout_s),
        *live_checks(config, timeout_s=timeout_s),
    ]
