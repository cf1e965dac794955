"""HTTPS: `aiot cloud serve --ssl-certfile/--ssl-keyfile` answers over TLS, and the agent's
model download from the real API over https:// is verified against ``cloud.tls.ca_file``
(and refused, without retries, naming the certificate, against another CA)."""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import models
from cli.server import serve_in_thread
from cloud_api.config import Settings
from cloud_api.main import create_app
from edge_agent.delivery.uploader import Uploader, UploadTarget
from edge_agent.updates.download import DownloadPolicy, download
from shared.errors import TransportError
from shared.tls import TlsFiles
from tests.edge.pipelines.test_collect import MODEL as SAMPLE_MODEL
from tests.edge.pipelines.test_collect import T0, collector, spool
from tests.services import free_port
from tests.tls.certs import Pki

pytestmark = pytest.mark.integration

MODEL = Path(models.__file__).resolve().parent / "vibration-anomaly-1.0.0.onnx"
AIOT = Path(sys.executable).parent / "aiot"


def _trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _registered_over_https(base: str, pki: Pki) -> str:
    """Upload the shipped model through HTTPS (verified); the URL of its artifact."""
    with httpx.Client(base_url=base, verify=_trusting(pki.ca)) as client:
        response = client.post(
            "/api/v1/models/vib/versions",
            data={"version": "1.0.0"},
            files={"file": ("model.onnx", MODEL.read_bytes(), "application/octet-stream")},
        )
    assert response.status_code == 201, response.text
    return f"{base}/api/v1/models/vib/versions/1.0.0/artifact"


def test_the_agent_downloads_a_model_over_verified_https_and_refuses_another_ca(
    pki: Pki, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'cloud.db'}",
        data_dir=tmp_path / "data",
        ingest_enabled=False,
        rollout_enabled=False,
        auth_enabled=False,
    )
    app = create_app(settings)
    size = MODEL.stat().st_size
    stop = threading.Event()
    with serve_in_thread(app, ssl_certfile=pki.server_cert, ssl_keyfile=pki.server_key) as base:
        assert base.startswith("https://")
        url = _registered_over_https(base, pki)
        good = DownloadPolicy(tls=TlsFiles(ca_file=pki.ca), tries=2, backoff_s=0.1)
        download(url, tmp_path / "model.onnx", size=size, policy=good, stop=stop)
        wrong = DownloadPolicy(tls=TlsFiles(ca_file=pki.wrong_ca), tries=5, backoff_s=60)
        with pytest.raises(TransportError) as refused:
            download(url, tmp_path / "other.onnx", size=size, policy=wrong, stop=stop)
    digest = hashlib.sha256((tmp_path / "model.onnx").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    message = str(refused.value)
    assert message.startswith("download failed: the cloud API's certificate CN=aiot test broker")
    assert f"is signed by a CA we do not trust (ca_file {pki.wrong_ca})" in message
    assert not (tmp_path / "other.onnx").exists()


def test_cloud_serve_speaks_https_with_the_given_certificate(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AIOT_DATA_DIR": str(tmp_path / "data"),
        "AIOT_ROLLOUT_ENABLED": "false",
        "AIOT_AUTH_ENABLED": "false",
    }
    command = [
        str(AIOT), "cloud", "serve", "--port", str(port), "--no-ingest",
        "--db", f"sqlite:///{tmp_path / 'cloud.db'}",
        "--ssl-certfile", str(pki.server_cert), "--ssl-keyfile", str(pki.server_key),
    ]  # fmt: skip
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        health = _first_answer(f"https://127.0.0.1:{port}/healthz", pki.ca, server)
        assert health.status_code == 200, health.text
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://127.0.0.1:{port}/healthz", verify=_trusting(pki.wrong_ca))
    finally:
        server.terminate()
        server.wait(timeout=30)


def _first_answer(url: str, ca: Path, server: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        try:
            return httpx.get(url, verify=_trusting(ca), timeout=5)
        except httpx.ConnectError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_samples_upload_over_verified_https_and_wait_under_another_ca(
    pki: Pki, tmp_path: Path
) -> None:
    """The uploader verifies the API against ``cloud.tls`` as downloads do: under another CA
    nothing leaves and the sample waits in the spool; under ours it arrives."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'cloud.db'}",
        data_dir=tmp_path / "data",
        ingest_enabled=False,
        rollout_enabled=False,
        auth_enabled=False,
    )
    kept = spool(tmp_path)
    collector(kept, random_share=1.0).offer(
        np.zeros((2, 8), dtype=np.float32), 0.1, "normal", T0, SAMPLE_MODEL
    )
    kept.start()
    kept.stop()
    with serve_in_thread(
        create_app(settings), ssl_certfile=pki.server_cert, ssl_keyfile=pki.server_key
    ) as base:
        wrong = Uploader(kept, UploadTarget(base, tls=TlsFiles(ca_file=pki.wrong_ca)))
        assert wrong.upload(kept.oldest(10)) is False
        assert len(kept.oldest(10)) == 1
        right = Uploader(kept, UploadTarget(base, tls=TlsFiles(ca_file=pki.ca)))
        assert right.upload(kept.oldest(10)) is True
        with httpx.Client(base_url=base, verify=_trusting(pki.ca)) as client:
            stored = client.get("/api/v1/samples").json()
    assert kept.oldest(10) == []
    assert [item["pipeline"] for item in stored["items"]] == ["vib"]
