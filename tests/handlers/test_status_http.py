"""The status app's HTTP mapping (services/status/app.py) over the use cases wired to the fakes
of tests/handlers/fakes_status.py (the app is not started: no Kafka, no database): answers are
the API models' JSON, each domain error its status code, body and headers."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from fastapi import Request

from services.status.app import create_app, use_cases
from services.status.bootstrap import StatusUseCases
from services.status.handlers.commands import Decisions, JobCommands
from services.status.handlers.progress import JobProgress, ProgressHub
from services.status.handlers.webhooks import WebhookReader
from services.status.settings import StatusSettings
from shared.auth import parse_api_keys
from tests.handlers.fakes_status import FakeBus, FakeView, FakeWebhooks, reader

KEY = "sk-team-a"


class Client:
    """Requests to the app in-process (httpx over ASGI), with team-a's key unless told (`keyless`:
    no Authorization header at all); an exception the app raised after its 500 answer is raised
    here too."""

    def __init__(self, app: Any, keyless: bool = False) -> None:
        self.app, self.keyless = app, keyless

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False),
                                         base_url="http://status",
                                         headers={} if self.keyless else {"Authorization": f"Bearer {KEY}"}) as http:
                return await http.request(method, path, headers=headers, **kwargs)
        return asyncio.run(send())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def delete(self, path: str) -> httpx.Response:
        return self.request("DELETE", path)


def client(view: FakeView, connected: bool = True, streams: int = 10) -> Client:
    app = create_app(StatusSettings(api_keys=f"{KEY}:team-a"))
    jobs = reader(view, wait_s=0.05, connected=connected)
    commands = JobCommands(jobs, FakeBus(view), Decisions(view), ZoneInfo("UTC"), 366, wait_s=0.05, view_wait_s=0.05)
    app.state.use_cases = StatusUseCases(jobs, commands, JobProgress(jobs, view, ProgressHub(view, 0.01, streams)),
                                         WebhookReader(jobs, FakeWebhooks({})), parse_api_keys(f"{KEY}:team-a"))
    return Client(app)


def test_a_status_is_written_as_before() -> None:
    view = FakeView()
    job = view.add(owner="team-a")
    answer = client(view).get(f"/api/status/{job}")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.content == (
        f'{{"job_id":"{job}","status":"scheduled","scheduled_time":"2026-12-06T09:00:00Z","priority":3,'
        '"images":{"total":2,"succeeded":0,"failed":0,"pending":2,"started":0}}').encode()
    assert client(view).get("/api/status", params={"jobid": str(job)}).json()["job_id"] == str(job)


@pytest.mark.parametrize("method, path, body, status, error", [
    ("GET", "/api/status/nope", None, 400, "job_id: must be a UUID"),
    ("GET", "/api/status", None, 400, "jobid: required"),
    ("GET", f"/api/status/{uuid4()}", None, 404, "job not found"),
    ("GET", "/api/jobs?status=done", None, 400, "status: must be one of scheduled, ongoing, completed, failed,"
                                                " cancelled"),
    ("POST", "/api/status", b"{", 400, 'body: must be JSON, e.g. {"job_ids": ['),
    ("POST", "/api/status", b'{"job_ids": []}', 400, "job_ids: from 1 to 1000 ids, got 0"),
    ("GET", "/api/jobs/{job}/webhook", None, 404, "job has no callback_url (no webhook)"),
    ("DELETE", "/api/jobs/{ongoing}", None, 409, "job is already ongoing; only a scheduled job can be cancelled"),
    ("PATCH", "/api/jobs/{job}", b'{"scheduled_time": "soon"}', 400, "scheduled_time:"),
    ("DELETE", "/api/jobs/{job}", None, 504, "the scheduler has not decided the cancel yet; it stays queued"),
])
def test_each_refusal_is_its_status_and_error_body(method: str, path: str, body: bytes | None, status: int,
                                                   error: str) -> None:
    view = FakeView()
    job, ongoing = view.add(owner="team-a"), view.add("ongoing", owner="team-a")
    answer = client(view).request(method, path.format(job=job, ongoing=ongoing), content=body)
    assert answer.status_code == status and answer.json()["error"].startswith(error), answer.text
    assert "Retry-After" not in answer.headers


def test_not_ready_is_503_with_retry_after_and_a_bad_key_401() -> None:
    view = FakeView()
    job = view.add(owner="team-a")
    for answer in (client(view, connected=False).get(f"/api/status/{job}"),
                   client(view, streams=0).get(f"/api/jobs/{job}/events")):
        assert (answer.status_code, answer.headers["Retry-After"]) == (503, "1")
        assert answer.json()["error"].endswith("retry shortly")
    refused = client(view).get(f"/api/status/{job}", headers={"Authorization": "Bearer nope"})
    assert (refused.status_code, refused.json(), refused.headers["WWW-Authenticate"]) == (
        401, {"error": "missing or invalid API key"}, "Bearer")


def test_a_cancelled_job_answers_the_cancel_with_the_job() -> None:
    view = FakeView()
    job = view.add("cancelled", owner="team-a")
    answer = client(view).delete(f"/api/jobs/{job}")
    assert answer.status_code == 200
    assert answer.json() == {"job_id": str(job), "status": "cancelled", "scheduled_time": "2026-12-06T09:00:00Z"}


class DownView(FakeView):
    async def load_jobs(self, job_ids: list[Any]) -> list[Any]:
        raise psycopg.OperationalError("connection refused")


class BrokenView(FakeView):
    async def load_jobs(self, job_ids: list[Any]) -> list[Any]:
        raise RuntimeError("a bug")


def routed_counting(calls: list[str], cases: StatusUseCases) -> Any:
    """A stand-in for the route's `use_cases` dependency that notes each request it served."""
    async def routed(request: Request) -> StatusUseCases:
        calls.append(request.url.path)
        return cases
    return routed


