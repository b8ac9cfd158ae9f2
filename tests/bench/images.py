"""Fresh image numbers for every scenario of a bench run.

A processor remembers each URL's size for `IMAGE_CACHE_TTL_S` (a real feature: the same photo
submitted twice is downloaded once). A scenario that reused URLs an earlier scenario fetched
would therefore time cache hits, not downloads, while the peers it is compared with fetch
every image. Until session 6 every burst used `/img/0.jpg` upwards, so the measured burst
re-used the warm-up bursts' 5,000 URLs (about a quarter of its images were cache hits) and the
one-job figure re-used the burst's. The burst, one-job, front door and GPU-on scenarios now take
numbers no earlier one used (the image server serves any number: image i is picture i mod 50).
The lateness and 1M-pending scenarios time releases, not processing: their jobs share one URL,
so the processors are nearly idle while those run.
"""

from __future__ import annotations

_used = 0


def fresh_images(count: int) -> int:
    """The first of `count` consecutive image numbers that no earlier call in this process got."""
    global _used
    first, _used = _used, _used + count
    return first
