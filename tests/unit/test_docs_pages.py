"""The docs pages of both HTTP services point only at the service's own assets, load without an
API key when keys are on, and the committed assets are the versions the npm lock file pins."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from fastapi import FastAPI

from services.ingest.app import create_app as ingest_app
from services.ingest.settings import IngestSettings
from services.status.app import create_app as status_app
from services.status.settings import StatusSettings
from shared.docs_pages import ASSETS, REDOC_FILE, SWAGGER_UI_FILES

LOCK = ASSETS.parent / "package-lock.json"


def apps_with_keys_on() -> list[tuple[FastAPI, str, str]]:
    """Each service built, not started (the pages need neither Kafka nor PostgreSQL), with a
    route that keys guard."""
    return [(ingest_app(IngestSettings(api_keys="secret-key")), "POST", "/processJob"),
            (status_app(StatusSettings(api_keys="secret-key")), "GET", "/api/jobs")]


@pytest.mark.parametrize(("app", "method", "guarded"), apps_with_keys_on(), ids=["ingest", "status"])
async def test_pages_and_assets_load_without_a_key_and_link_nothing_outside(app: FastAPI, method: str,
                                                                             guarded: str) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as http:
        for page in ("/docs", "/redoc"):
            html = (await http.get(page)).raise_for_status().text
            links = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)
            assert links and all(link.startswith("/") for link in links), (page, links)
            for link in links:
                assert (await http.get(link)).status_code == 200, (page, link)
        assert (await http.request(method, guarded, json={})).status_code == 401  # keys are on for the API
        schema = (await http.get("/openapi.json")).json()
        assert not {"/docs", "/redoc"} & set(schema["paths"])


def test_the_committed_assets_are_the_locked_releases() -> None:
    packages = json.loads(LOCK.read_text())["packages"]
    swagger_ui, redoc = (packages[f"node_modules/{name}"]["version"] for name in ("swagger-ui-dist", "redoc"))
    assert swagger_ui.startswith("5.") and redoc.startswith("2."), "OpenAPI 3.1 needs Swagger UI 5 and ReDoc 2"
    assert f'"{swagger_ui}"' in (ASSETS / SWAGGER_UI_FILES[0]).read_text(), "run shared/docs_assets/refresh.sh"
    bundle = (ASSETS / REDOC_FILE).read_text()
    assert redoc in bundle and "cdn.redoc.ly" not in bundle, "run shared/docs_assets/refresh.sh"
    for licence in ("swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE"):
        assert (ASSETS / licence).stat().st_size > 0
