"""Regressions for defects an independent review found (each once let one input stall a service)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from services.ingest.domain import job_submitted
from services.processor.domain import OffsetTracker
from shared.api import Deployment, Limits
from shared.api_fields import is_http_url
from shared.schedule_time import InvalidInput
from shared.ssrf import address_allowed

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TZ = ZoneInfo("Asia/Kolkata")


def _body(store: str = "S1", url: str = "http://example.com/a.jpg", visit_time: str = "10:00") -> bytes:
    visit = {"store_id": store, "image_url": [url], "visit_time": visit_time}
    return json.dumps({"count": 1, "visits": [visit]}).encode()


def validate_submission(raw: bytes, now: datetime, tz: ZoneInfo) -> object:
    return job_submitted(raw, None, Deployment(Limits(), tz, now))


@pytest.mark.parametrize("store", ["S\x00", "S\n1", "\x7f", "S\ud800"])
def test_control_characters_and_lone_surrogates_in_store_id_are_refused(store: str) -> None:
    with pytest.raises(InvalidInput, match=r"^visits\[0\]\.store_id"):
        validate_submission(_body(store=store), NOW, TZ)


@pytest.mark.parametrize("url", ["http://xn--a.com/", "http://\xad.com/", f"http://{'a' * 64}\u00e9.com/",
                                 "http://a.com/\x00", "http://a.com/\ud800"])
def test_urls_the_downloader_cannot_parse_are_refused_at_ingest(url: str) -> None:
    assert not is_http_url(url)


def test_visit_time_with_a_nul_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"visit_time"):
        validate_submission(_body(visit_time="10:00\x00"), NOW, TZ)


def test_a_task_finishing_after_its_partition_was_given_up_commits_nothing() -> None:
    tracker = OffsetTracker()
    tracker.started("p0", 100)
    tracker.started("p0", 105)
    tracker.forget({"p0"})
    tracker.finished("p0", 105)
    assert tracker.committable() == {}


@pytest.mark.parametrize("address", ["2002:7f00:1::", "2002:a00:1::", "fec0::1",
                                     "2001:0:4136:e378:8000:63bf:f5ff:fffe"])
def test_v6_wrappers_of_refused_v4_and_site_local_are_refused(address: str) -> None:
    assert not address_allowed(address, allow_private=False)
