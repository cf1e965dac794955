"""``GET /``: the dashboard page and every file it loads are served from the app itself."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud_api.config import Settings
from cloud_api.main import create_app
from cloud_api.routes.dashboard import STATIC_DIR

ROOT = Path(__file__).resolve().parents[2]
# What a page can load: <script src>, <link href>, `import ... from "..."`, CSS url(...).
HTML_ASSET = re.compile(r'(?:src|href)="([^"]+)"')
JS_IMPORT = re.compile(r'^\s*(?:import|export)\b[^"\']*?from\s*["\']([^"\']+)["\']', re.MULTILINE)
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)")
EXTERNAL = re.compile(r"\b(?:https?:|wss?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)


@pytest.fixture
def page_api(tmp_path: Path) -> Iterator[TestClient]:
    """The real app on SQLite without ingest: serving the page needs no broker."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'cloud.db'}", ingest_enabled=False, data_dir=tmp_path
    )
    with TestClient(create_app(settings)) as client:
        yield client


def loaded_by(client: TestClient, path: str, text: str) -> list[str]:
    """The paths a file at ``path`` makes the browser fetch, resolved like the browser does."""
    if path.endswith(".html") or path == "/":
        found = HTML_ASSET.findall(text)
        base = "/"
    elif path.endswith(".js"):
        found = JS_IMPORT.findall(text)
        base = path.rsplit("/", 1)[0] + "/"
    else:
        found = CSS_URL.findall(text)
        base = path.rsplit("/", 1)[0] + "/"
    resolved = []
    for ref in found:
        if ref.startswith("data:"):
            continue
        url = client.base_url.join(base).join(ref)
        assert url.host == client.base_url.host, f"{path} loads {ref} from another origin"
        resolved.append(url.path)
    return resolved


def test_the_page_and_everything_it_loads_come_from_the_app(page_api: TestClient) -> None:
    page = page_api.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'type="module"' in page.text
    expected_types = {".js": "javascript", ".css": "text/css"}
    seen: set[str] = set()
    queue = loaded_by(page_api, "/", page.text)
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        response = page_api.get(path)
        assert response.status_code == 200, path
        suffix = Path(path).suffix
        assert expected_types[suffix] in response.headers["content-type"], path
        queue.extend(loaded_by(page_api, path, response.text))
    assert "/static/js/main.js" in seen
    assert "/static/vendor/uPlot.esm.js" in seen
    assert "/static/js/sse.js" in seen


def test_our_own_files_name_no_other_host() -> None:
    # The vendored library's comments cite web pages; it loads nothing (checked above).
    for path in STATIC_DIR.rglob("*"):
        if path.is_file() and "vendor" not in path.parts:
            assert not EXTERNAL.search(path.read_text()), f"{path} names another host"


def test_the_page_shadows_no_other_route(page_api: TestClient) -> None:
    assert page_api.get("/healthz").json()["database"] is True
    # The API's routes are still the API's: they answer, and ask for a key, not the page.
    assert page_api.get("/api/v1/agents").status_code == 401
    assert page_api.get("/docs").status_code == 200
    assert page_api.get("/metrics").headers["content-type"].startswith("text/plain")
    assert "/" not in page_api.get("/openapi.json").json()["paths"]
    assert page_api.get("/static/js/nothing.js").status_code == 404
    assert page_api.get("/static/../main.py").status_code == 404
    assert page_api.get("/index.html").status_code == 404


def test_the_wheel_carries_every_static_file() -> None:
    # setuptools globs package-data patterns relative to the package: the same glob here.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["cloud_api"]
    package = ROOT / "cloud_api"
    packaged = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    files = {path for path in STATIC_DIR.rglob("*") if path.is_file()}
    assert files, "no static files found"
    assert files - packaged == set()
