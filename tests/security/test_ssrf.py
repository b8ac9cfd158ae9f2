"""SSRF: image URLs that reach this machine or private networks are refused with a clear reason
and no connection is made (a listener records connections).

Only loopback spellings are exercised against live processes: this workplace forbids sending
traffic to any other address, even by accident. Refusal of 10/8, 172.16/12, 192.168/16,
169.254.169.254 and the rest is proven in tests/unit/test_ssrf.py on the same gate function.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from aiohttp import web

from services.processor.adapters.fetch import Fetcher, FetchLimits
from services.processor.domain import ImageError
from shared.ssrf import GuardedResolver
from tests.support.client import Client
from tests.support.listener import ConnectionRecorder


@pytest.fixture(scope="module")
def listener() -> Iterator[ConnectionRecorder]:
    recorder = ConnectionRecorder()
    yield recorder
    recorder.close()


def _spellings(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/a.png",
        f"http://localhost:{port}/a.png",           # a name resolving to loopback
        f"http://[::1]:{port}/a.png",
        f"http://0.0.0.0:{port}/a.png",
        f"http://[::ffff:127.0.0.1]:{port}/a.png",  # IPv4-mapped IPv6
        f"http://2130706433:{port}/a.png",          # decimal 127.0.0.1
        f"http://0177.0.0.1:{port}/a.png",          # octal
        f"http://127.1:{port}/a.png",
    ]


def test_every_loopback_spelling_is_refused_without_connecting(guarded_client: Client,
                                                               listener: ConnectionRecorder) -> None:
    urls = _spellings(listener.port)
    visits = [{"store_id": "S00339218", "image_url": [u], "visit_time": "10:00"} for u in urls]
    job_id = guarded_client.submit_ok({"count": len(visits), "visits": visits})
    final = guarded_client.wait_final(job_id, deadline_s=60)
    assert final["status"] == "failed" and final["images"]["failed"] == len(urls)
    results = guarded_client.http.get(f"{guarded_client.status_url}/api/jobs/{job_id}/results").json()["results"]
    reasons = {r["image_url"]: r["error"] for r in results}
    for url in urls:
        assert reasons[url].startswith("address not allowed"), (url, reasons[url])
    assert listener.connections == []


class _PublicTestResolver(GuardedResolver):
    """Pretends `public.test` is a public host (served on loopback); everything else is guarded."""

    def __init__(self, public_port: int) -> None:
        super().__init__(allow_private=False)
        self.public_port = public_port

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):  # type: ignore[no-untyped-def]
        if host == "public.test":
            return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET,
                     "proto": 0, "flags": 0}]
        return await super().resolve(host, port, family)


async def _fetch_via_redirect(target: str) -> str:
    app = web.Application()
    app.router.add_get("/r", lambda _: web.HTTPFound(target))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    fetcher = Fetcher(FetchLimits(1_000_000, 2, 5, 3, 1, 0.01, allow_private=False),
                      resolver=_PublicTestResolver(port))
    await fetcher.start()
    try:
        await fetcher.fetch(f"http://public.test:{port}/r")
        return "fetched"
    except ImageError as exc:
        return str(exc)
    finally:
        await fetcher.close()
        await runner.cleanup()


@pytest.mark.parametrize("hop", ["127.0.0.1", "localhost", "[::1]", "2130706433"])
def test_a_public_url_redirecting_to_loopback_is_refused(listener: ConnectionRecorder, hop: str) -> None:
    reason = asyncio.run(_fetch_via_redirect(f"http://{hop}:{listener.port}/a.png"))
    assert reason.startswith("address not allowed"), reason
    assert listener.connections == []
