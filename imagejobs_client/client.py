"""A small HTTP client for the imagejobs APIs (used by the `imagejobs` command): every error
becomes one `ApiError` with a clear message, never a stack trace."""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.events import FINAL_STATUSES

SUBMIT_RETRY_FOR_S = 60.0
STREAM_ATTEMPTS = 8  # fruitless connections in a row before `follow` falls back to polling
STREAM_IDLE_S = 60.0  # no byte for this long (heartbeats come every 15 s): the stream is dead
# A 503 or no answer while following (a status service restarting, say) is asked again for this
# long before `follow` gives up; a stream's Retry-After is waited out, up to RETRY_AFTER_CAP_S
FOLLOW_RETRY_FOR_S = 60.0
RETRY_AFTER_CAP_S = 5.0


class ApiError(Exception):
    """What went wrong, in one line; `exit_code` for the command. `retriable`: nothing was done
    and the same request may be sent again (a 503, or no answer at all)."""

    def __init__(self, message: str, exit_code: int = 1, retriable: bool = False,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.retriable = retriable
        self.retry_after_s = retry_after_s


@dataclass
class ImagejobsClient:
    """One client may be shared by many threads. Its calls go over one pool of kept-alive
    connections: `httpx.request` builds a new client, and with it a TLS context, for every call
    (about 30 ms of CPU), which capped one process at about 30 submits/s."""

    ingest_url: str = field(default_factory=lambda: os.environ.get("IMAGEJOBS_URL", "http://127.0.0.1:8000"))
    status_url: str = field(default_factory=lambda: os.environ.get("IMAGEJOBS_STATUS_URL", "http://127.0.0.1:8001"))
    api_key: str | None = field(default_factory=lambda: os.environ.get("API_KEY") or None)
    timeout_s: float = 60.0
    _http: httpx.Client = field(init=False, repr=False, compare=False,
                                default_factory=lambda: httpx.Client(limits=httpx.Limits(max_connections=None)))

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        headers.update(kwargs.pop("headers", {}))
        try:
            response = self._http.request(method, url, headers=headers, timeout=self.timeout_s, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach {url}: {exc}", retriable=True) from None
        if response.status_code >= 400:
            raise _api_error(response)
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):  # every answer of the APIs is a JSON object
            return body
        return {"error": response.text[:200] or response.reason_phrase}

    def submit(self, job: dict[str, Any], idempotency_key: str | None = None,
               retry_for_s: float = SUBMIT_RETRY_FOR_S) -> dict[str, Any]:
        """Submit with an Idempotency-Key (a fresh one unless given) and, for up to
        `retry_for_s`, retry a 503 or a dropped connection with the same key: the job is
        created once, however many attempts it took."""
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return self._retrying(lambda: self._call("POST", f"{self.ingest_url}/processJob", json=job,
                                                 headers=headers), retry_for_s)

    def _retrying(self, call: Callable[[], dict[str, Any]], retry_for_s: float) -> dict[str, Any]:
        """`call()`, asked again after a retriable ApiError (a 503, or no answer) for up to
        `retry_for_s`: after what its Retry-After asks (up to 10 s), else after a backoff with
        jitter."""
        deadline = time.monotonic() + retry_for_s
        attempt = 0
        while True:
            try:
                return call()
            except ApiError as exc:
                if not exc.retriable or time.monotonic() >= deadline:
                    raise
                attempt += 1
                time.sleep(min(exc.retry_after_s or 0.0, 10.0) or random.uniform(0, min(5.0, 0.2 * 2 ** attempt)))

    def status(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"{self.status_url}/api/status/{job_id}")

    def results(self, job_id: str) -> list[dict[str, Any]]:
        """Every result of the job, all pages."""
        items: list[dict[str, Any]] = []
        while True:
            page = self._call("GET", f"{self.status_url}/api/jobs/{job_id}/results",
                              params={"limit": 1000, "offset": len(items)})["results"]
            items += page
            if len(page) < 1000:
                return items

    def webhook(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"{self.status_url}/api/jobs/{job_id}/webhook")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"{self.status_url}/api/jobs/{job_id}")

    def reschedule(self, job_id: str, when: str) -> dict[str, Any]:
        return self._call("PATCH", f"{self.status_url}/api/jobs/{job_id}",
                          json={"scheduled_time": when})

    def jobs(self, status: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return self._call("GET", f"{self.status_url}/api/jobs", params=params)

    def follow(self, job_id: str, every_s: float = 0.5) -> Iterator[dict[str, Any]]:
        """The job's status each time it changes, the final one last: over its progress stream
        (Server-Sent Events), reconnecting with `Last-Event-ID` when a connection drops, so
        nothing already seen is sent again; by polling every `every_s` when the server has no
        stream (an older release) or the stream keeps failing (a proxy that buffers it).

        A 503 (a status service starting, or at its stream limit) is asked again like a dropped
        connection, after what its Retry-After asks: a client that reconnected to a restarted
        service before it had connected to Kafka and PostgreSQL stopped following the job."""
        url = f"{self.status_url}/api/jobs/{job_id}/events"
        last_id: str | None = None
        failures = 0  # connections in a row that brought nothing
        while failures < STREAM_ATTEMPTS:
            headers = {"Accept": "text/event-stream", **self._auth()}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            asked_to_wait = 0.0
            try:
                with httpx.stream("GET", url, headers=headers,
                                  timeout=httpx.Timeout(self.timeout_s, read=STREAM_IDLE_S)) as response:
                    if response.status_code == 204:  # we have the final status already
                        return
                    if response.status_code in (404, 405) and last_id is None:
                        break  # no stream on this server (the job exists: the caller read it)
                    if response.status_code >= 400:
                        response.read()
                        error = _api_error(response, f" ({url})")
                        if not error.retriable:
                            raise error
                        asked_to_wait = min(error.retry_after_s or 0.0, RETRY_AFTER_CAP_S)
                    else:
                        for event_id, status in _sse_statuses(response.iter_lines()):
                            last_id, failures = event_id, 0
                            yield status
                            if status.get("status") in FINAL_STATUSES:
                                return
            except httpx.HTTPError:
                pass  # dropped: reconnect where we were
            time.sleep(max(asked_to_wait, min(5.0, 0.2 * 2 ** failures) * random.uniform(0.5, 1.0)))
            failures += 1
        yield from self._poll(job_id, every_s)

    def _poll(self, job_id: str, every_s: float) -> Iterator[dict[str, Any]]:
        """Each change of the job's status until it is final; a 503 or no answer is asked again
        as `submit` asks it, for up to FOLLOW_RETRY_FOR_S in a row."""
        seen = None
        while True:
            body = self._retrying(lambda: self.status(job_id), FOLLOW_RETRY_FOR_S)
            if body != seen:
                seen = body
                yield body
            if body.get("status") in FINAL_STATUSES:
                return
            time.sleep(every_s)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}



def _api_error(response: httpx.Response, where: str = "") -> ApiError:
    """An error answer as one ApiError: its `{"error"}` (or the start of its text), retriable on
    503, with the wait its Retry-After asks."""
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:200]}
    message = body.get("error") if isinstance(body, dict) else None
    after = response.headers.get("retry-after", "")
    return ApiError(f"{response.status_code}: {message or response.reason_phrase}{where}",
                    retriable=response.status_code == 503, retry_after_s=float(after) if after.isdigit() else None)


def _sse_statuses(lines: Iterator[str]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(id, status) of each `status` event in a Server-Sent Events stream; comments (the
    heartbeats) and other fields are skipped."""
    event_id: str | None = None
    data: list[str]
    kind, data = "message", []
    for line in lines:
        if not line:
            if data and kind == "status":
                yield event_id, json.loads("\n".join(data))
            kind, data = "message", []
            continue
        field_name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field_name == "data":
            data.append(value)
        elif field_name == "id":
            event_id = value
        elif field_name == "event":
            kind = value
