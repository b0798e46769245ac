"""The status page: `/` for browsers, its script and its style sheet.

`/` also answers the inference and vision dialects' service info as JSON, so the
page goes only to a client that ranks `text/html` above JSON (browsers do; API
clients send `*/*`, `application/json` or nothing). The files are static and hold
no data: with auth on, the page asks for a key and sends it with each request.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter(tags=["status page"], include_in_schema=False)

SCRIPT_PATH = "/ui/status.js"
STYLE_PATH = "/ui/status.css"
PATHS = frozenset({SCRIPT_PATH, STYLE_PATH})  # public, like `/` (auth.PUBLIC_PATHS)
HTML_TYPES = ("text/html", "application/xhtml+xml")
JSON_TYPES = ("application/json", "application/*", "*/*")  # most specific first
HEADERS = {"Cache-Control": "no-cache", "Vary": "Accept"}


def _ranges(accept: str) -> dict[str, float]:
    """Media range -> its quality (`q`, default 1; an unreadable q counts as 0)."""
    ranked: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            ranked[media.lower()] = max(quality, ranked.get(media.lower(), 0.0))
    return ranked


def wants_html(accept: str | None) -> bool:
    """Whether an `Accept` header ranks HTML above JSON; a tie keeps the JSON."""
    ranked = _ranges(accept or "")
    html = max((ranked.get(t, 0.0) for t in HTML_TYPES), default=0.0)
    json = next((ranked[t] for t in JSON_TYPES if t in ranked), 0.0)
    return html > 0 and html > json


@cache
def _read(name: str) -> str:
    return (resources.files("pixelpool.api") / "static" / name).read_text(encoding="utf-8")


def page() -> HTMLResponse:
    return HTMLResponse(_read("status.html"), headers=HEADERS)


@router.get(SCRIPT_PATH)
async def script() -> Response:
    return Response(_read("status.js"), media_type="text/javascript", headers=HEADERS)


@router.get(STYLE_PATH)
async def style() -> Response:
    return Response(_read("status.css"), media_type="text/css", headers=HEADERS)
