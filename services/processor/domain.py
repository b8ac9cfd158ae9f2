"""The processor's pure rules: measuring an image, the simulated GPU delay, error classes, and
which offsets may be committed when tasks finish out of order."""

from __future__ import annotations

import io
import random
import warnings
from dataclasses import dataclass, field

from PIL import Image


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


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    @property
    def perimeter(self) -> int:
        return 2 * (self.width + self.height)


def measure(data: bytes, max_pixels: int) -> Size:
    """Width and height from the image's header; refuses bombs, unknown and truncated files."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(f"image too large: {width}x{height} pixels exceeds {max_pixels}")
                if image.format == "PNG":
                    image.verify()  # walks every chunk: catches truncation and bad CRCs
                elif image.format == "JPEG" and not _ends_with_eoi(data):
                    raise ImageError("corrupt or truncated image: JPEG has no end-of-image marker")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image too large: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt or truncated image: {exc}") from None
    if width <= 0 or height <= 0:
        raise ImageError("image has no pixels")
    return Size(width, height)


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


# -- offsets: which may be committed when tasks finish out of order ------------------------
@dataclass
class PartitionOffsets:
    in_flight: set[int] = field(default_factory=set)
    highest_done: int = -1


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[object, PartitionOffsets] = {}

    def started(self, partition: object, offset: int) -> None:
        self._parts.setdefault(partition, PartitionOffsets()).in_flight.add(offset)

    def finished(self, partition: object, offset: int) -> None:
        part = self._parts.get(partition)
        if part is None or offset not in part.in_flight:
            return  # the partition was given up meanwhile: its new owner redoes this record
        part.in_flight.discard(offset)
        part.highest_done = max(part.highest_done, offset)

    def committable(self) -> dict[object, int]:
        """partition -> next offset to consume (Kafka's commit convention)."""
        out: dict[object, int] = {}
        for partition, part in self._parts.items():
            if part.in_flight:
                out[partition] = min(part.in_flight)
            elif part.highest_done >= 0:
                out[partition] = part.highest_done + 1
        return out

    def in_flight(self, partitions: set[object] | None = None) -> int:
        return sum(len(p.in_flight) for k, p in self._parts.items() if partitions is None or k in partitions)

    def forget(self, partitions: set[object]) -> None:
        for partition in partitions:
            self._parts.pop(partition, None)
