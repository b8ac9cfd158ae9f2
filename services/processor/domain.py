"""The processor's pure rules: measuring an image, the simulated GPU delay, error classes, the
order fetched tasks start in, and which offsets may be committed when tasks finish out of order."""

from __future__ import annotations

import io
import random
import warnings
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

from PIL import Image

from shared.fairness import DequeLane, FairQueue
from shared.retry import TransientCondition

P = TypeVar("P", bound=Hashable)  # a partition (Kafka's TopicPartition in the service)
T = TypeVar("T")


class StoreMasterNotLoaded(TransientCondition):  # a condition that passes: retried
    """No store has been imported yet; retry later."""


class ImageError(Exception):
    """The image cannot be processed; `str()` is the per-image reason. `transient` retries,
    after `retry_after` seconds when the server said so (Retry-After)."""

    def __init__(self, reason: str, transient: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.transient = transient
        self.retry_after = retry_after


def retry_after_seconds(header: str | None, cap_s: float) -> float | None:
    """A Retry-After header's delay in seconds (the delta-seconds form; an HTTP date is not
    followed), capped so one image never waits longer than `cap_s`."""
    if header is None or not header.strip().isdigit():
        return None
    return min(float(header.strip()), cap_s)


# A failure reason's category, for metric labels: a fixed set, so no image or server can add
# series (the reasons themselves carry status codes, sizes, hosts and messages). First match wins.
FAILURE_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("store not found", "store not found"),
    ("download timed out", "download timed out"),
    ("connection failed", "connection failed"),
    ("connection error", "connection error"),
    ("download failed", "download failed"),
    ("too many redirects", "too many redirects"),
    ("invalid redirect", "bad redirect"),
    ("redirect to a non-http", "bad redirect"),
    ("invalid URL", "invalid URL"),
    ("address not allowed", "address not allowed"),
    ("image too large", "image too large"),
    ("corrupt or truncated image", "corrupt or truncated image"),
    ("not an image", "not an image"),
    ("image has no pixels", "image has no pixels"),
    ("processing error", "processing error"),
)
FAILURE_CATEGORY_OTHER = "other"


def failure_category(reason: str) -> str:
    """'HTTP 404 from the image server' -> 'HTTP 4xx'; 'format ICO not allowed (...)' ->
    'format not allowed'; anything unforeseen -> 'other'."""
    for prefix, category in FAILURE_CATEGORIES:
        if reason.startswith(prefix):
            return category
    if reason[:5] == "HTTP " and reason[5:6] in ("3", "4", "5") and reason[6:8].isdigit() and reason[8:9] in ("", " "):
        return f"HTTP {reason[5]}xx"
    if reason.startswith("format ") and " not allowed" in reason:
        return "format not allowed"
    return FAILURE_CATEGORY_OTHER


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    @property
    def perimeter(self) -> int:
        return 2 * (self.width + self.height)


def parse_image_formats(spec: str) -> tuple[str, ...]:
    """IMAGE_FORMATS ("JPEG,PNG") as Pillow format names, checked once at start: an unknown
    name stops the service (ValueError naming it) instead of failing every image later."""
    Image.init()  # registers every plugin (their decoders run only when an image is opened)
    names = tuple(dict.fromkeys(name.strip().upper() for name in spec.split(",") if name.strip()))
    if not names:
        raise ValueError("IMAGE_FORMATS is empty: name the Pillow formats to read, e.g. JPEG,PNG")
    unknown = [name for name in names if name not in Image.OPEN]
    if unknown:
        raise ValueError(f"IMAGE_FORMATS: unknown format {', '.join(unknown)}; "
                         f"this Pillow reads {','.join(sorted(Image.OPEN))}")
    return names


def measure(data: bytes, max_pixels: int, formats: tuple[str, ...]) -> Size:
    """Width and height from the image's header, read only by the decoders in `formats`;
    refuses bombs, other formats, unknown and truncated files. Whatever goes wrong while
    reading (a decoder's bug included: AttributeError, struct.error, RecursionError...) is
    the image's permanent `ImageError`, never an error that would be retried."""
    try:
        return _read_size(data, max_pixels, formats)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image too large: {_text(exc)}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(_unidentified(data, formats)) from None
    except MemoryError:
        raise ImageError("image too large: its header asks for more memory than there is") from None
    except (OSError, SyntaxError, ValueError) as exc:  # what Pillow raises for a bad file
        raise ImageError(f"corrupt or truncated image: {_text(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - a decoder failing in any other way: still the file's
        raise ImageError(f"corrupt or truncated image: the decoder failed ({_text(exc, typed=True)})") from None


def _read_size(data: bytes, max_pixels: int, formats: tuple[str, ...]) -> Size:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=formats) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"image too large: {width}x{height} pixels exceeds {max_pixels}")
            if image.format == "PNG":
                image.verify()  # walks every chunk: catches truncation and bad CRCs
            elif image.format == "JPEG" and not _ends_with_eoi(data):
                raise ImageError("corrupt or truncated image: JPEG has no end-of-image marker")
    if width <= 0 or height <= 0:
        raise ImageError("image has no pixels")
    return Size(width, height)


def _unidentified(data: bytes, formats: tuple[str, ...]) -> str:
    """Why no allowed decoder read the file, told from its first bytes by the plugins' accept
    functions (prefix checks only: no other decoder runs). Formats without one (SPIDER, TGA)
    cannot be told apart from garbage this way: they are "not an image"."""
    guess = _format_by_prefix(data[:16], formats, allowed=True)
    if guess:  # its signature, but its own decoder refused the header
        return f"corrupt or truncated image: starts like {guess} but its header cannot be read"
    guess = _format_by_prefix(data[:16], formats, allowed=False)
    if guess:
        return f"format {guess} not allowed (IMAGE_FORMATS: {','.join(formats)})"
    # kept word for word: clients and the status API's readers match this reason exactly
    return "not an image (unrecognised format)"


