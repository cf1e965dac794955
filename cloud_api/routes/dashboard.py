"""``/``: the dashboard page; ``/static/...``: its scripts, stylesheet and vendored chart library.

Plain HTML and ES modules, no build step. The page calls only the public REST API with an API
key, so it needs nothing from the server beyond these files. The files themselves are public:
the key is asked for by the page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

# The browser itself refuses anything but this origin: no external scripts, styles or calls.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=FileResponse)
def index() -> FileResponse:
    """The page; revalidated on every load so an upgrade of the API shows at once."""
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html; charset=utf-8",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def static_files() -> StaticFiles:
    """The page's assets, mounted at ``/static``."""
    return StaticFiles(directory=STATIC_DIR)
