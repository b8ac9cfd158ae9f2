"""Every HTTP answer the tests get from ingest and status, checked against the service's own
OpenAPI document: the status code is documented for that path and method, a JSON body is valid
for the documented schema (JSON Schema 2020-12, which OpenAPI 3.1 uses; a field the schema does
not name counts as a mismatch too, so a hand-built body cannot grow undocumented fields), and a
progress stream is a documented `text/event-stream` answer.

`ContractCheck.install(monkeypatch)` wraps httpx's transports (every client, `httpx.get` too), so
a test cannot talk to a service around it. A mismatch raises at the call that received it and is
also kept, so a test that swallowed the exception still fails when it ends."""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker

# the services whose documents are the contract (FastAPI titles, shared/http.py new_app)
CHECKED_TITLES = {"imagejobs ingest", "imagejobs status"}
OWN_PATHS = {"/openapi.json"}  # the document itself: read to check the rest
# routes the document leaves out on purpose because they answer as a documented one
ALIASES = {"/api/submit": "/processJob", "/api/submit/": "/processJob"}  # services/ingest/app.py PATHS


class ContractMismatch(AssertionError):
    pass


@dataclass
class Operation:
    responses: dict[str, Any]
    validators: Validators

    def check(self, status: int, content_type: str, body: bytes | None) -> str | None:
        """None if the answer is as documented, else what is wrong with it."""
        answer = self.responses.get(str(status)) or self.responses.get(f"{str(status)[0]}XX")
        if answer is None:
            return f"status {status} is not documented (documented: {sorted(self.responses)})"
        documented = answer.get("content", {})
        media = content_type.split(";")[0].strip()
        if not documented:
            return None if not body else f"status {status} documents no body, got {media!r}"
        if media not in documented:
            return f"content type {media!r} is not documented for {status} (documented: {sorted(documented)})"
        schema = documented[media].get("schema")
        if media != "application/json" or schema is None or body is None:
            return None
        return self._invalid(schema, body)

    def _invalid(self, schema: dict[str, Any], body: bytes) -> str | None:
        try:
            value = json.loads(body)
        except ValueError as exc:
            return f"the body is not JSON ({exc}): {body[:200]!r}"
        validator = self.validators.of(schema)
        problems = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if not problems:
            return None
        said = "; ".join(f"at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in problems[:5])
        return f"the body does not match the documented schema: {said}; body: {body[:300]!r}"


@dataclass
class Validators:
    """A validator per response schema of one document, built once (its components beside it)."""

    components: dict[str, Any]
    built: dict[str, Draft202012Validator] = field(default_factory=dict)

    def of(self, schema: dict[str, Any]) -> Draft202012Validator:
        key = json.dumps(schema, sort_keys=True)
        if key not in self.built:
            self.built[key] = Draft202012Validator({**closed(schema), "components": self.components},
                                                   format_checker=FormatChecker())
        return self.built[key]


@dataclass
class Document:
    """One service's OpenAPI document, its path templates as patterns."""

    spec: dict[str, Any]
    validators: Validators = field(init=False)
    patterns: list[tuple[re.Pattern[str], str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validators = Validators(closed(self.spec.get("components", {})))
        for template in self.spec.get("paths", {}):
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            self.patterns.append((re.compile(f"^{pattern}$"), template))

    def operation(self, method: str, path: str) -> Operation | None:
        for pattern, template in self.patterns:
            if pattern.match(path):
                found = self.spec["paths"][template].get(method.lower())
                if found is not None:
                    return Operation(found.get("responses", {}), self.validators)
        return None


@dataclass
class ContractCheck:
    documents: dict[str, Document | None] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    undocumented: set[tuple[str, str, str]] = field(default_factory=set)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        sync_send = httpx.HTTPTransport.handle_request
        async_send = httpx.AsyncHTTPTransport.handle_async_request

        def handle_request(transport: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
            response = sync_send(transport, request)
            self.after(request, response, response.read)
            return response

        async def handle_async_request(transport: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
            response = await async_send(transport, request)
            body = None if _is_stream(response) else await response.aread()
            self.after(request, response, lambda: body)
            return response

        monkeypatch.setattr(httpx.HTTPTransport, "handle_request", handle_request)
        monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", handle_async_request)

    def after(self, request: httpx.Request, response: httpx.Response, read: Any) -> None:
        url = request.url
        if url.path in OWN_PATHS:
            return
        document = self.document(f"{url.scheme}://{url.netloc.decode()}")
        if document is None:
            return
        operation = document.operation(request.method, ALIASES.get(url.path, url.path))
        if operation is None:  # a route left out of the document on purpose (probes, metrics, aliases)
            self.undocumented.add((document.spec["info"]["title"], request.method, url.path))
            return
        body = None if _is_stream(response) else read()
        wrong = operation.check(response.status_code, response.headers.get("content-type", ""), body)
        if wrong is not None:
            message = f"{request.method} {url} answered {response.status_code}, not as documented: {wrong}"
            self.mismatches.append(message)
            raise ContractMismatch(message)

    def document(self, origin: str) -> Document | None:
        """The origin's OpenAPI document if it is one of the checked services, read once."""
        if origin not in self.documents:
            self.documents[origin] = _read_document(origin)
        return self.documents[origin]


def closed(schema: Any) -> Any:
    """`schema` with every object that lists its properties and says nothing of others closed
    (`additionalProperties: false`)."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: closed(value) for key, value in schema.items()}
    if isinstance(out.get("properties"), dict) and not {"additionalProperties", "patternProperties",
                                                         "unevaluatedProperties"} & set(out):
        out["additionalProperties"] = False
    return out


def _is_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


def _read_document(origin: str) -> Document | None:
    try:  # urllib, not httpx: this read is not itself checked
        with urllib.request.urlopen(f"{origin}/openapi.json", timeout=10) as answer:
            spec = json.loads(answer.read())
    except (OSError, ValueError):
        return None
    if not isinstance(spec, dict) or spec.get("info", {}).get("title") not in CHECKED_TITLES:
        return None
    return Document(spec)
