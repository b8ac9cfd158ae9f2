"""Per-store statistics of image outcomes in tumbling windows: pure rules, no Kafka, no faust.

Built from the published contract alone (docs/asyncapi.yaml): the `ImageSucceeded` and
`ImageFailed` events of `<prefix>.results` carry `task_id`, `store_id`, `occurred_at` and
`perimeter` or `reason`; other event types and unknown fields are ignored (the compatibility
policy). Delivery is at least once, so an image counts once, by `task_id`: the first outcome
of a task in its partition's order counts, repeats do not (`recount` is the rule; the service
keeps it with a primary key on `task_id`, adapters/store.py).

A window is event time: `occurred_at` floored to the window size (faust's tumbling windows
start at the same multiples), so a recount from the topics puts every image where the service
put it, however late or often the service read it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.events import Timestamp, iso

OUTCOME_TYPES = ("ImageSucceeded", "ImageFailed")
# "HTTP 404 from the image server" -> "HTTP 404"; "download timed out after 30s (3 attempts)" ->
# "download timed out"; "image too large: 9000x9000 ..." -> "image too large"
_DETAIL = re.compile(r":| \(| from | after | without ")


_TEXT = Field(max_length=1000, pattern=r"^[^\x00]*$")  # PostgreSQL text holds no NUL


class _Wire(BaseModel):
    """What is read of an outcome: bounded so that every accepted record can be stored (a
    record the table would refuse is skipped here rather than retried for ever)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str
    task_id: str = _TEXT
    store_id: str = _TEXT
    occurred_at: Timestamp  # within the range both Python and PostgreSQL hold, as the core's events
    perimeter: int | None = Field(None, ge=0, le=2**62)
    reason: str | None = Field(None, max_length=10_000)


@dataclass(frozen=True)
class CountedImage:
    """One image's outcome as the store statistics count it: succeeded with a perimeter, or
    failed with a reason category (read from an ImageSucceeded or ImageFailed event)."""

    task_id: str
    store_id: str
    occurred_at: datetime
    perimeter: int | None = None
    reason: str | None = None


def reason_category(reason: str) -> str:
    """The reason without its details, so labels and keys stay few ("HTTP 404", "store not found")."""
    return _DETAIL.split(reason, maxsplit=1)[0].strip()[:60] or "unknown"


UNKNOWN_STORE = "unknown"
STORE_NOT_FOUND = "store not found"
# The reason categories the processor documents (docs/asyncapi.yaml); anything else is "other".
KNOWN_REASONS = frozenset({
    STORE_NOT_FOUND, "download timed out", "connection failed", "connection error", "download failed",
    "not an image", "image too large", "corrupt or truncated image", "image has no pixels", "too many redirects",
    "address not allowed", "invalid URL", "invalid redirect location", "redirect to a non-http URL",
    "processing error", "result could not be recorded", "job could not be scheduled", "format not allowed",
})
_HTTP_STATUS = re.compile(r"HTTP [1-5]\d\d")
_FORMAT = re.compile(r"format [A-Z0-9]{1,10} not allowed")  # Pillow's format names: a few dozen


def reason_label(category: str) -> str:
    """A bounded metric label for a reason category."""
    if category in KNOWN_REASONS or _HTTP_STATUS.fullmatch(category) or _FORMAT.fullmatch(category):
        return category
    return "other"


def is_unknown_store(totals: StoreTotals) -> bool:
    """Not in the store master: the processor checks the store first, so such a store's only
    outcomes are `store not found` failures."""
    return not totals.succeeded and bool(totals.failed) and set(totals.failed) == {STORE_NOT_FOUND}


def parse_outcome(raw: bytes) -> CountedImage | None:
    """The outcome in a record of the results topic; None for another event type. Raises
    ValueError for a record that is not such an event (not JSON, a field missing)."""
    try:
        data = json.loads(raw)
    except (TypeError, RecursionError, UnicodeDecodeError) as exc:  # a tombstone (None), absurd nesting
        raise ValueError(f"not a JSON event: {type(exc).__name__}") from None
    if not isinstance(data, dict) or data.get("type") not in OUTCOME_TYPES:
        return None
    try:
        wire = _Wire.model_validate(data)
    except ValidationError as exc:
        raise ValueError(str(exc)) from None
    if wire.type == "ImageSucceeded":
        if wire.perimeter is None:
            raise ValueError("ImageSucceeded without a perimeter")
        return CountedImage(wire.task_id, wire.store_id, wire.occurred_at, perimeter=wire.perimeter)
    reason = reason_category((wire.reason or "").replace("\x00", ""))
    return CountedImage(wire.task_id, wire.store_id, wire.occurred_at, reason=reason)


