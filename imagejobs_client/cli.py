"""`imagejobs`: the command line for clients and operators (Typer + Rich).

    imagejobs submit job.json --at 2026-12-01T10:00:00+05:30 [--priority 1]   # or --store S --image URL ...
    imagejobs submit job.json --callback-url https://example.com/hook; imagejobs webhook JOB_ID
    imagejobs watch JOB_ID      # a live progress bar; exit 1 when the job fails
    imagejobs status JOB_ID | results JOB_ID [--json|--csv] | cancel JOB_ID | reschedule JOB_ID --at T
    imagejobs jobs --status failed [--limit 20] [--cursor C]
    imagejobs dlq list | show OFFSET | replay OFFSET [--topic NAME]

`--url`/`--status-url` (or IMAGEJOBS_URL / IMAGEJOBS_STATUS_URL) name the APIs; `API_KEY` is
sent as a bearer token; `dlq` reads Kafka at KAFKA_BOOTSTRAP_SERVERS. Errors are one line on
stderr and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from imagejobs_client.client import ApiError, ImagejobsClient
from imagejobs_client.dlq_tools import DeadLetter, dead_letters, describe, replay, summary
from shared.events import FINAL_STATUSES
from shared.kafka import kafka_security
from shared.settings import CommonSettings

app = typer.Typer(help="Submit image jobs and follow them.", no_args_is_help=True, add_completion=False)
dlq = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")
out, err = Console(), Console(stderr=True)
State: dict[str, ImagejobsClient] = {}


@app.callback()
def main(url: Annotated[str | None, typer.Option(help="ingest API (IMAGEJOBS_URL)")] = None,
         status_url: Annotated[str | None, typer.Option(help="status API (IMAGEJOBS_STATUS_URL)")] = None) -> None:
    client = ImagejobsClient()
    client.ingest_url = url or client.ingest_url
    client.status_url = status_url or client.status_url
    State["client"] = client


def client() -> ImagejobsClient:
    return State.get("client") or ImagejobsClient()


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"imagejobs: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def _job_body(file: Path | None, stores: list[str], images: list[str], at: str | None,
              priority: int | None = None, callback_url: str | None = None) -> dict[str, Any]:
    body: dict[str, Any]
    if file is not None:
        try:
            body = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"cannot read {file}: {exc}")
    elif stores and images:
        body = {"count": 1, "visits": [{"store_id": stores[0], "image_url": images, "visit_time": "00:00:00"}]}
    else:
        fail("give a JSON file, or --store and at least one --image")
    if at is not None:
        body["scheduled_time"] = at
    if priority is not None:
        body["priority"] = priority
    if callback_url is not None:
        body["callback_url"] = callback_url
    return body


@app.command()
def submit(file: Annotated[Path | None, typer.Argument(help="a job as JSON (the POST /processJob body)")] = None,
           store: Annotated[list[str] | None, typer.Option(help="store id (with --image)")] = None,
           image: Annotated[list[str] | None, typer.Option(help="image URL (repeatable)")] = None,
           at: Annotated[str | None, typer.Option(help="scheduled_time, ISO-8601")] = None,
           priority: Annotated[int | None, typer.Option(
               min=1, max=5, help="1 (highest) to 5 (lowest): within your tenant's share, higher goes first "
                                  "(default 3)")] = None,
           callback_url: Annotated[str | None, typer.Option(
               help="POST the final status here, signed (needs WEBHOOK_SECRET on the server); "
                    "`imagejobs webhook JOB_ID` shows its attempts")] = None,
           idempotency_key: Annotated[str | None, typer.Option(
               help="Idempotency-Key (default: a new one); a 503 or a dropped connection is retried with it "
                    "for up to 60 s, so the job is created once")] = None) -> None:
    """Submit a job; prints its id."""
    body = _job_body(file, store or [], image or [], at, priority, callback_url)
    accepted = _api(lambda c: c.submit(body, idempotency_key))
    out.print(accepted["job_id"], highlight=False)
    err.print(f"scheduled for {accepted['scheduled_time']}", highlight=False)


@app.command()
def status(job_id: str) -> None:
    """The job's status, as JSON."""
    out.print_json(data=_api(lambda c: c.status(job_id)))


@app.command()
def webhook(job_id: str) -> None:
    """The job's completion webhook (its callback_url): state and every attempt, as JSON."""
    out.print_json(data=_api(lambda c: c.webhook(job_id)))


@app.command()
def watch(job_id: str, every: Annotated[float, typer.Option(
        help="seconds between polls, when the server has no progress stream")] = 0.5) -> None:
    """Follow the job until it is final (its progress stream; polling when there is none);
    exit 1 if it failed, 2 if cancelled."""
    first = body = _api(lambda c: c.status(job_id))
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=False) as progress:
            bar = progress.add_task(first["status"], total=first["images"]["total"] or None)
            for body in _until_final(client().follow(job_id, every), first):
                done = body["images"]["succeeded"] + body["images"]["failed"]
                progress.update(bar, completed=done, total=body["images"]["total"] or None,
                                description=body["status"])
    except ApiError as exc:
        fail(str(exc), exc.exit_code)
    for failure in body.get("error", []):
        err.print(f"  {failure['store_id']}: {failure['error']}", highlight=False)
    out.print(body["status"], highlight=False)
    raise typer.Exit({"completed": 0, "failed": 1, "cancelled": 2}[body["status"]])


