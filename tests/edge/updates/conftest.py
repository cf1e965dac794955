"""The updater's world for every test here: signing key, artifact server, config, pipelines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.updates.artifacts import ArtifactServer
from tests.edge.updates.rollout import Rollout


@pytest.fixture
def rollout(tmp_path: Path) -> Iterator[Rollout]:
    """An updater's world: signing key, artifact server, config and pipelines (see rollout.py)."""
    with ArtifactServer() as server:
        r = Rollout(tmp_path, server)
        try:
            yield r
        finally:
            r.stop()