def window_start(at: datetime, size_s: int) -> float:
    """Start (epoch seconds) of the tumbling window holding `at`: faust's own formula."""
    ts = at.timestamp()
    return float((ts // size_s) * size_s)


@dataclass(frozen=True)
class WindowStats:
    """One store's images in one window."""

    store_id: str
    window_start: float
    succeeded: int = 0
    failed: Mapping[str, int] = field(default_factory=dict)  # reason category -> images
    perimeter_sum: int = 0

    @property
    def images(self) -> int:
        return self.succeeded + sum(self.failed.values())

    @property
    def mean_perimeter(self) -> float | None:
        return self.perimeter_sum / self.succeeded if self.succeeded else None


def fold_window(stats: WindowStats | None, outcome: CountedImage, size_s: int) -> WindowStats:
    """`stats` with `outcome` counted (a new window's stats when `stats` is None)."""
    if stats is None:
        stats = WindowStats(outcome.store_id, window_start(outcome.occurred_at, size_s))
    if outcome.reason is None:
        perimeter_sum = stats.perimeter_sum + (outcome.perimeter or 0)
        return replace(stats, succeeded=stats.succeeded + 1, perimeter_sum=perimeter_sum)
    return replace(stats, failed={**stats.failed, outcome.reason: stats.failed.get(outcome.reason, 0) + 1})


def published_record(stats: WindowStats, size_s: int) -> tuple[bytes, bytes]:
    """Key and value of the `<prefix>.store-stats` record for `stats`: the key is
    `store_id|window_start`, so the latest record per key is the window's current total."""
    begins = datetime.fromtimestamp(stats.window_start, UTC)
    start, end = iso(begins), iso(begins + timedelta(seconds=size_s))
    mean = stats.mean_perimeter
    value = {"store_id": stats.store_id, "window_start": start, "window_end": end,
             "images": stats.images, "succeeded": stats.succeeded, "failed": sum(stats.failed.values()),
             "failed_by_reason": dict(sorted(stats.failed.items())), "perimeter_sum": stats.perimeter_sum,
             "mean_perimeter": round(mean, 3) if mean is not None else None}
    return f"{stats.store_id}|{start}".encode(), json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class StoreTotals:
    """Everything counted for a store since the service started on the topic (the Prometheus
    counters), and the mean perimeter of its latest window with a success (the gauge)."""

    succeeded: int = 0
    failed: Mapping[str, int] = field(default_factory=dict)
    latest_mean: float | None = None


def window_from_rows(store_id: str, start: float, rows: Iterable[tuple[str | None, int, int]]) -> WindowStats:
    """A window's statistics from its counted images grouped by reason (None: succeeded):
    (reason, images, perimeter sum)."""
    stats = WindowStats(store_id, start)
    for reason, images, perimeter_sum in rows:
        if reason is None:
            perimeters = stats.perimeter_sum + perimeter_sum
            stats = replace(stats, succeeded=stats.succeeded + images, perimeter_sum=perimeters)
        else:
            stats = replace(stats, failed={**stats.failed, reason: stats.failed.get(reason, 0) + images})
    return stats


def totals_from_rows(rows: Iterable[tuple[str, int]], latest_mean: float | None) -> StoreTotals:
    """A store's totals from its counters by reason ("" for succeeded)."""
    succeeded, failed = 0, {}
    for reason, images in rows:
        if reason:
            failed[reason] = failed.get(reason, 0) + images
        else:
            succeeded += images
    return StoreTotals(succeeded, failed, latest_mean)


def recount(outcomes: Iterable[CountedImage], size_s: int) -> dict[tuple[str, float], WindowStats]:
    """The exact statistics of `outcomes` (in partition order): each task counted once, at its
    first outcome. What the service's published records must equal once it has caught up."""
    seen: set[str] = set()
    windows: dict[tuple[str, float], WindowStats] = {}
    for outcome in outcomes:
        if outcome.task_id in seen:
            continue
        seen.add(outcome.task_id)
        key = (outcome.store_id, window_start(outcome.occurred_at, size_s))
        windows[key] = fold_window(windows.get(key), outcome, size_s)
    return windows
