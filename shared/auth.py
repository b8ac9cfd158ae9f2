"""Optional API keys and tenants: with `API_KEYS` set, requests need `Authorization: Bearer <key>`.

`API_KEYS="key:tenant[,key:tenant…]"`. Each entry is split on its LAST ':' (a key may contain
':' when a tenant follows). A job belongs to its tenant: every key of the tenant sees and
commands it, rotating a key keeps the jobs. An entry without ':tenant' is a tenant of its own,
named by the hash of its key (`owner_of`): the owner jobs were recorded under before tenants
existed, so such a deployment keeps working unchanged.

A job recorded before tenants existed carries the hash of the key that submitted it; it
belongs to the tenant that key is now listed under (`ApiKeys.owners_of`). Keys themselves are
never stored, logged or published: only tenant names (and those legacy hashes) are.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from fastapi import Request

log = logging.getLogger(__name__)


class BadApiKeys(ValueError):
    """API_KEYS cannot be read; the message names the entry by position, never the key."""


def owner_of(key: str) -> str:
    """The legacy owner of `key`: what jobs submitted with it recorded before tenants existed,
    and the name of a keyless entry's tenant."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _digest(token: str) -> bytes:
    # compared as fixed-length digests: the comparison time says nothing about a key's length
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys (as digests) and their tenants; empty: authentication is off."""

    digests: tuple[bytes, ...] = ()
    tenants: tuple[str, ...] = ()
    # every owner a tenant's callers match: its name and the legacy hashes of its keys
    owners: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def on(self) -> bool:
        return bool(self.digests)

    def tenant_for(self, token: str) -> str | None:
        """The tenant of the key `token` is, or None. Compared in constant time against every
        key: how long it takes does not depend on which key (if any) matched."""
        presented = _digest(token.strip())
        found: str | None = None
        for digest, tenant in zip(self.digests, self.tenants, strict=True):
            hit = hmac.compare_digest(digest, presented)
            found = tenant if hit else found
        return found

    def owners_of(self, tenant: str) -> frozenset[str]:
        return self.owners.get(tenant, frozenset({tenant}))

    def tenant_of_owner(self, owner: str) -> str:
        """The tenant a recorded owner belongs to (a legacy key hash maps to its key's tenant)."""
        return next((t for t, owned in self.owners.items() if owner in owned), owner)


def parse_api_keys(raw: str) -> ApiKeys:
    """Read API_KEYS; BadApiKeys names the first bad entry by position and the problem."""
    if not raw.strip():
        return ApiKeys()
    keys: list[str] = []
    tenants: list[str] = []
    for position, entry in enumerate(raw.split(","), start=1):
        key, tenant = _entry(entry, position)
        if key in keys:
            raise BadApiKeys(f"API_KEYS entry {position}: the same key as entry {keys.index(key) + 1}")
        keys.append(key)
        tenants.append(tenant)
    owners: dict[str, set[str]] = {}
    for key, tenant in zip(keys, tenants, strict=True):
        owners.setdefault(tenant, {tenant}).add(owner_of(key))
    return ApiKeys(tuple(_digest(k) for k in keys), tuple(tenants), {t: frozenset(o) for t, o in owners.items()})


def _entry(entry: str, position: int) -> tuple[str, str]:
    """(key, tenant) of one entry: split on its last ':'; no ':' means a tenant of its own."""
    if not entry.strip():
        raise BadApiKeys(f"API_KEYS entry {position}: empty (two commas in a row, or one at an end)")
    key, colon, tenant = entry.strip().rpartition(":")
    if not colon:
        key, tenant = tenant, ""
    key, tenant = key.strip(), tenant.strip()
    if not key:
        raise BadApiKeys(f"API_KEYS entry {position}: empty key")
    if colon and not tenant:
        raise BadApiKeys(f"API_KEYS entry {position}: empty tenant after ':'")
    return key, tenant or owner_of(key)


def warn_if_open(keys: ApiKeys, service: str) -> None:
    """Say once, at start, that anyone who can reach the service sees every job."""
    if not keys.on:
        log.warning("%s: API_KEYS is empty: authentication is off, every caller sees and commands every job",
                    service)


class Unauthorized(Exception):
    pass


def request_tenant(request: Request, keys: ApiKeys) -> str | None:
    """The caller's tenant; None when auth is off; raises Unauthorized for a bad key (ingest's
    and the status API's one reading of `Authorization: Bearer <key>`)."""
    if not keys.on:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    tenant = keys.tenant_for(token) if scheme.lower() == "bearer" else None
    if tenant is None:
        raise Unauthorized()
    return tenant
