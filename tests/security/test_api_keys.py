"""API keys: required when set; a job belongs to the key's tenant and is invisible to other
tenants; keys are never logged, published or stored (only tenant names are)."""

from __future__ import annotations

import psycopg

from tests.security.conftest import API_KEYS, TENANTS, one_image_job
from tests.support.client import Client

ALPHA, BETA = ({"Authorization": f"Bearer {k}"} for k in API_KEYS)


def test_keys_are_required_and_jobs_are_private_to_their_tenant(keyed_stack: Client) -> None:
    client = keyed_stack
    body = one_image_job(client.image(5, 5))
    assert client.submit(body).status_code == 401
    assert client.submit(body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    whole_entry = {"Authorization": f"Bearer {API_KEYS[0]}:{TENANTS[0]}"}  # the key is what precedes ':'
    assert client.submit(body, headers=whole_entry).status_code == 401
    accepted = client.submit(body, headers=ALPHA)
    assert accepted.status_code == 200
    job_id = accepted.json()["job_id"]
    status = f"{client.status_url}/api/status/{job_id}"
    assert client.http.get(status).status_code == 401
    assert client.http.get(status, headers=BETA).status_code == 404
    owned = client.http.get(status, headers=ALPHA)
    assert owned.status_code == 200 and owned.json()["job_id"] == job_id


def test_the_owner_recorded_is_the_tenant_and_keys_are_never_logged_published_or_stored(keyed_stack: Client) -> None:
    client = keyed_stack
    job_id = client.submit(one_image_job(client.image(6, 6)), headers={**ALPHA, "Idempotency-Key": "k-1"}).json()[
        "job_id"]
    client.submit(one_image_job(client.image(6, 6)), headers={"Authorization": "Bearer not-a-key-9d8c"})
    assert client.http.get(f"{client.status_url}/api/status/{job_id}", headers=ALPHA).status_code == 200
    [submitted] = [e for _, e in client.topic_events("jobs", job_id) if e.type == "JobSubmitted"]
    assert submitted.owner == TENANTS[0]
    secrets = (*API_KEYS, "not-a-key-9d8c")
    for service in client.stack.processes:
        text = service.log_path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, (service.name, secret)
    for topic in ("jobs", "tasks", "results", "status"):
        for secret in secrets:
            assert not client.topic_events_matching(topic, secret), (topic, secret)
    with psycopg.connect(client.stack.database_url) as conn:
        assert conn.execute("SELECT owner FROM status_jobs WHERE job_id = %s", (job_id,)).fetchone() == (TENANTS[0],)
        tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:  # every row of every table, as text
            dump = "\n".join(r for (r,) in conn.execute(f'SELECT t::text FROM "{table}" t'))
            for secret in secrets:
                assert secret not in dump, (table, secret)


def test_the_job_list_shows_only_the_callers_tenants_jobs(keyed_stack: Client) -> None:
    client = keyed_stack
    mine = {client.submit(one_image_job(client.image(7, 7)), headers=ALPHA).json()["job_id"] for _ in range(3)}
    theirs = client.submit(one_image_job(client.image(7, 7)), headers=BETA).json()["job_id"]
    listing = f"{client.status_url}/api/jobs"
    assert client.http.get(listing).status_code == 401
    for job_id, key in [*((j, ALPHA) for j in mine), (theirs, BETA)]:  # read-your-writes: folded now
        assert client.http.get(f"{client.status_url}/api/status/{job_id}", headers=key).status_code == 200
    seen = {j["job_id"] for j in client.http.get(listing, params={"limit": 200}, headers=ALPHA).json()["jobs"]}
    assert mine <= seen and theirs not in seen
    beta = {j["job_id"] for j in client.http.get(listing, params={"limit": 200}, headers=BETA).json()["jobs"]}
    assert theirs in beta and not (mine & beta)


def test_the_command_line_sends_the_api_key_from_the_environment(keyed_stack: Client) -> None:
    from typer.testing import CliRunner

    from imagejobs_client.cli import app

    client, runner = keyed_stack, CliRunner()
    base = ["--url", client.ingest, "--status-url", client.status_url]
    image = client.image(8, 8)
    refused = runner.invoke(app, [*base, "submit", "--store", "S00339218", "--image", image], env={"API_KEY": ""})
    assert refused.exit_code == 1 and refused.stderr.strip() == "imagejobs: 401: missing or invalid API key"
    alpha = {"API_KEY": API_KEYS[0]}
    submitted = runner.invoke(app, [*base, "submit", "--store", "S00339218", "--image", image], env=alpha)
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    assert runner.invoke(app, [*base, "watch", job_id, "--every", "0.1"], env=alpha).exit_code == 0
    other = runner.invoke(app, [*base, "status", job_id], env={"API_KEY": API_KEYS[1]})
    assert other.exit_code == 1 and "404: job not found" in other.stderr
