"""Touchpoint results through a real Celery worker on the real Redis and PostgreSQL:
posted over the API, applied by the worker, counted in the database."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Count

from crm import services
from crm.models import (
    BusinessEvent,
    Customer,
    Interaction,
    SourceRecord,
    SourceSystem,
    TouchpointResult,
    User,
)
from tests.conftest import api_as, make_customer
from tests.integration.conftest import COMMITTED, ManagedProcess, start_worker, wait_until
from tests.touchpoint_data import body_of, profile, visit, web_source

pytestmark = [pytest.mark.integration, COMMITTED]

# Short enough that a result left pending by an error (the database or Redis away) is
# retried within the test.
LEASE_SECONDS = "5"


@pytest.fixture
def queue(settings: Any) -> str:
    """A queue of this test's own; the test process enqueues to it (intake, sweep)."""
    name = f"ingest-{secrets.token_hex(6)}"
    settings.CRM_INGEST_QUEUE = name
    settings.CRM_INGEST_LEASE_SECONDS = int(LEASE_SECONDS)
    settings.CRM_INGEST_SWEEP_AFTER_SECONDS = 1
    return name


@pytest.fixture
def workers(queue: str, tmp_path: Path) -> Iterator[list[ManagedProcess]]:
    """Start workers on demand (``start()``); every one is stopped at the end."""
    started: list[ManagedProcess] = []
    yield started
    for process in started:
        process.stop()


def worker(started: list[ManagedProcess], queue: str, tmp_path: Path, **env: str) -> ManagedProcess:
    process = start_worker(
        queue, tmp_path / f"worker-{len(started)}.log", CRM_INGEST_QUEUE=queue,
        CRM_INGEST_LEASE_SECONDS=LEASE_SECONDS, **env,
    )  # fmt: skip
    started.append(process)
    return process


def pending() -> int:
    return TouchpointResult.objects.filter(status="pending").count()


def post_batches(user: User, items: list[dict[str, Any]], *, size: int = 500) -> list[int]:
    client = api_as(user)
    batch_ids = []
    for start in range(0, len(items), size):
        response = client.post(
            "/api/v1/touchpoints/web/results", data=body_of(items[start : start + size]),
            content_type="application/json",
        )  # fmt: skip
        assert response.status_code == 202, response.content
        assert response.json()["refused"] == 0
        batch_ids.append(response.json()["batch"])
    return batch_ids


def mixed_results(n: int, *, prefix: str = "") -> list[dict[str, Any]]:
    """Visits of two known customers, and profiles of new ones."""
    items: list[dict[str, Any]] = []
    for i in range(n):
        if i % 4 == 3:
            items.append(profile(f"{prefix}p-{i}", f"{prefix}K{i}", first="New", last=f"Person {i}",
                                 email=f"{prefix}new{i}@example.com"))  # fmt: skip
        else:
            items.append(visit(f"{prefix}v-{i}", "dave@example.com" if i % 2 else "erin@example.org"))
    return items


def assert_applied_exactly_once(source: SourceSystem, items: list[dict[str, Any]]) -> None:
    visits = [i["external_id"] for i in items if i["record_kind"] == "interaction"]
    profiles = [i for i in items if i["record_kind"] == "customer"]
    assert TouchpointResult.objects.filter(source_system=source).count() == len(items)
    assert set(TouchpointResult.objects.values_list("status", flat=True)) == {"applied"}
    assert Interaction.objects.filter(source_system=source).count() == len(visits)
    assert set(Interaction.objects.values_list("external_id", flat=True)) == set(visits)
    events = BusinessEvent.objects.filter(type="interaction.recorded", source_system=source)
    assert events.count() == len(visits)
    assert SourceRecord.objects.filter(source_system=source).count() == len(profiles)
    created = BusinessEvent.objects.filter(type="customer.created", source_system=source)
    assert created.count() == len(profiles)
    twice = Customer.objects.values("family_name").annotate(n=Count("id")).filter(n__gt=1)
    assert not twice.exists(), list(twice)


