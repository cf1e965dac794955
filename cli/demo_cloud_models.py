"""The demo's cloud models: the shipped larger models registered and set as the cloud model of
the demo's pipelines, over the API, as an operator does (``PUT /api/v1/cloud-models/...``)."""

from __future__ import annotations

from typing import Any

import httpx

from models import MANIFEST_NAME, default_dir, load_manifest

CLOUD_MODELS = {
    "spindle-vibration": "vibration-anomaly-cloud",
    "intersection": "scene-detector-cloud",
}
"""Demo pipeline -> the shipped model that answers its escalations."""


def seed_cloud_models(console: Any, api_url: str, api_key: str) -> None:
    """Register each shipped cloud model (once) and make it its pipeline's cloud model."""
    cards = {card.name: card for card in load_manifest(default_dir() / MANIFEST_NAME)}
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        with httpx.Client(base_url=api_url, timeout=60, headers=headers) as client:
            for pipeline, name in CLOUD_MODELS.items():
                card = cards[name]
                with card.path(default_dir()).open("rb") as file:
                    uploaded = client.post(
                        f"/api/v1/models/{name}/versions",
                        data={"version": card.version, "task": card.task,
                              "labels": ",".join(card.labels or [])},
                        files={"file": (card.file, file, "application/octet-stream")},
                    )  # fmt: skip
                if uploaded.status_code != 409:  # 409: registered by an earlier run
                    uploaded.raise_for_status()
                client.put(
                    f"/api/v1/cloud-models/{pipeline}",
                    json={
                        "model": name,
                        "version": card.version,
                        "normal_label": card.normal_label,
                    },
                ).raise_for_status()
                console.print(f"[bold]Cloud model[/] of {pipeline}: {name} {card.version}")
    except httpx.HTTPError as exc:
        console.print(f"[red]the cloud models could not be set: {exc}[/]")
