"""Optional API keys: with `API_KEYS` set, requests need `Authorization: Bearer <key>`.

A job belongs to the key that submitted it; only a hash of the key (its "owner") is ever
stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request


def parse_keys(raw: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def owner_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class Unauthorized(Exception):
    pass


def request_owner(request: Request, keys: tuple[str, ...]) -> str | None:
    """The caller's owner hash; None when auth is off; raises Unauthorized for a bad key."""
    if not keys:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized()
    for key in keys:
        if hmac.compare_digest(key.encode(), token.strip().encode()):
            return owner_of(key)
    raise Unauthorized()
