"""Validation of submitted jobs (services/ingest/domain.py reading a body with the API contract's
JobIn, shared/api.py): every 400 rule and the schedule. Bodies go in as JSON, as a client sends them."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.domain import job_submitted
from shared.api import Deployment, Limits
from shared.api_fields import PLAIN_HTTP_URL, is_http_url, is_visit_time, passes_full_url_check
from shared.events import JobSubmitted
from shared.schedule_time import InvalidInput, resolve_scheduled_time

NOW = datetime(2025, 2, 16, 5, 0, 0, tzinfo=UTC)
KOLKATA = ZoneInfo("Asia/Kolkata")


def visit(store_id: str = "S00339218", urls: list[str] | None = None, visit_time: str = "10:30") -> dict[str, Any]:
    return {"store_id": store_id, "image_url": urls or ["https://example.com/a.jpg"], "visit_time": visit_time}


def body(*visits: dict[str, Any], **extra: Any) -> dict[str, Any]:
    vs = list(visits) or [visit()]
    return {"count": len(vs), "visits": vs, **extra}


DEFAULT_LIMITS = Limits()


def validate_submission(payload: Any, now: datetime, tz: ZoneInfo, limits: Limits = DEFAULT_LIMITS) -> JobSubmitted:
    """The event of `payload` submitted as JSON (InvalidInput naming the field)."""
    return job_submitted(json.dumps(payload).encode(), None, Deployment(limits, tz, now))


def rejected(payload: Any, limits: Limits = DEFAULT_LIMITS) -> str:
    with pytest.raises(InvalidInput) as info:
        validate_submission(payload, NOW, KOLKATA, limits)
    return str(info.value)


# --- accepted ---------------------------------------------------------------------------------

def test_valid_body_is_accepted_and_keeps_visits_in_order() -> None:
    payload = body(visit("S1", ["http://a.example/1.jpg", "https://b.example/2.png"]),
                   visit("S2", ["https://c.example/3.gif"], "2025-02-16T10:00:00"))
    job = validate_submission(payload, NOW, KOLKATA)
    assert [v.store_id for v in job.visits] == ["S1", "S2"]
    assert job.visits[0].image_urls == ("http://a.example/1.jpg", "https://b.example/2.png")
    assert job.visits[1].visit_time == "2025-02-16T10:00:00"
    assert job.total_images == 3
    assert job.scheduled_time == NOW


def test_store_id_is_stripped() -> None:
    job = validate_submission(body(visit("  S7  ")), NOW, KOLKATA)
    assert job.visits[0].store_id == "S7"


# --- body / count / visits --------------------------------------------------------------------

@pytest.mark.parametrize("payload", [[], "x", 3, None, [{"count": 1}]])
def test_body_not_an_object(payload: Any) -> None:
    assert rejected(payload) == "body must be a JSON object"


def test_count_missing() -> None:
    payload = body()
    del payload["count"]
    assert rejected(payload) == "count: required"


@pytest.mark.parametrize("count", ["1", 1.0, None, True, False, [1]])
def test_count_not_an_integer(count: Any) -> None:
    assert rejected({**body(), "count": count}) == "count: must be an integer"


@pytest.mark.parametrize("visits", ["missing", None, [], {}, "abc", {"0": visit()}])
def test_visits_missing_empty_or_not_a_list(visits: Any) -> None:
    payload = {"count": 1} if visits == "missing" else {"count": 1, "visits": visits}
    assert rejected(payload).startswith("visits: must be a non-empty list")


def test_count_mismatch() -> None:
    message = rejected({"count": 3, "visits": [visit(), visit()]})
    assert message.startswith("count:")
    assert "3" in message and "(2)" in message


@pytest.mark.parametrize("raw", ["S1", 1, None, ["S1"]])
def test_visit_not_an_object(raw: Any) -> None:
    assert rejected({"count": 2, "visits": [visit(), raw]}).startswith("visits[1]: must be an object")


# --- store_id ---------------------------------------------------------------------------------

@pytest.mark.parametrize("store_id", ["missing", "", "   ", "\t\n", None, 42])
def test_store_id_missing_empty_or_blank(store_id: Any) -> None:
    v = visit()
    if store_id == "missing":
        del v["store_id"]
    else:
        v["store_id"] = store_id
    assert rejected(body(visit(), v)).startswith("visits[1].store_id:")


def test_store_id_too_long() -> None:
    assert rejected(body(visit("S" * 65))).startswith("visits[0].store_id: longer than 64")
    assert validate_submission(body(visit("S" * 64)), NOW, KOLKATA).visits[0].store_id == "S" * 64


# --- image_url --------------------------------------------------------------------------------

@pytest.mark.parametrize("urls", ["missing", [], None, "https://example.com/a.jpg", {"u": "x"}])
def test_image_url_missing_empty_or_not_a_list(urls: Any) -> None:
    v = visit()
    if urls == "missing":
        del v["image_url"]
    else:
        v["image_url"] = urls
    assert rejected(body(visit(), v)).startswith("visits[1].image_url:")


BAD_URLS = [
    "/relative/a.jpg",
    "a.jpg",
    "ftp://example.com/a.jpg",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "http:///no-host.jpg",
    "http://",
    "https://exa mple.com/a.jpg",
    "https://example.com/a b.jpg",
    "https://example.com/a.jpg\n",
    "https://example.com/" + "a" * 2030,
    "http://example.com:99999/a.jpg",
    "http://example.com:port/a.jpg",
    "http://[::1/a.jpg",
    "",
    7,
    None,
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_each_bad_url_is_rejected_naming_its_index(url: Any) -> None:
    v = visit(urls=["https://example.com/ok.jpg", url])
    message = rejected(body(visit(), v))
    assert message.startswith("visits[1].image_url[1]:"), message


def test_url_length_limit_is_2048() -> None:
    base = "https://example.com/"
    assert is_http_url(base + "a" * (2048 - len(base)))
    assert not is_http_url(base + "a" * (2049 - len(base)))


@pytest.mark.parametrize("url", ["http://example.com/a.jpg", "https://example.com:8443/a?x=1#f",
                                 "HTTPS://EXAMPLE.COM/A.JPG", "http://10.0.0.1/a.png", "http://[::1]:8080/a"])
def test_good_urls(url: str) -> None:
    assert is_http_url(url)


def test_first_bad_url_of_first_bad_visit_is_named() -> None:
    message = rejected(body(visit(urls=["https://ok/1", "nope"]), visit(urls=["also-bad"])))
    assert message.startswith("visits[0].image_url[1]:")


# --- visit_time -------------------------------------------------------------------------------

def test_visit_time_missing() -> None:
    v = visit()
    del v["visit_time"]
    assert rejected(body(visit(), v)) == "visits[1].visit_time: required"


@pytest.mark.parametrize("value", [None, 1030, "", "25:00", "10:60", "1030", "yesterday", "10:00:00.1234567",
                                   "2025-02-30T10:00:00", "10h30"])
def test_visit_time_bad(value: Any) -> None:
    assert rejected(body(visit(visit_time=value))).startswith("visits[0].visit_time:")


@pytest.mark.parametrize("value", ["10:30", "23:59:59", "00:00:00.5", "2025-02-16T10:57:00+05:30",
                                   "2025-02-16 10:57", "2025-02-16"])
def test_visit_time_good(value: str) -> None:
    assert is_visit_time(value)


# --- limits -----------------------------------------------------------------------------------

def test_too_many_images() -> None:
    payload = body(visit(urls=["https://x/1", "https://x/2"]), visit(urls=["https://x/3", "https://x/4"]))
    assert rejected(payload, Limits(max_images=3)).startswith("visits: 4 images exceed the limit of 3")
    assert validate_submission(payload, NOW, KOLKATA, Limits(max_images=4)).total_images == 4


# --- scheduled_time ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [123, 1.5, True, ["2025-02-16T10:00:00"], {"at": "x"}])
def test_scheduled_time_not_a_string(value: Any) -> None:
    assert rejected(body(scheduled_time=value)).startswith("scheduled_time: must be an ISO-8601 date-time string")


@pytest.mark.parametrize("value", ["", "  ", "tomorrow", "16/02/2025 10:00", "2025-13-01T00:00", "2025-02-16T25:00"])
def test_scheduled_time_unparsable(value: str) -> None:
    assert rejected(body(scheduled_time=value)).startswith("scheduled_time: must be an ISO-8601 date-time")


def test_scheduled_time_too_far_ahead() -> None:
    too_far = (NOW + timedelta(days=367)).isoformat()
    assert rejected(body(scheduled_time=too_far)).startswith("scheduled_time: more than 366 days ahead")
    assert rejected(body(scheduled_time=(NOW + timedelta(days=8)).isoformat()),
                    Limits(max_schedule_days=7)).startswith("scheduled_time: more than 7 days ahead")
    at_limit = NOW + timedelta(days=366)
    assert validate_submission(body(scheduled_time=at_limit.isoformat()), NOW, KOLKATA).scheduled_time == at_limit


def test_scheduled_time_with_offset() -> None:
    got = resolve_scheduled_time("2025-02-16T10:57:00+05:30", NOW, KOLKATA)
    assert got == datetime(2025, 2, 16, 5, 27, tzinfo=UTC)
    assert got.utcoffset() == timedelta(0)


def test_scheduled_time_with_z() -> None:
    got = resolve_scheduled_time("2025-02-16T10:57:00Z", NOW, KOLKATA)
    assert got == datetime(2025, 2, 16, 10, 57, tzinfo=UTC)
    assert got.utcoffset() == timedelta(0)


def test_naive_scheduled_time_is_read_in_kolkata() -> None:
    got = resolve_scheduled_time("2025-02-16T12:00:00", NOW, KOLKATA)
    assert got == datetime(2025, 2, 16, 6, 30, tzinfo=UTC)
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)


def test_absent_scheduled_time_is_now() -> None:
    assert resolve_scheduled_time(None, NOW, KOLKATA) == NOW
    assert validate_submission(body(), NOW, KOLKATA).scheduled_time == NOW


def test_past_scheduled_time_is_now() -> None:
    got = resolve_scheduled_time("2020-01-01T00:00:00+00:00", NOW, KOLKATA)
    assert got == NOW and got.utcoffset() == timedelta(0)


def test_now_in_another_zone_yields_utc() -> None:
    now_ist = NOW.astimezone(KOLKATA)
    got = resolve_scheduled_time(None, now_ist, KOLKATA)
    assert got == NOW and got.utcoffset() == timedelta(0) and got.tzinfo == UTC


def test_far_past_scheduled_time_with_offset_is_now() -> None:
    # A date in year 1 is in the past, so it must resolve to `now` (not crash converting to UTC).
    assert resolve_scheduled_time("0001-01-01T00:00:00+05:30", NOW, KOLKATA) == NOW


def test_far_future_scheduled_time_is_a_400_not_a_crash() -> None:
    # 9999-12-31T23:59:59-05:00 is past datetime.max in UTC; it is far more than 366 days ahead.
    assert rejected(body(scheduled_time="9999-12-31T23:59:59-05:00")).startswith("scheduled_time:")


# --- properties -------------------------------------------------------------------------------

store_ids = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1, max_size=20)
LOWER = "abcdefghijklmnopqrstuvwxyz"
labels = st.text(alphabet=LOWER + "0123456789", min_size=1, max_size=10)
hosts = st.builds(lambda a, b: f"{a}.{b}", labels, st.text(alphabet=LOWER, min_size=2, max_size=5))
paths = st.lists(st.text(alphabet=LOWER + "0123456789_.-", min_size=1, max_size=12), max_size=3).map(
    lambda parts: "".join("/" + p for p in parts))
urls = st.builds(lambda scheme, host, path: f"{scheme}://{host}{path}",
                 st.sampled_from(["http", "https"]), hosts, paths)
visit_times = st.sampled_from(["09:00", "23:59:59", "2025-02-16T10:00:00+05:30", "2025-02-16 08:15"])
visits = st.builds(visit, store_ids, st.lists(urls, min_size=1, max_size=4), visit_times)


@given(st.lists(visits, min_size=1, max_size=5))
def test_any_valid_body_is_accepted_preserving_stores_and_urls(vs: list[dict[str, Any]]) -> None:
    job = validate_submission({"count": len(vs), "visits": copy.deepcopy(vs)}, NOW, KOLKATA)
    assert [v.store_id for v in job.visits] == [v["store_id"] for v in vs]
    assert [list(v.image_urls) for v in job.visits] == [v["image_url"] for v in vs]


@given(st.lists(st.one_of(visits, st.just({}), st.integers()), min_size=1, max_size=5),
       st.integers(min_value=-10, max_value=10))
def test_any_count_mismatch_is_rejected_naming_count(vs: list[Any], count: int) -> None:
    if count == len(vs):
        count += 1
    with pytest.raises(InvalidInput) as info:
        validate_submission({"count": count, "visits": vs}, NOW, KOLKATA)
    assert str(info.value).startswith("count:")


offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timedelta(minutes=m))


@given(
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)),
    st.one_of(st.none(), offsets),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
)
def test_resolved_time_is_never_before_now(local: datetime, offset: timedelta | None, now_naive: datetime) -> None:
    now = now_naive.replace(tzinfo=UTC)
    value = (local if offset is None else local.replace(tzinfo=timezone(offset))).isoformat()
    got = resolve_scheduled_time(value, now, KOLKATA)
    assert got >= now
    assert got.utcoffset() == timedelta(0)


@given(st.from_regex(PLAIN_HTTP_URL, fullmatch=True))
def test_the_plain_url_fast_path_accepts_only_what_the_full_check_accepts(url: str) -> None:
    assert passes_full_url_check(url)


@pytest.mark.parametrize("url", ["http://a..b/", "http://h:0/", "http://xn--abc/", "https://[::1]:8/x", "http://b\u00fccher.de/"])
def test_urls_outside_the_fast_path_still_get_the_full_check(url: str) -> None:
    assert not PLAIN_HTTP_URL.fullmatch(url)
    assert is_http_url(url) == passes_full_url_check(url)


# --- priority ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [1, 2, 3, 4, 5])
def test_priority_one_to_five_is_kept(value: int) -> None:
    assert validate_submission(body(priority=value), NOW, KOLKATA).priority == value


@pytest.mark.parametrize("extra", [{}, {"priority": None}])
def test_priority_absent_is_three(extra: dict[str, Any]) -> None:
    assert validate_submission(body(**extra), NOW, KOLKATA).priority == 3


@pytest.mark.parametrize("value", [0, 6, -1, 10**9, 2.0, "1", True, False, [1], {"p": 1}])
def test_any_other_priority_is_a_400_naming_priority(value: Any) -> None:
    assert rejected(body(priority=value)) == "priority: must be an integer from 1 (highest) to 5 (lowest)"


@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.booleans(), st.none()))
def test_priority_is_accepted_exactly_when_it_is_an_integer_from_one_to_five(value: Any) -> None:
    ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5)
    try:
        validate_submission(body(priority=value), NOW, KOLKATA)
    except InvalidInput as exc:
        assert not ok and str(exc).startswith("priority:")
    else:
        assert ok


# --- callback_url -----------------------------------------------------------------------------
WEBHOOKS_ON = Limits(webhooks=True)


@pytest.mark.parametrize("url", ["https://hooks.example.com/imagejobs?team=a", "http://127.0.0.1:9000/hook",
                                 "https://example.com/" + "a" * 2028])
def test_a_callback_url_is_kept_when_webhooks_are_on(url: str) -> None:
    assert validate_submission(body(callback_url=url), NOW, KOLKATA, WEBHOOKS_ON).callback_url == url


@pytest.mark.parametrize("extra", [{}, {"callback_url": None}])
def test_no_callback_url_is_no_webhook_whether_webhooks_are_on_or_off(extra: dict[str, Any]) -> None:
    for limits in (DEFAULT_LIMITS, WEBHOOKS_ON):
        assert validate_submission(body(**extra), NOW, KOLKATA, limits).callback_url is None


@pytest.mark.parametrize("url", [*BAD_URLS[:-1], "https://example.com/" + "a" * 2029, ["https://x/"], {"u": 1}])
def test_a_bad_callback_url_is_a_400_naming_callback_url(url: Any) -> None:
    assert rejected(body(callback_url=url), WEBHOOKS_ON) == "callback_url: must be an absolute http or https URL"


def test_a_callback_url_without_a_webhook_secret_says_webhooks_are_off() -> None:
    message = rejected(body(callback_url="https://hooks.example.com/x"))
    assert message.startswith("callback_url:") and "WEBHOOK_SECRET is not set" in message


@given(st.one_of(st.text(max_size=40), st.integers(), st.booleans(), st.none(),
                 st.builds(lambda p: "https://example.com/" + p, st.text(max_size=40))))
def test_a_callback_url_is_accepted_exactly_when_an_image_url_would_be(value: Any) -> None:
    try:
        job = validate_submission(body(callback_url=value), NOW, KOLKATA, WEBHOOKS_ON)
    except InvalidInput as exc:
        assert value is not None and not is_http_url(value) and str(exc).startswith("callback_url:")
    else:
        assert job.callback_url == value and (value is None or is_http_url(value))