@app.command()
def results(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False,
            as_csv: Annotated[bool, typer.Option("--csv")] = False) -> None:
    """Per-image results: a table, or --json / --csv."""
    items = _api(lambda c: c.results(job_id))
    columns = ["task_id", "store_id", "status", "width", "height", "perimeter", "error", "image_url"]
    if as_json:
        out.print_json(data=items)
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(items)
    else:
        out.print(_table(columns[:-1], items))


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job that has not been released (the scheduler decides)."""
    out.print(_api(lambda c: c.cancel(job_id))["status"], highlight=False)


@app.command()
def reschedule(job_id: str, at: Annotated[str, typer.Option(help="new scheduled_time, ISO-8601")]) -> None:
    """Move a job that has not been released; prints the new time."""
    out.print(_api(lambda c: c.reschedule(job_id, at))["scheduled_time"], highlight=False)


@app.command()
def jobs(status_filter: Annotated[str | None, typer.Option("--status", help="only this status")] = None,
         limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
         cursor: Annotated[str | None, typer.Option(help="next page (printed after a page)")] = None) -> None:
    """Jobs, newest first."""
    page = _api(lambda c: c.jobs(status_filter, limit, cursor))
    rows = [{**j, "images": f"{j['images']['succeeded'] + j['images']['failed']}/{j['images']['total']}",
             "started": j["images"].get("started", "")} for j in page["jobs"]]
    out.print(_table(["job_id", "status", "priority", "images", "started", "scheduled_time", "submitted_at"], rows))
    if page["next_cursor"]:
        err.print(f"next page: --cursor {page['next_cursor']}", highlight=False)


@dlq.command("list")
def dlq_list() -> None:
    """Every dead letter: its offset, the service, where the record was, its size and the reason."""
    columns = ["dlq_offset", "service", "topic", "partition", "offset", "bytes", "reason"]
    out.print(_table(columns, [summary(letter) for letter in _letters()]))


@dlq.command("show")
def dlq_show(offset: int) -> None:
    """One dead letter, whole, as JSON: context, key, headers and the full value (text if UTF-8, else base64)."""
    sys.stdout.write(json.dumps(describe(_letter(offset)), indent=2, ensure_ascii=False) + "\n")


@dlq.command("replay")
def dlq_replay(offset: int, topic: Annotated[str | None, typer.Option(
        help="publish to this topic instead of the original one (a record published to the wrong topic)")] = None,
) -> None:
    """Publish a dead letter's original record (key, value, headers) to its original topic again."""
    letter = _letter(offset)
    if not (topic or letter.topic):
        fail(f"the record at DLQ offset {offset} names no original topic: give --topic")
    if letter.maybe_truncated:
        err.print(f"imagejobs: warning: dead letter {offset} is in the old format and its value was cut at "
                  "100,000 bytes or was not UTF-8: the replayed record may be incomplete",
                  markup=False, highlight=False, soft_wrap=True)
    settings = CommonSettings()
    bootstrap = settings.kafka_bootstrap_servers
    try:
        target = asyncio.run(asyncio.wait_for(replay(bootstrap, letter, topic, kafka_security(settings)), 60))
    except Exception as exc:  # noqa: BLE001 - one line for any Kafka failure
        fail(f"cannot replay to {topic or letter.topic} at {bootstrap}: {type(exc).__name__} {exc}")
    out.print(f"replayed to {target}", highlight=False)


def _letters() -> list[DeadLetter]:
    settings = CommonSettings()
    try:
        return asyncio.run(asyncio.wait_for(
            dead_letters(settings.kafka_bootstrap_servers, settings.topics.dlq, kafka_security(settings)), 30))
    except Exception as exc:  # noqa: BLE001 - one line for any Kafka failure
        fail(f"cannot read the DLQ at {settings.kafka_bootstrap_servers}: {type(exc).__name__} {exc}")
    return []


def _letter(offset: int) -> DeadLetter:
    found = [letter for letter in _letters() if letter.dlq_offset == offset]
    if not found:
        fail(f"no dead letter at offset {offset}")
    return found[0]


def _until_final(statuses: Iterator[dict[str, Any]], first: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The statuses to show: the one read first, then the stream's (lazily)."""
    yield first
    if first["status"] not in FINAL_STATUSES:
        yield from statuses


def _api(call: Any) -> Any:
    try:
        return call(client())
    except ApiError as exc:
        fail(str(exc), exc.exit_code)


def _table(columns: list[str], rows: list[dict[str, Any]]) -> Table:
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    return table
