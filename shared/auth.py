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


def owner_for_token(token: str, keys: tuple[str, ...]) -> str | None:
    """The owner hash of the key `token` is (compared in constant time), or None."""
    for key in keys:
        if token and hmac.compare_digest(key.encode(), token.strip().encode()):
            return owner_of(key)
    return None


def request_owner(request: Request, keys: tuple[str, ...]) -> str | None:
    """The caller's owner hash; None when auth is off; raises Unauthorized for a bad key.
    (Ingest's hot path reads the header itself; the status API uses FastAPI's HTTPBearer.)"""
    if not keys:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    owner = owner_for_token(token, keys) if scheme.lower() == "bearer" else None
    if owner is None:
        raise Unauthorized()
    return owner
