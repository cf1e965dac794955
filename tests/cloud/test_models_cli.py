"""`aiot models push` against the real app (its requests are carried by the TestClient)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer

from cli.models import push_model, set_cloud_model
from tests.cloud.conftest import AppFactory
from tests.cloud.test_registry import MODEL_FILE


@pytest.fixture
def client(make_api: AppFactory) -> Iterator[httpx.Client]:
    """An httpx client like the CLI's whose transport hands each request to the real app."""
    with make_api(ingest_enabled=False) as api:

        def forward(request: httpx.Request) -> httpx.Response:
            answer = api.request(
                request.method,
                request.url.raw_path.decode(),
                content=request.read(),
                headers=dict(request.headers),
            )
            return httpx.Response(answer.status_code, content=answer.content)

        with httpx.Client(base_url="http://cloud", transport=httpx.MockTransport(forward)) as http:
            yield http


def test_push_registers_and_reports_sha256(client: httpx.Client) -> None:
    record = push_model(client, MODEL_FILE, name="vib", version="2.0.0", task="", labels="x,y")
    assert record["sha256"] == hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest()
    assert record["labels"] == ["x", "y"]
    assert record["signed_manifest"]["key_id"]


def test_push_refused_exits_2_with_the_reason(
    client: httpx.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(typer.Exit) as exited:
        push_model(client, bogus, name="vib", version="1.0.0", task="", labels="")
    assert exited.value.exit_code == 2
    err = capsys.readouterr().err
    assert "refused (422): not a loadable ONNX model" in err
    assert "uploads" not in err  # the server's temp path is not leaked


def test_cloud_sets_a_pipelines_cloud_model_and_lists_them(
    client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = "ok,bad,b2,b3,b4,b5"  # one per output of the vibration model
    push_model(client, MODEL_FILE, name="vib", version="2.0.0", task="", labels=labels)
    [row] = set_cloud_model(client, "press-1", "vib", "2.0.0", "ok")
    assert (row["pipeline"], row["model"], row["version"], row["normal_label"]) == (
        "press-1", "vib", "2.0.0", "ok",
    )  # fmt: skip
    assert [r["pipeline"] for r in set_cloud_model(client, None, None, None, None)] == ["press-1"]
    with pytest.raises(typer.Exit) as exited:
        set_cloud_model(client, "press-1", "vib", "9.9.9", None)
    assert exited.value.exit_code == 2
    assert "refused (404): model 'vib' has no version '9.9.9'" in capsys.readouterr().err