def test_a_few_hundred_results_posted_to_the_api_are_applied_by_the_worker(queue, workers, tmp_path):
    worker(workers, queue, tmp_path)
    web = web_source()
    make_customer()
    make_customer(given_name="Erin", family_name="Okafor", phones=[],
                  emails=[{"address": "erin@example.org", "kind": "personal"}])  # fmt: skip
    items = mixed_results(400)

    batch_ids = post_batches(User.objects.get(source_system=web), items, size=100)

    wait_until(lambda: pending() == 0, what="the worker to apply every result", timeout=120,
               process=workers[0])  # fmt: skip
    assert_applied_exactly_once(web, items)
    progress = api_as(User.objects.get(source_system=web)).get(
        f"/api/v1/touchpoints/web/batches/{batch_ids[-1]}"
    )
    assert progress.json()["applied"] == 100
    assert progress.json()["completed_at"] is not None


def test_a_worker_killed_mid_ingest_loses_and_doubles_nothing(queue, workers, tmp_path):
    """kill -9 while results are being applied; a new worker and the sweep (what
    beat runs) pick up what the dead one had claimed and what its lost messages
    asked for."""
    # Small claims, so that the kill lands between two of them, mid-ingest.
    first = worker(workers, queue, tmp_path, CRM_INGEST_BATCH_SIZE="50")
    web = web_source()
    make_customer()
    make_customer(given_name="Erin", family_name="Okafor", phones=[],
                  emails=[{"address": "erin@example.org", "kind": "personal"}])  # fmt: skip
    items = mixed_results(3000)
    post_batches(User.objects.get(source_system=web), items, size=1000)

    applied = wait_until(
        lambda: TouchpointResult.objects.filter(status="applied").count() or None,
        what="the first results to be applied", timeout=120, process=first,
    )  # fmt: skip
    first.popen.kill()  # SIGKILL: no warm shutdown, no ack, claims left behind
    first.popen.wait(timeout=10)
    left = pending()
    assert left > 0, f"all {applied} applied before the kill: nothing left to prove"

    second = worker(workers, queue, tmp_path)

    def settled() -> bool:
        services.touchpoint_results_sweep()  # what beat does every 30 s
        return pending() == 0

    wait_until(settled, what="the new worker to apply the rest", timeout=180, interval=1.0, process=second)
    assert_applied_exactly_once(web, items)


def _embedded_redis_pid() -> int | None:
    from config import embedded

    pid_file = embedded.local_dir() / "redis" / "redis.pid"
    return int(pid_file.read_text().strip()) if pid_file.exists() else None


@pytest.mark.skipif(bool(os.environ.get("REDIS_URL")), reason="restarts the embedded Redis only")
def test_redis_killed_mid_ingest_delays_results_and_loses_none(queue, workers, tmp_path):
    """kill -9 Redis (the broker: queued and unacknowledged messages are lost with
    it) while results are being applied, start it again: the results are in
    PostgreSQL, and the sweep asks for the runs whose messages were lost."""
    from config import embedded

    pid = _embedded_redis_pid()
    if pid is None:
        pytest.skip("no embedded Redis running")
    process = worker(workers, queue, tmp_path, CRM_INGEST_BATCH_SIZE="50")
    web = web_source()
    make_customer()
    make_customer(given_name="Erin", family_name="Okafor", phones=[],
                  emails=[{"address": "erin@example.org", "kind": "personal"}])  # fmt: skip
    items = mixed_results(3000, prefix="r")
    post_batches(User.objects.get(source_system=web), items, size=1000)
    wait_until(
        lambda: TouchpointResult.objects.filter(status="applied").exists(),
        what="the first results to be applied", timeout=120, process=process,
    )  # fmt: skip

    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _alive(pid), what="Redis to die")
    left = pending()
    embedded.redis_url()  # starts it again, on the same socket

    def settled() -> bool:
        services.touchpoint_results_sweep()  # what beat does every 30 s
        return pending() == 0

    wait_until(settled, what="the worker to apply the rest", timeout=180, interval=1.0, process=process)
    assert left > 0, "all applied before Redis died: nothing left to prove"
    assert_applied_exactly_once(web, items)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of the daemonizing shell still answers signal 0: check its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