def test_the_status_read_shortcut_answers_exactly_as_the_routed_read() -> None:
    """`GET /api/status/{id}` skips FastAPI's routing (app.StatusReadShortcut); `GET
    /api/status?jobid=` does not. Every outcome is the same status, body and headers: a status,
    400, 401 (no key, an unknown one, another scheme, an empty token), 404 (unknown, another
    tenant's), 503 (not connected, the database down) and a bug's 500; none is read twice."""
    view = FakeView()
    mine, theirs = view.add(owner="team-a"), view.add(owner="team-b")
    failed = view.add(owner="team-a")
    view.move(failed, "failed", 1, 1)
    cases: list[tuple[Client, str, dict[str, str]]] = [
        (client(view), str(job), {}) for job in (mine, failed, theirs, uuid4(), "nope")]
    cases += [(client(view), str(mine), {"Authorization": auth}) for auth in
              ("Bearer nope", "Basic c2stdGVhbS1h", "Bearer ", f"bearer {KEY}")]
    keyless = client(view)
    keyless.keyless = True
    cases += [(keyless, str(mine), {}), (client(view, connected=False), str(mine), {}),
              (client(DownView()), str(mine), {}), (client(BrokenView()), str(mine), {})]
    codes: list[int] = []
    for http, job_id, headers in cases:
        routed_calls: list[str] = []
        http.app.dependency_overrides[use_cases] = routed_counting(routed_calls, http.app.state.use_cases)
        short = http.get(f"/api/status/{job_id}", headers=headers)
        routed_answer = http.get("/api/status", params={"jobid": job_id}, headers=headers)
        assert (short.status_code, short.content) == (routed_answer.status_code, routed_answer.content), job_id
        for name in ("content-type", "content-length", "retry-after", "www-authenticate"):
            assert short.headers.get(name) == routed_answer.headers.get(name), (job_id, headers, name)
        assert routed_calls == ["/api/status"], (job_id, headers)  # the shortcut answered, and only once
        codes.append(short.status_code)
    assert codes == [200, 200, 404, 404, 400, 401, 401, 401, 200, 401, 503, 503, 500]
    assert client(view).get(f"/api/status/{failed}").json()["status"] == "failed"  # a failed job was among them


def test_under_a_root_path_the_status_read_goes_through_the_router() -> None:
    """Behind a proxy serving the app under a prefix (`--root-path`), the router strips the
    prefix before matching; the shortcut does not try to, and leaves such a read to it."""
    view = FakeView()
    job = view.add(owner="team-a")
    app = client(view).app
    calls: list[str] = []
    app.dependency_overrides[use_cases] = routed_counting(calls, app.state.use_cases)

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, root_path="/svc"),
                                     base_url="http://status", headers={"Authorization": f"Bearer {KEY}"}) as http:
            return await http.get(path)
    answer = asyncio.run(get(f"/svc/api/status/{job}"))
    assert answer.status_code == 200 and answer.json()["job_id"] == str(job)
    assert calls == [f"/svc/api/status/{job}"]
