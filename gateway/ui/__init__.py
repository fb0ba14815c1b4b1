"""The search page: ``GET /ui`` serves ``static/index.html``; its script and style come from ``/ui/static``.

Plain JavaScript and CSS shipped in the package (no CDN, no build step), so the page works offline. The
page itself is open; its calls to ``/v1`` carry the API key the user enters (kept in sessionStorage).
A Content-Security-Policy keeps every script, style and connection on the gateway's own origin; images
may come from anywhere (URL image fields are loaded by the browser) or be data: URLs (base64 fields).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'self'; img-src 'self' data: blob: http: https:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def install(app: FastAPI) -> None:
    """Add ``/ui`` (the page) and ``/ui/static`` (its files) to the gateway's app."""
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")

    @app.get("/ui", include_in_schema=False)
    async def search_page() -> HTMLResponse:
        html = (STATIC / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})

    @app.get("/ui/", include_in_schema=False)
    async def search_page_slash() -> RedirectResponse:
        return RedirectResponse("/ui")
