"""The `imagejobs` command against the real stack: submit -> watch -> results -> cancel ->
reschedule -> jobs -> dlq replay, with API keys off (this module) and on (tests/security)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from imagejobs_client.cli import app
from tests.support.client import Client, example_job
from tests.support.waiting import wait_for

runner = CliRunner()


def cli(client: Client, *args: str, env: dict[str, str] | None = None) -> Any:
    base = ["--url", client.ingest, "--status-url", client.status_url]
    return runner.invoke(app, [*base, *args], env={"API_KEY": "", "COLUMNS": "240", **(env or {})})


def submit_file(client: Client, tmp_path: Path, **overrides: Any) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(example_job(client, **overrides)))
    done = cli(client, "submit", str(path))
    assert done.exit_code == 0, done.output
    return done.stdout.strip().splitlines()[0]


def test_submit_watch_and_results_of_the_example_job(client: Client, tmp_path: Path) -> None:
    job_id = submit_file(client, tmp_path)
    watched = cli(client, "watch", job_id, "--every", "0.1")
    assert watched.exit_code == 0 and watched.stdout.strip().endswith("completed"), watched.output
    table = cli(client, "results", job_id)
    assert table.exit_code == 0 and "S00339218" in table.stdout and "4000" in table.stdout  # 2*(1280+720)
    as_json = json.loads(cli(client, "results", job_id, "--json").stdout)
    assert sorted(r["perimeter"] for r in as_json) == [1908, 4000, 4000]  # 2*(550+404), 2*(1280+720)
    rows = list(csv.DictReader(io.StringIO(cli(client, "results", job_id, "--csv").stdout)))
    assert [r["task_id"] for r in rows] == [f"{job_id}:0:0", f"{job_id}:0:1", f"{job_id}:1:0"]


def test_a_failed_job_exits_non_zero_with_its_errors(client: Client) -> None:
    submitted = cli(client, "submit", "--store", "NOPE", "--image", client.image(5, 5))
    assert submitted.exit_code == 0, submitted.output
    watched = cli(client, "watch", submitted.stdout.strip(), "--every", "0.1")
    assert watched.exit_code == 1 and "NOPE: store not found" in watched.output


def test_cancel_reschedule_and_the_job_list(client: Client, tmp_path: Path) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    job_id = submit_file(client, tmp_path, scheduled_time=later)
    moved = cli(client, "reschedule", job_id, "--at", "2020-01-01T00:00:00Z")  # the past means now
    assert moved.exit_code == 0, moved.output
    client.wait_final(job_id)
    refused = cli(client, "cancel", job_id)
    assert refused.exit_code == 1 and refused.stderr.startswith("imagejobs: 409: job is already completed")
    other = submit_file(client, tmp_path, scheduled_time=later)
    cancelled = cli(client, "cancel", other)
    assert cancelled.exit_code == 0 and cancelled.stdout.strip() == "cancelled"
    listed = cli(client, "jobs", "--status", "cancelled", "--limit", "200")
    assert listed.exit_code == 0 and other[:8] in listed.stdout


def test_errors_are_one_line_and_a_non_zero_exit(client: Client, tmp_path: Path) -> None:
    for args in (["status", "not-a-uuid"], ["submit", str(tmp_path / "missing.json")], ["submit"],
                 ["--status-url", "http://127.0.0.1:1", "status", "x"]):
        result = cli(client, *args)
        assert result.exit_code != 0 and len(result.stderr.strip().splitlines()) == 1, (args, result.output)
        assert result.stderr.startswith("imagejobs: ") and "Traceback" not in result.output


def test_a_dead_letter_is_listed_shown_and_replayed(client: Client) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": client.stack.infra.kafka.bootstrap, "KAFKA_TOPIC_PREFIX": client.stack.prefix}
    marker = f"not json {datetime.now(UTC).timestamp()}"
    asyncio.run(_produce(env["KAFKA_BOOTSTRAP_SERVERS"], f"{client.stack.prefix}.results", marker.encode()))

    def letters() -> list[dict[str, Any]]:
        listed = cli(client, "dlq", "list", env=env)
        assert listed.exit_code == 0, listed.output
        return [json.loads(cli(client, "dlq", "show", str(o), env=env).stdout) for o in _offsets(listed.stdout)]
    mine = wait_for(lambda: [letter for letter in letters() if letter["value"] == marker], 30, "the dead letter")
    replayed = cli(client, "dlq", "replay", str(mine[0]["dlq_offset"]), env=env)
    assert replayed.exit_code == 0 and "replayed to" in replayed.stdout
    # the status service dead-letters it again: the replayed record did reach its topic
    wait_for(lambda: len([letter for letter in letters() if letter["value"] == marker]) >= 2, 30, "the replay")


async def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"poison")
    finally:
        await producer.stop()


def _offsets(table: str) -> list[int]:
    """The dlq_offset column of `dlq list`'s table."""
    cells = [line.split("│") for line in table.splitlines() if line.count("│") > 2]
    return [int(row[1]) for row in cells if row[1].strip().isdigit()]


def test_submit_with_a_priority_and_the_job_list_shows_it(client: Client) -> None:
    submitted = cli(client, "submit", "--store", "S00339218", "--image", client.image(13, 17), "--priority", "1")
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    assert client.wait_final(job_id)["priority"] == 1
    listed = cli(client, "jobs", "--limit", "50")
    assert listed.exit_code == 0 and job_id[:8] in listed.stdout and "priority" in listed.stdout
    refused = cli(client, "submit", "--store", "S00339218", "--image", client.image(13, 17), "--priority", "9")
    assert refused.exit_code != 0 and "priority" in refused.output.lower()
