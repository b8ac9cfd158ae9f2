"""Completion webhooks' pure rules (services/status/handlers/webhooks.py, shared/webhooks.py):
the backoff, what follows an attempt, the signature a receiver verifies with standardwebhooks,
and WEBHOOK_SECRET's form."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.status.domain import DELIVERED, FAILED, PENDING, Sent
from services.status.handlers.webhooks import RetryPolicy, backoff_s, decide, signed_headers, status_json
from shared.api import Images, JobStatus, StoreError, model_response
from shared.webhooks import BadWebhookSecret, parse_webhook_secret, webhook_id_for

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
POLICY = RetryPolicy(retry_for_s=86_400, base_s=1.0, max_s=3_600)
FINAL_AT = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


def job(status: str = "completed", errors: list[StoreError] | None = None) -> JobStatus:
    images = Images(total=1, succeeded=1 if errors is None else 0, failed=0 if errors is None else 1,
                    pending=0, started=1)
    return JobStatus(job_id="j", status=status, scheduled_time="2026-12-06T08:00:00Z", priority=3, images=images,
                     error=errors)


# --- backoff ----------------------------------------------------------------------------------
@given(st.integers(0, 10_000), st.floats(0.001, 100), st.floats(0.001, 100_000), st.floats(0, 1))
def test_the_backoff_is_a_random_fraction_of_the_capped_exponential(attempts: int, base: float, cap: float,
                                                                    fraction: float) -> None:
    wait = backoff_s(attempts, base, cap, lambda: fraction)
    ceiling = min(cap, base * 2.0 ** min(attempts, 64))
    assert 0 <= wait <= ceiling
    assert wait == pytest.approx(ceiling * fraction)


def test_the_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    ceilings = [backoff_s(n, 1.0, 3_600, lambda: 1.0) for n in range(1, 15)]
    assert ceilings[:5] == [2, 4, 8, 16, 32]
    assert ceilings[-1] == 3_600 and max(ceilings) == 3_600


def test_full_jitter_spreads_the_waits_over_the_whole_range() -> None:
    assert backoff_s(3, 1.0, 3_600, lambda: 0.0) == 0
    assert backoff_s(3, 1.0, 3_600, lambda: 0.5) == 4


# --- what follows an attempt ------------------------------------------------------------------
@pytest.mark.parametrize("code", [200, 201, 202, 204, 299])
def test_any_2xx_delivers(code: int) -> None:
    assert decide(Sent(code, None, 5), 1, FINAL_AT, FINAL_AT, POLICY).state == DELIVERED


@pytest.mark.parametrize("sent", [Sent(500, "HTTP 500", 3), Sent(302, "HTTP 302 (redirects are not followed)", 3),
                                  Sent(404, "HTTP 404", 3), Sent(None, "no answer within 10s", 10_000),
                                  Sent(None, "connection failed: refused", 1)])
def test_anything_else_is_tried_again_after_the_backoff(sent: Sent) -> None:
    now = FINAL_AT + timedelta(minutes=1)
    decision = decide(sent, 3, FINAL_AT, now, POLICY, lambda: 0.5)
    assert decision.state == PENDING and decision.next_attempt_at == now + timedelta(seconds=4)


def test_a_refused_address_fails_at_once() -> None:
    sent = Sent(None, "address not allowed: 127.0.0.1", 0, refused=True)
    assert decide(sent, 1, FINAL_AT, FINAL_AT, POLICY).state == FAILED


def test_retries_stop_at_the_retry_period_with_a_last_attempt_at_its_end() -> None:
    give_up_at = FINAL_AT + timedelta(seconds=POLICY.retry_for_s)
    near_the_end = give_up_at - timedelta(seconds=10)
    last = decide(Sent(503, "HTTP 503", 1), 20, FINAL_AT, near_the_end, POLICY, lambda: 1.0)
    assert last.state == PENDING and last.next_attempt_at == give_up_at
    assert decide(Sent(503, "HTTP 503", 1), 21, FINAL_AT, give_up_at, POLICY).state == FAILED


@given(st.integers(1, 200), st.floats(0, 200_000), st.floats(0, 1))
def test_a_retry_is_never_in_the_past_nor_after_the_retry_period(attempts: int, since_final_s: float,
                                                                 fraction: float) -> None:
    now = FINAL_AT + timedelta(seconds=since_final_s)
    decision = decide(Sent(500, "HTTP 500", 1), attempts, FINAL_AT, now, POLICY, lambda: fraction)
    if decision.state == PENDING:
        assert decision.next_attempt_at is not None
        assert now <= decision.next_attempt_at <= FINAL_AT + timedelta(seconds=POLICY.retry_for_s)
    else:
        assert decision.state == FAILED and since_final_s >= POLICY.retry_for_s


# --- the signature ----------------------------------------------------------------------------
def test_a_receiver_verifies_the_signed_body_with_standardwebhooks() -> None:
    body = status_json(job("failed", [StoreError(store_id="S1", error="ünïcode")]))
    headers = signed_headers(Webhook(SECRET), "msg_j", body, datetime.now(UTC))
    assert headers["webhook-id"] == "msg_j" and headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body.encode(), headers) == json.loads(body)


def test_a_changed_body_or_another_secret_does_not_verify() -> None:
    body = status_json(job("completed"))
    headers = signed_headers(Webhook(SECRET), "msg_j", body, datetime.now(UTC))
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(status_json(job("cancelled")), headers)
    other = "whsec_" + base64.b64encode(bytes(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


def test_the_timestamp_header_is_whole_seconds_and_is_what_was_signed() -> None:
    at = datetime(2026, 12, 6, 8, 0, 1, 900_000, tzinfo=UTC)
    headers = signed_headers(Webhook(SECRET), "msg_j", "{}", at)
    assert headers["webhook-timestamp"] == str(int(at.timestamp()))
    assert headers["webhook-signature"] == Webhook(SECRET).sign("msg_j", at.replace(microsecond=0), "{}")


def test_the_body_is_written_as_the_status_route_writes_it() -> None:
    failed = job("failed", [StoreError(store_id="S1", error="é\n")])
    assert status_json(failed).encode() == model_response(failed).body
    assert status_json(failed) == json.dumps(failed.model_dump(), ensure_ascii=False, separators=(",", ":"))
    assert '"error":[{"store_id":"S1","error":"é\\n"}]' in status_json(failed)
    assert status_json(job()) == (
        '{"job_id":"j","status":"completed","scheduled_time":"2026-12-06T08:00:00Z","priority":3,'
        '"images":{"total":1,"succeeded":1,"failed":0,"pending":0,"started":1}}')  # no "error" unless failed


def test_the_webhook_id_is_one_per_job() -> None:
    assert webhook_id_for("3f1c2a9e-1b2c-4d5e-8f90-123456789abc") == "msg_3f1c2a9e-1b2c-4d5e-8f90-123456789abc"


# --- WEBHOOK_SECRET ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_secret_turns_webhooks_off(value: str) -> None:
    assert parse_webhook_secret(value) is None


@pytest.mark.parametrize("value", [SECRET, SECRET.rstrip("="), "whsec_" + base64.b64encode(bytes(24)).decode(),
                                   "whsec_" + base64.b64encode(bytes(64)).decode()])
def test_a_standard_secret_signs(value: str) -> None:
    signer = parse_webhook_secret(value)
    assert signer is not None
    assert signer.sign("m", FINAL_AT, "{}") == Webhook(value).sign("m", FINAL_AT, "{}")


@pytest.mark.parametrize("value", [
    "s3cr3t-but-not-standard",                                   # no whsec_ prefix
    base64.b64encode(bytes(32)).decode(),                        # the base64 alone
    "whsec_not*base64!",                                         # not base64
    "whsec_" + base64.b64encode(bytes(16)).decode(),             # too short
    "whsec_" + base64.b64encode(bytes(65)).decode(),             # too long
])
def test_any_other_secret_is_refused_without_showing_it(value: str) -> None:
    with pytest.raises(BadWebhookSecret) as info:
        parse_webhook_secret(value)
    message = str(info.value)
    assert message.startswith("WEBHOOK_SECRET: must be whsec_") and value.removeprefix("whsec_") not in message
    assert isinstance(info.value, ValueError)  # so shared.serve stops the service with one line