def _format_by_prefix(prefix: bytes, formats: tuple[str, ...], allowed: bool) -> str | None:
    Image.init()
    for name, (_, accept) in list(Image.OPEN.items()):
        if accept is None or (name in formats) != allowed:
            continue
        try:
            if accept(prefix):  # True, or a str: "...support not installed"
                return name
        except Exception:  # noqa: BLE001, S112 - a prefix too short for its check: not that format
            continue
    return None


def _text(exc: BaseException, typed: bool = False, limit: int = 160) -> str:
    """An exception's message fit for a reason: printable (no NUL for PostgreSQL), bounded;
    `typed` puts its class first ("AttributeError: ...")."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a message that cannot even be rendered
        text = ""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if typed or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ends_with_eoi(data: bytes) -> bool:
    """A JPEG's end-of-image marker, ignoring trailing NUL padding (looked for in the tail
    first: stripping the whole body would copy it)."""
    tail = data[-4096:].rstrip(b"\x00") or data.rstrip(b"\x00")
    return tail.endswith(b"\xff\xd9")


def parse_gpu_delay(spec: str) -> tuple[float, float]:
    """'100-400' -> (0.1, 0.4) seconds; '250' -> (0.25, 0.25); '0' or '' -> off."""
    spec = spec.strip()
    if not spec or spec == "0":
        return (0.0, 0.0)
    low, _, high = spec.partition("-")
    lo, hi = float(low), float(high or low)
    if lo < 0 or hi < lo:
        raise ValueError(f"PROCESSOR_GPU_DELAY_MS must be LOW-HIGH with 0 <= LOW <= HIGH, not {spec!r}")
    return (lo / 1000, hi / 1000)


def gpu_delay(bounds: tuple[float, float], rng: random.Random) -> float:
    return rng.uniform(*bounds) if bounds[1] > 0 else 0.0


# -- the order fetched tasks start in -------------------------------------------------------
class StartQueue(Generic[T]):
    """Fetched tasks waiting for a download slot: shared between tenants by weight
    (shared/fairness.py), so another tenant's task is not queued behind this processor's whole
    backlog; within a tenant the most urgent priority first, then in the order fetched, which on
    each partition is offset order.

    Not a tenant's jobs in turn: the scheduler already interleaved them when it dispatched, and
    a processor commits only below its oldest unfinished task on a partition, while the
    scheduler's dispatch window frees a place only once the committed offset passes its task.
    Starting a tenant's later tasks first therefore filled the window with finished tasks: at
    550 images/s on 2 cores it stayed full and jobs were released up to 2 s late."""

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self._queue: FairQueue[T] = FairQueue(weights)  # one lane per (tenant, priority)

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, tenant: str, priority: int, item: T) -> None:
        self._queue.append(tenant, priority, (tenant, priority), item)

    def pop(self) -> T | None:
        """The next task to start, or None when none waits."""
        picked = self._queue.pop()
        return None if picked is None else picked[1]

    def drop(self, unwanted: Callable[[T], bool]) -> int:
        """Forget the waiting tasks `unwanted` picks (a revoked partition's), keeping the
        others in order; how many were dropped."""
        dropped = 0
        for key in list(self._queue.jobs()):
            lane = self._queue.lane(key)
            if not isinstance(lane, DequeLane) or not any(unwanted(item) for item in lane):
                continue
            self._queue.remove(key)
            kept: DequeLane[T] = DequeLane(item for item in lane if not unwanted(item))
            dropped += len(lane) - len(kept)
            tenant, priority = cast(tuple[str, int], key)  # put() keys each lane by them
            self._queue.add(tenant, priority, key, kept)
        return dropped


# -- offsets: which may be committed when tasks finish out of order ------------------------
@dataclass
class PartitionOffsets:
    in_flight: set[int] = field(default_factory=set)
    highest_done: int = -1


class OffsetTracker(Generic[P]):
    def __init__(self) -> None:
        self._parts: dict[P, PartitionOffsets] = {}

    def started(self, partition: P, offset: int) -> None:
        self._parts.setdefault(partition, PartitionOffsets()).in_flight.add(offset)

    def finished(self, partition: P, offset: int) -> None:
        part = self._parts.get(partition)
        if part is None or offset not in part.in_flight:
            return  # the partition was given up meanwhile: its new owner redoes this record
        part.in_flight.discard(offset)
        part.highest_done = max(part.highest_done, offset)

    def committable(self) -> dict[P, int]:
        """partition -> next offset to consume (Kafka's commit convention)."""
        out: dict[P, int] = {}
        for partition, part in self._parts.items():
            if part.in_flight:
                out[partition] = min(part.in_flight)
            elif part.highest_done >= 0:
                out[partition] = part.highest_done + 1
        return out

    def in_flight(self, partitions: set[P] | None = None) -> int:
        return sum(len(p.in_flight) for k, p in self._parts.items() if partitions is None or k in partitions)

    def forget(self, partitions: set[P]) -> None:
        for partition in partitions:
            self._parts.pop(partition, None)


def possibly_processed(offset: int, end_at_assignment: int | None) -> bool:
    """Whether a task record may have been processed already by an earlier owner of its
    partition: any record that was in the partition when this instance got it (below the
    partition's end offset then; None: not known, so any record). A record written after that
    reached no other processor of the group; a task dispatched again after a scheduler crash
    (a new record, the same task_id) is caught later by the result row's key, so the lookup
    saves only downloads and skipping it never doubles a result."""
    return end_at_assignment is None or offset < end_at_assignment
