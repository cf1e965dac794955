"""The one probe server of edge and cloud (``shared.probes``): ``/metrics`` from the given
registry, ``/livez`` and ``/readyz`` 200 or 503 with the reason, 404 elsewhere; and no other
module of the tree serves HTTP this way (it was written twice, once per side)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from shared.probes import ProbeServer

ROOT = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_and_probes_on_a_free_port() -> None:
    registry = CollectorRegistry()
    Counter("aiot_probe_test", "a counter", registry=registry).inc(3)
    reason = ["starting"]
    server = ProbeServer(
        registry, host="127.0.0.1", port=0, ready=lambda: reason[0] if reason else None
    )
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        status, text = get(f"{base}/metrics")
        assert status == 200
        assert "aiot_probe_test_total 3.0" in text
        assert get(f"{base}/livez") == (200, "ok\n")
        assert get(f"{base}/readyz") == (503, "starting\n")
        reason.clear()
        assert get(f"{base}/readyz") == (200, "ok\n")
        assert get(f"{base}/other") == (404, "/metrics or /livez, /readyz\n")
    finally:
        server.stop()
    assert server.port == 0


def test_only_the_shared_module_serves_probes() -> None:
    servers = sorted(
        str(path.relative_to(ROOT))
        for package in ("shared", "edge_agent", "cloud_api", "cli")
        for path in (ROOT / package).rglob("*.py")
        if "make_server(" in path.read_text()
    )
    assert servers == ["shared/probes.py"]
