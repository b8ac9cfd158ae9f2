"""Events of one job, for tests of the status rules and the fold."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

from shared.events import ImageFailed, ImageSucceeded, JobReleased, JobSubmitted, Visit, task_id_for

WHEN = datetime(2025, 2, 16, 5, 27, tzinfo=UTC)


@dataclass(frozen=True)
class JobEvents:
    job_id: UUID
    shape: tuple[tuple[str, int], ...]  # (store_id, images) per visit

    @classmethod
    def new(cls, *shape: tuple[str, int]) -> JobEvents:
        return cls(uuid4(), tuple(shape))

    @property
    def total(self) -> int:
        return sum(n for _, n in self.shape)

    def submitted(self) -> JobSubmitted:
        visits = tuple(Visit(store_id=s, image_urls=tuple(f"https://x/{s}/{i}" for i in range(n)))
                       for s, n in self.shape)
        return JobSubmitted(job_id=self.job_id, scheduled_time=WHEN, visits=visits)

    def released(self) -> JobReleased:
        return JobReleased(job_id=self.job_id, scheduled_time=WHEN, total_images=self.total)

    def _common(self, store: str, v: int, i: int) -> dict[str, object]:
        return {"job_id": self.job_id, "task_id": task_id_for(self.job_id, v, i), "visit_index": v,
                "image_index": i, "store_id": store, "image_url": f"https://x/{store}/{i}"}

    def ok(self, store: str, v: int, i: int) -> ImageSucceeded:
        return ImageSucceeded(**self._common(store, v, i), width=4, height=3, perimeter=14)  # type: ignore[arg-type]

    def bad(self, store: str, v: int, i: int, reason: str = "HTTP 404") -> ImageFailed:
        return ImageFailed(**self._common(store, v, i), reason=reason)  # type: ignore[arg-type]
