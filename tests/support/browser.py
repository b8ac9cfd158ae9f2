"""Debian's Chromium, driven by Playwright, with the network closed to everything but the
services under test. Every request a page makes is recorded; one to any other host is aborted,
so a page that needs something from outside shows up in `ClosedNetwork.outside` and fails.
Playwright's own browser builds are never downloaded (`playwright install` is not run)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Page, Request, Route, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium's own connections (updates, sync, field
# trials) are attempted and refused; the resolver rule is a second lock behind the route below:
# no name but the loopback address resolves for the whole browser process.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
NETWORK_SCHEMES = {"http", "https", "ws", "wss"}  # not data: or blob:, which never leave the page


@dataclass
class ClosedNetwork:
    """Lets through requests to `allowed` (host:port) only, remembering every request seen."""

    allowed: set[str]
    requested: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)

    def record(self, request: Request) -> None:
        self.requested.append(request.url)

    def route(self, route: Route) -> None:
        if self.is_allowed(route.request.url):
            route.continue_()
        else:
            self.aborted.append(route.request.url)
            route.abort("blockedbyclient")

    def is_allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme not in NETWORK_SCHEMES or parts.netloc in self.allowed

    def outside(self) -> list[str]:
        """Requests to anywhere but the services, attempted or aborted."""
        return [url for url in self.requested + self.aborted if not self.is_allowed(url)]


@contextmanager
def closed_browser(*service_urls: str) -> Iterator[tuple[Page, ClosedNetwork]]:
    """A page in a fresh Chromium profile that may reach only `service_urls`."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make setup` installs it (deploy/install-system-deps.sh)"
    network = ClosedNetwork({urlsplit(url).netloc for url in service_urls})
    with sync_playwright() as playwright:
        # Playwright starts it with a new empty user-data-dir of its own, deleted on close
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.on("request", network.record)
            context.route("**/*", network.route)
            yield context.new_page(), network
        finally:
            browser.close()
