"""Downloading images: one shared aiohttp session, deadlines, a byte cap, manual redirects
(each hop checked for SSRF), and retries (tenacity) with exponential backoff and jitter for
transient failures (connect errors, timeouts, 5xx, 408, 429), waiting what a `Retry-After`
header asks (capped). Permanent failures fail at once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential
from yarl import URL

from services.processor.domain import ImageError, retry_after_seconds
from shared.metrics import latency_histogram
from shared.ssrf import AddressNotAllowed, GuardedResolver, check_url_host

DOWNLOAD_LATENCY = latency_histogram("imagejobs_processor_download_seconds", "Image download time")
RETRY_AFTER_CAP_S = 10.0  # a server asking for longer is treated as failing now


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, ImageError) and exc.transient


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    connect_timeout_s: float
    total_timeout_s: float
    max_redirects: int
    attempts: int
    retry_base_s: float
    allow_private: bool


class Fetcher:
    def __init__(self, limits: FetchLimits, resolver: GuardedResolver | None = None) -> None:
        self.limits = limits
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._backoff = wait_random_exponential(multiplier=limits.retry_base_s, max=30)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=self._resolver or GuardedResolver(self.limits.allow_private),
                                         limit=256, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.limits.connect_timeout_s),
            headers={"User-Agent": "imagejobs/1.0"}, auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session:
            await self._session.close()

    async def fetch(self, url: str) -> bytes:
        """The body at `url`, retrying transient failures; raises ImageError with the reason.
        The first attempt runs without the retry machinery (most downloads need no retry)."""
        try:
            return await self._attempt(url, 1)
        except ImageError as exc:
            if not exc.transient or self.limits.attempts <= 1:
                raise
            first = exc
        retrying = AsyncRetrying(stop=stop_after_attempt(self.limits.attempts - 1), wait=self._wait,
                                 retry=retry_if_exception(_transient), reraise=True)
        await asyncio.sleep(self._first_wait(first))
        async for attempt in retrying:
            with attempt:
                return await self._attempt(url, attempt.retry_state.attempt_number + 1)
        raise AssertionError("unreachable")

    def _first_wait(self, failure: ImageError) -> float:
        state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
        state.set_exception((ImageError, failure, None))
        return self._wait(state)

    def _wait(self, state: RetryCallState) -> float:
        """What the server asked for (Retry-After), else exponential backoff with full jitter."""
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, ImageError) and failure.retry_after is not None:
            return failure.retry_after
        return float(self._backoff(state))

    async def _attempt(self, url: str, number: int) -> bytes:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.limits.total_timeout_s):
                data = await self._fetch_once(url)
        except TimeoutError:
            raise ImageError(f"download timed out after {self.limits.total_timeout_s:g}s ({number} attempts)",
                             transient=True) from None
        DOWNLOAD_LATENCY.observe(time.perf_counter() - started)
        return data

    async def _fetch_once(self, url: str) -> bytes:
        assert self._session is not None
        try:
            current = URL(url)
        except (ValueError, UnicodeError) as exc:
            raise ImageError(f"invalid URL: {exc}") from None
        for _ in range(self.limits.max_redirects + 1):
            try:
                check_url_host(current.host or "", self.limits.allow_private)
                async with self._session.get(current, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location")
                        if not location:
                            raise ImageError(f"HTTP {response.status} without a Location")
                        try:
                            current = current.join(URL(location))
                        except (ValueError, UnicodeError) as exc:
                            raise ImageError(f"invalid redirect location: {exc}") from None
                        if current.scheme not in ("http", "https"):
                            raise ImageError(f"redirect to a non-http URL: {current.scheme}")
                        continue
                    _raise_for_status(response.status, response.headers.get("Retry-After"))
                    return await self._read_capped(response)
            except AddressNotAllowed as exc:
                raise ImageError(str(exc)) from None
            except aiohttp.ClientConnectorError as exc:
                cause = exc.os_error if hasattr(exc, "os_error") else None
                if isinstance(cause, AddressNotAllowed):
                    raise ImageError(str(cause)) from None
                raise ImageError(f"connection failed: {exc.os_error}", transient=True) from None
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, asyncio.IncompleteReadError,
                    aiohttp.ClientOSError, aiohttp.ServerTimeoutError) as exc:
                raise ImageError(f"connection error: {type(exc).__name__}: {exc}", transient=True) from None
            except aiohttp.ClientError as exc:
                raise ImageError(f"download failed: {type(exc).__name__}: {exc}") from None
            except (ValueError, UnicodeError) as exc:  # yarl/idna refusing a host or path
                raise ImageError(f"invalid URL: {exc}") from None
        raise ImageError(f"too many redirects (more than {self.limits.max_redirects})")

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        declared = response.content_length
        if declared is not None and declared > self.limits.max_bytes:
            raise ImageError(f"image too large: {declared} bytes exceeds {self.limits.max_bytes}")
        if declared is not None:
            # A declared length within the cap: one read of exactly that many bytes (aiohttp
            # stops at Content-Length, so a server sending more cannot exceed the cap).
            return await response.content.readexactly(declared) if declared else b""
        chunks, size = [], 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self.limits.max_bytes:
                raise ImageError(f"image too large: more than {self.limits.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _raise_for_status(status: int, retry_after: str | None = None) -> None:
    if status == 200:
        return
    if status >= 500 or status in (408, 429):
        raise ImageError(f"HTTP {status} from the image server", transient=True,
                         retry_after=retry_after_seconds(retry_after, RETRY_AFTER_CAP_S))
    raise ImageError(f"HTTP {status} from the image server")
