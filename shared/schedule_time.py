"""When a job runs: the one reading of `scheduled_time`, shared by submit and reschedule.

Pure; the clock is a parameter. An instant with an offset is that instant; a naive one is read
in `DEFAULT_TIMEZONE`; absent or in the past means now; further ahead than the horizon is an
error. Errors are `InvalidInput` whose message names the field (it becomes the 400 body).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidInput(ValueError):
    """The request breaks a rule; `str()` is the client-facing message naming the field."""


def is_clean_text(value: str) -> bool:
    """No control characters (PostgreSQL's jsonb refuses NUL) and valid UTF-8 (no lone surrogates)."""
    if _CONTROL.search(value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_datetime(value: str) -> datetime | None:
    """An ISO-8601 date or date-time (naive or with an offset), or None."""
    if len(value) > 64 or "T" not in value.upper() and " " not in value and len(value) != 10:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def resolve_scheduled_time(value: Any, now: datetime, tz: ZoneInfo,
                           max_days: int | None = None) -> datetime:
    """The UTC instant to run at: offsets honoured, naive read in `tz`, absent or past is `now`,
    more than `max_days` ahead (when given) refused."""
    if value is None:
        return now.astimezone(UTC)
    if not isinstance(value, str):
        raise InvalidInput("scheduled_time: must be an ISO-8601 date-time string")
    parsed = parse_datetime(value.strip()) if is_clean_text(value) else None
    if parsed is None:
        raise InvalidInput("scheduled_time: must be an ISO-8601 date-time, e.g. 2025-02-16T10:57:00+05:30")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    try:
        instant = parsed.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 shifted past the calendar's edge
        instant = datetime.max.replace(tzinfo=UTC) if parsed.year > 2000 else now
    instant = max(instant, now.astimezone(UTC))
    if max_days is not None and instant - now > timedelta(days=max_days):
        raise InvalidInput(f"scheduled_time: more than {max_days} days ahead")
    return instant
