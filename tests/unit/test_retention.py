"""Retention's pure parts: the maintenance round's batching (with fake expiries, no database),
how a status batch is cut, the settings' bounds and the topics' retention configs."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.kafka import TOMBSTONE_RETENTION_MS, stale_configs, topic_specs
from shared.retention import DELETED, Deleted, Expiry, batch_was_full, sweep, within_batch
from shared.settings import CommonSettings


class FakeTable:
    """An expiry over `rows` expired rows that records the batch sizes it was asked for."""

    def __init__(self, table: str, rows: int) -> None:
        self.table, self.rows, self.asked = table, rows, []  # type: ignore[var-annotated]

    async def expire(self, batch: int) -> Mapping[str, int]:
        self.asked.append(batch)
        taken = min(batch, self.rows)
        self.rows -= taken
        return {self.table: taken}


def deleted_so_far(table: str) -> float:
    return DELETED.labels(table)._value.get()  # type: ignore[attr-defined]  # noqa: SLF001


def test_a_round_repeats_while_batches_come_back_full_and_counts_every_row() -> None:
    big, small, empty = FakeTable("t_big", 1234), FakeTable("t_small", 7), FakeTable("t_empty", 0)
    before = deleted_so_far("t_big")
    total = asyncio.run(sweep([Expiry(t.table, t.expire) for t in (big, small, empty)], batch=500))
    assert total == {"t_big": 1234, "t_small": 7}
    assert big.asked == [500, 500, 500] and small.asked == [500] and empty.asked == [500]
    assert deleted_so_far("t_big") - before == 1234


def test_an_exact_multiple_ends_with_one_empty_batch() -> None:
    table = FakeTable("t_exact", 1000)
    asyncio.run(sweep([Expiry(table.table, table.expire)], batch=500))
    assert table.asked == [500, 500, 500] and table.rows == 0


def test_the_service_runs_between_batches() -> None:
    table = FakeTable("t_yield", 5000)
    ticks: list[int] = []

    async def main() -> None:
        async def other_work() -> None:
            while True:
                ticks.append(len(table.asked))
                await asyncio.sleep(0)
        other = asyncio.create_task(other_work())
        await asyncio.sleep(0)
        await sweep([Expiry(table.table, table.expire)], batch=100)
        other.cancel()
    asyncio.run(main())
    assert len(table.asked) == 51
    assert len(set(ticks)) >= 50  # the other task ran after (nearly) every batch


def test_a_failing_expiry_is_left_for_the_next_round_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    async def database_down(batch: int) -> Mapping[str, int]:
        raise OSError("connection refused")
    table = FakeTable("t_after", 3)
    total = asyncio.run(sweep([Expiry("t_down", database_down), Expiry(table.table, table.expire)], batch=10))
    assert total == {"t_after": 3}
    assert "expiring t_down failed (OSError: connection refused)" in caplog.text


def test_a_batch_is_full_when_any_table_reached_its_size() -> None:
    assert batch_was_full({"status_jobs": 1, "status_outcomes": 500}, 500)
    assert batch_was_full({"scheduler_jobs": 500, "scheduler_commands": 0}, 500)
    assert not batch_was_full({"status_jobs": 499, "status_outcomes": 10}, 500)
    assert not batch_was_full({}, 500)


def test_a_batch_cut_short_with_more_waiting_is_full() -> None:
    assert batch_was_full(Deleted({"status_jobs": 90, "status_outcomes": 498}, more_waiting=True), 500)
    assert not batch_was_full(Deleted({"status_jobs": 90, "status_outcomes": 498}), 500)
    assert batch_was_full(Deleted({"status_outcomes": 500}), 500)


def test_a_round_goes_on_while_an_expiry_says_more_are_waiting() -> None:
    """Jobs of 6 rows in batches of 500 rows: no batch deletes 500 rows (83 jobs, 498), yet the
    round must not stop after the first (status expired ~90 jobs a minute while 2,400 finished)."""
    jobs, asked = [6] * 1000, []

    async def expire(batch: int) -> Mapping[str, int]:
        asked.append(batch)
        chosen = within_batch([(i, size) for i, size in enumerate(jobs)], batch)
        rows = sum(jobs[i] for i in chosen)
        del jobs[:len(chosen)]
        return Deleted({"t_jobs": len(chosen), "t_rows": rows}, more_waiting=bool(jobs))
    total = asyncio.run(sweep([Expiry("t_jobs", expire)], batch=500))
    assert total["t_jobs"] == 1000 and total["t_rows"] == 6000 and not jobs
    assert len(asked) == 13  # 12 batches of 83 jobs, then the last 4


def test_a_status_batch_takes_small_jobs_together_and_a_large_job_alone() -> None:
    assert within_batch([("a", 3), ("b", 3), ("c", 3)], 7) == ["a", "b"]
    assert within_batch([("huge", 10_000), ("b", 1)], 500) == ["huge"]
    assert within_batch([], 500) == []


@given(st.lists(st.integers(min_value=1, max_value=1000), max_size=50), st.integers(min_value=1, max_value=2000))
def test_a_status_batch_stays_within_its_size_unless_one_job_is_larger(sizes: list[int], batch: int) -> None:
    chosen = within_batch(list(enumerate(sizes)), batch)
    assert chosen == list(range(len(chosen)))  # oldest first, none skipped
    if sizes:
        assert chosen
        rows = sum(sizes[i] for i in chosen)
        assert rows <= batch or len(chosen) == 1
        if len(chosen) < len(sizes):
            assert rows + sizes[len(chosen)] > batch  # stopped only when the next did not fit


@pytest.mark.parametrize("name", ["JOB_RETENTION_S", "RETENTION_EVERY_S", "RETENTION_BATCH", "DLQ_RETENTION_S",
                                  "KAFKA_TOPIC_RETENTION_S"])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_retention_settings_must_be_positive(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        CommonSettings()


def test_retention_defaults() -> None:
    settings = CommonSettings()
    assert settings.job_retention_s == 30 * 86_400 and settings.retention_slack_s == 86_400
    assert settings.retention_every_s == 60 and settings.retention_batch == 500
    assert settings.kafka_topic_retention_s is None and settings.dlq_retention_s == 30 * 86_400


def test_topic_retention_the_core_topics_keep_the_brokers_default_unless_set() -> None:
    default = {s.name: s.topic_configs for s in topic_specs(CommonSettings(kafka_topic_prefix="p"))}
    assert all("retention.ms" not in default[f"p.{t}"] for t in ("jobs", "tasks", "results", "status"))
    assert default["p.dlq"]["retention.ms"] == str(30 * 86_400_000)
    assert default["p.status"] == {"cleanup.policy": "compact", "delete.retention.ms": str(TOMBSTONE_RETENTION_MS)}
    assert TOMBSTONE_RETENTION_MS == 86_400_000
    set_ = {s.name: s.topic_configs for s in topic_specs(CommonSettings(kafka_topic_prefix="p",
                                                                         kafka_topic_retention_s=3 * 86_400))}
    assert all(set_[f"p.{t}"]["retention.ms"] == str(3 * 86_400_000) for t in ("jobs", "tasks", "results"))
    assert "retention.ms" not in set_["p.status"]  # compacted: the latest status per job stays until its tombstone


def test_an_existing_topic_is_altered_only_for_what_differs() -> None:
    wanted = {"max.message.bytes": "100", "retention.ms": "5"}
    assert stale_configs({"max.message.bytes": "100", "retention.ms": "5"}, wanted) == []
    assert stale_configs({"max.message.bytes": "200", "retention.ms": "5"}, wanted) == []  # larger is kept
    assert stale_configs({"max.message.bytes": "99", "retention.ms": "604800000"}, wanted) == [
        "max.message.bytes", "retention.ms"]
    assert stale_configs({}, wanted) == ["max.message.bytes", "retention.ms"]
