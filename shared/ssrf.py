"""Outbound safety: which addresses a service may connect to (pure), and an aiohttp resolver
that enforces it on every connection, redirects included. The processor's image downloads and
the status service's webhooks go by the same rules (IMAGE_ALLOW_PRIVATE_NETWORKS and
WEBHOOK_ALLOW_PRIVATE_NETWORKS open loopback and private networks for each).

aiohttp connects only to addresses its resolver returns, so filtering there checks the
address actually connected to (no DNS-rebinding gap between check and connect). IP literals
bypass resolvers in aiohttp, so `check_url_host` checks them before each request.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from functools import lru_cache

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver


class AddressNotAllowed(OSError):
    pass


def address_allowed(address: str, allow_private: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if any(v4 is not None and not address_allowed(str(v4), allow_private) for v4 in embedded):
            return False  # a v6 wrapper around a refused v4 address
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        elif ip.is_site_local:
            return allow_private
    if ip.is_unspecified or ip.is_multicast:
        return False
    if ip.is_loopback:
        return allow_private  # before `reserved`: ipaddress counts ::1 as reserved
    if ip.is_reserved:
        return False
    if ip.is_link_local or ip.is_private:
        return allow_private
    return ip.is_global


def legacy_ipv4(host: str) -> str | None:
    """The address behind a non-canonical IPv4 spelling (`2130706433`, `0177.0.0.1`, `0x7f.1`)
    that C resolvers accept, or None."""
    if not re.fullmatch(r"[0-9a-fA-FxX.]+", host) or not re.search(r"\d", host):
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None


def check_url_host(host: str, allow_private: bool) -> None:
    """Refuse an IP-literal host (any spelling) that is not allowed; names go to the resolver."""
    refusal = _host_refusal(host, allow_private)
    if refusal is not None:
        raise AddressNotAllowed(refusal)


@lru_cache(maxsize=4096)  # a pure verdict per host: parsing addresses is a hot path per image
def _host_refusal(host: str, allow_private: bool) -> str | None:
    try:
        _check_url_host(host, allow_private)
    except AddressNotAllowed as exc:
        return str(exc)
    return None


def _check_url_host(host: str, allow_private: bool) -> None:
    literal = host.strip("[]")
    try:
        ipaddress.ip_address(literal.split("%")[0])
    except ValueError:
        legacy = legacy_ipv4(literal)
        if legacy is not None and (legacy != literal or not address_allowed(legacy, allow_private)):
            raise AddressNotAllowed(f"address not allowed: {host} (= {legacy}; "
                                    "only canonical IP addresses are accepted)") from None
        return  # a name: the resolver checks what it resolves to
    if not address_allowed(literal, allow_private):
        raise AddressNotAllowed(f"address not allowed: {host}")


class GuardedResolver(AbstractResolver):
    def __init__(self, allow_private: bool) -> None:
        self._inner = ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        resolved = await self._inner.resolve(host, port, family)
        allowed = [r for r in resolved if address_allowed(r["host"], self._allow_private)]
        if not allowed:
            raise AddressNotAllowed(
                f"address not allowed: {host} resolves to {resolved[0]['host'] if resolved else 'nothing'}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
