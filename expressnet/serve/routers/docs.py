"""The API reference at ``/docs``: Swagger UI from the files of the ``fastapi-offline`` package (Swagger UI 5,
which reads FastAPI's OpenAPI 3.1 schema), served by this app under ``/docs/static`` — no CDN, no network.
FastAPI's own ``/docs`` and ``/redoc`` load their scripts from a CDN, so the app turns them off."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger("expressnet.serve")
DOCS_URL = "/docs"
ASSETS_URL = "/docs/static"
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")


def swagger_dir() -> Path:
    """The folder with Swagger UI's ``swagger-ui-bundle.js`` and ``swagger-ui.css``."""
    try:
        import fastapi_offline
    except ImportError as exc:
        raise RuntimeError(
            "the API reference at /docs needs the fastapi-offline package: pip install 'expressnet[serve]'"
        ) from exc
    folder = Path(fastapi_offline.__file__).resolve().parent / "static"
    missing = [name for name in SWAGGER_FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline at {folder} lacks {', '.join(missing)}")
    return folder


def csp(html: str) -> str:
    """A Content-Security-Policy that lets the page load only this origin's files and run only its own inline
    script (by hash); Swagger UI sets inline styles and draws data: images."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def add_docs(app: FastAPI, title: str) -> None:
    """``/docs`` (Swagger UI) and its assets under ``/docs/static``, for ``app`` built with ``docs_url=None``.
    Without fastapi-offline the service still runs, with a warning and no ``/docs`` (``/openapi.json`` stays)."""
    try:
        folder = swagger_dir()
    except RuntimeError as exc:
        log.warning("no API reference at %s: %s", DOCS_URL, exc)
        return
    app.mount(ASSETS_URL, StaticFiles(directory=folder), name="docs-static")
    router = APIRouter(include_in_schema=False)

    @router.get(DOCS_URL, response_class=HTMLResponse)
    def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} · API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url="/static/logo.svg",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from swagger.io
        )
        html = page.body.decode()
        headers = {
            "Content-Security-Policy": csp(html),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        return HTMLResponse(html, headers=headers)

    app.include_router(router)
