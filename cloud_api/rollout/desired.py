"""Desired states: the entry that asks a pipeline to run a version, and an agent's whole state.

Pure values (``shared.messages``' ``DesiredModel`` and ``DesiredState``): the store validates
them where it reads JSON from the database and dumps them where it writes, so the rows hold
exactly what the worker publishes on the wire.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.messages import DesiredModel, DesiredState
from shared.signing import SignedManifest


def entry_for(pipeline: str, deployment_id: int, manifest: SignedManifest) -> DesiredModel:
    """The desired entry that asks ``pipeline`` to run the manifest's model version."""
    model = manifest.manifest
    return DesiredModel(
        pipeline=pipeline,
        deployment_id=deployment_id,
        manifest=manifest,
        artifact_path=f"/api/v1/models/{model.name}/versions/{model.version}/artifact",
    )


def with_entry(
    state: DesiredState | None, *, agent_id: str, pipeline: str, entry: DesiredModel | None,
    issued_at: datetime,
) -> DesiredState:  # fmt: skip
    """An agent's whole desired state with ``pipeline``'s entry replaced (or removed).

    The other pipelines' entries stay: a desired state is always the whole of it.
    """
    pipelines = [p for p in (state.pipelines if state else []) if p.pipeline != pipeline]
    if entry is not None:
        pipelines.append(entry)
    pipelines.sort(key=lambda p: p.pipeline)
    shadows = state.shadows if state else []
    return DesiredState(
        agent_id=agent_id, issued_at=issued_at, pipelines=pipelines, shadows=shadows
    )


def entry_of(state: DesiredState | None, pipeline: str) -> DesiredModel | None:
    """``pipeline``'s entry in a desired state (None: it runs the agent's configured model)."""
    pipelines = state.pipelines if state else []
    return next((entry for entry in pipelines if entry.pipeline == pipeline), None)


def as_json(value: DesiredModel | DesiredState) -> dict[str, Any]:
    """How a desired entry or state is stored: its wire JSON (by alias)."""
    return value.model_dump(mode="json", by_alias=True)
