"""The demo sets the shipped cloud models over the real API, and again on a second run."""

from __future__ import annotations

from pathlib import Path

import httpx
from rich.console import Console

from cli.demo_cloud_models import seed_cloud_models
from cli.server import serve_in_thread
from cloud_api.auth import create_api_key
from cloud_api.config import Settings
from cloud_api.main import create_app
from tests.services import Mosquitto


def test_the_demo_pipelines_get_their_cloud_models(broker: Mosquitto, tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'cloud.db'}", mqtt_url=broker.url,
        data_dir=tmp_path, ingest_client_id=f"ingest-{tmp_path.name}"[:64],
    )  # fmt: skip
    app = create_app(settings)
    console = Console(file=(tmp_path / "out.txt").open("w"))
    with serve_in_thread(app) as url:
        with app.state.sessionmaker() as session:
            _, key = create_api_key(session, name="demo-test", scope="admin")
        seed_cloud_models(console, url, key)
        seed_cloud_models(console, url, key)  # a second demo on the same data: no error
        listed = httpx.get(
            f"{url}/api/v1/cloud-models", headers={"Authorization": f"Bearer {key}"}
        ).json()
    console.file.close()
    assert sorted((m["pipeline"], m["model"], m["normal_label"]) for m in listed) == [
        ("intersection", "scene-detector-cloud", None),
        ("spindle-vibration", "vibration-anomaly-cloud", "healthy"),
    ]
    assert "could not" not in (tmp_path / "out.txt").read_text()
