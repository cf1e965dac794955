"""`aiot cloud serve --workers N`: several uvicorn worker processes behind one port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.cloud.helpers import wait_until
from tests.services import free_port

AIOT = Path(sys.executable).parent / "aiot"


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_api_workers_serve_healthz(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AIOT_DATA_DIR": str(tmp_path / "data")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(AIOT), "cloud", "serve", "--workers", "2", "--no-ingest",
             "--host", "127.0.0.1", "--port", str(port),
             "--db", f"sqlite:///{tmp_path / 'cloud.db'}"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        wait_until(lambda: healthy(url) or process.poll() is not None, timeout=60, what="/healthz")
        assert process.poll() is None, log.read_text()
        assert healthy(url)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
        output = log.read_text()
        assert output.count("Started server process") >= 2, output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_several_workers_refuse_in_process_ingest(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(AIOT), "cloud", "serve", "--workers", "2", "--db", f"sqlite:///{tmp_path / 'c.db'}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--no-ingest" in result.stderr
