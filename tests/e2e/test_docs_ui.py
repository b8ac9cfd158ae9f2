"""The API docs pages work with the network closed to everything but the service: a user submits
the documented example job through Swagger UI's "Try it out" on ingest's `/docs`, and the job
completes; ReDoc renders on status's `/redoc`. Writes docs/swagger-try-it-out.png each run."""

from __future__ import annotations

import json
from typing import Any

from playwright.sync_api import Locator, Page, expect

from deploy.devstack.paths import PROJECT_ROOT
from tests.support.browser import closed_browser
from tests.support.client import Client

SCREENSHOT = PROJECT_ROOT / "docs" / "swagger-try-it-out.png"
DOCUMENTED_IMAGES = "http://127.0.0.1:8090"  # the sample server of `make run`; the tests run their own


def documented_example(client: Client) -> dict[str, Any]:
    spec = client.http.get(f"{client.ingest}/openapi.json").json()
    example: dict[str, Any] = spec["paths"]["/processJob"]["post"]["requestBody"]["content"]["application/json"][
        "example"]
    return example


def try_it_out(page: Page, client: Client) -> Locator:
    """Expand `POST /processJob`, check the body is pre-filled with the documented example, point
    its image URLs at this stack's image server and execute; the operation's block."""
    operation = page.locator(".opblock-post", has_text="/processJob")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    body = operation.locator("textarea.body-param__text")
    assert json.loads(body.input_value()) == documented_example(client)
    body.fill(body.input_value().replace(DOCUMENTED_IMAGES, client.images))
    operation.get_by_role("button", name="Execute").click()
    return operation


def job_id_shown(operation: Locator) -> str:
    """The job id from the response panel, once Swagger UI shows a 200."""
    live = operation.locator(".live-responses-table .response")
    expect(live.locator(".response-col_status")).to_have_text("200", timeout=15_000)
    answer = json.loads(live.locator(".response-col_description pre").first.inner_text())
    assert answer["message"] == "Job scheduled for processing", answer
    return str(answer["job_id"])


def save_screenshot(page: Page, operation: Locator) -> None:
    """The operation from its title down to the server's response (the documented answers
    below it would triple the height)."""
    top, bottom = operation.bounding_box(), operation.locator(".live-responses-table").bounding_box()
    assert top and bottom
    scrolled = page.evaluate("window.scrollY")
    page.screenshot(path=SCREENSHOT, full_page=True, clip={
        "x": top["x"], "y": top["y"] + scrolled, "width": top["width"],
        "height": bottom["y"] + bottom["height"] - top["y"] + 8})


def test_the_example_job_submitted_through_swagger_ui_completes(client: Client) -> None:
    with closed_browser(client.ingest) as (page, network):
        page.goto(f"{client.ingest}/docs")
        expect(page.locator(".info .title")).to_contain_text("imagejobs ingest")
        operation = try_it_out(page, client)
        job_id = job_id_shown(operation)
        save_screenshot(page, operation)
    assert network.outside() == [] and network.aborted == [], network
    assert f"{client.ingest}/openapi.json" in network.requested
    assert client.wait_final(job_id, deadline_s=20)["status"] == "completed"


def test_redoc_renders_the_status_api_offline(client: Client) -> None:
    with closed_browser(client.status_url) as (page, network):
        page.goto(f"{client.status_url}/redoc")
        expect(page.get_by_role("heading", name="imagejobs status")).to_be_visible(timeout=15_000)
        expect(page.get_by_text("A job's status: scheduled, ongoing").first).to_be_visible()
    assert network.outside() == [] and network.aborted == [], network
    assert f"{client.status_url}/static/docs/redoc/redoc.standalone.js" in network.requested
