"""Swagger UI at `/docs` and ReDoc at `/redoc`, with their scripts, styles and favicon served
by the service itself from `/static/docs` instead of FastAPI's default CDN, so the pages work
on a machine without internet. The files are Swagger UI 5 and ReDoc 2 (FastAPI writes OpenAPI
3.1, which older releases cannot read), copied from the npm lock file by
`shared/docs_assets/refresh.sh`. Like the OpenAPI document, the pages need no API key: the
Authorize button takes one for "Try it out"."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).parent / "docs_assets" / "static"
ASSETS_PATH = "/static/docs"
SWAGGER_UI_FILES = ("swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css", "swagger-ui/favicon-32x32.png")
REDOC_FILE = "redoc/redoc.standalone.js"


def add_docs_pages(app: FastAPI) -> None:
    """Mount the assets and add `/docs` and `/redoc` (left out of the OpenAPI document). The
    app must be built with `docs_url=None, redoc_url=None`, so FastAPI's CDN pages are not there."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        base = _base(request)
        js, css, favicon = (f"{base}{ASSETS_PATH}/{name}" for name in SWAGGER_UI_FILES)
        return get_swagger_ui_html(openapi_url=f"{base}{app.openapi_url}", title=f"{app.title} - Swagger UI",
                                   swagger_js_url=js, swagger_css_url=css, swagger_favicon_url=favicon)

    async def redoc(request: Request) -> HTMLResponse:
        base = _base(request)
        return get_redoc_html(openapi_url=f"{base}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{base}{ASSETS_PATH}/{REDOC_FILE}",
                              redoc_favicon_url=f"{base}{ASSETS_PATH}/{SWAGGER_UI_FILES[2]}",
                              with_google_fonts=False)  # a font from Google would be an outside request

    app.add_api_route("/docs", swagger_ui, include_in_schema=False)
    app.add_api_route("/redoc", redoc, include_in_schema=False)


def _base(request: Request) -> str:
    """The prefix a reverse proxy mounts the service under (uvicorn's --root-path), as FastAPI's
    own pages use it, so the page's links still reach the service."""
    return str(request.scope.get("root_path", "")).rstrip("/")
