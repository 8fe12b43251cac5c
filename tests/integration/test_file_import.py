"""A real Celery worker imports a CSV file; killed mid-file, the next worker resumes it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crm import services
from crm.models import FileImport, ImportRejection, ImportStatus, TouchpointResult
from crm.services.imports import FileSpec
from tests.integration.conftest import COMMITTED, ManagedProcess, start_worker, wait_until
from tests.touchpoint_data import web_source

pytestmark = [pytest.mark.integration, COMMITTED]

STALE_SECONDS = "10"  # the least the setting allows: a killed worker's job is taken over after it
ROWS = 40_000
BAD_EVERY = 1_000  # one row in a thousand has a channel the mapping does not know


@pytest.fixture
def queue(settings: Any) -> str:
    name = f"import-{secrets.token_hex(6)}"
    settings.CRM_INGEST_QUEUE = name
    settings.CRM_IMPORT_STALE_SECONDS = int(STALE_SECONDS)
    return name


@pytest.fixture
def workers() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for process in started:
        process.stop()


def worker(started: list[ManagedProcess], queue: str, tmp_path: Path) -> ManagedProcess:
    process = start_worker(queue, tmp_path / f"worker-{len(started)}.log", CRM_INGEST_QUEUE=queue,
                           CRM_IMPORT_STALE_SECONDS=STALE_SECONDS)  # fmt: skip
    started.append(process)
    return process


def history_file(path: Path) -> Path:
    with path.open("w") as out:
        out.write("email,channel,direction,outcome,seconds\n")
        for n in range(ROWS):
            channel = "fax" if n % BAD_EVERY == 7 else "web"
            out.write(f"c{n}@example.com,{channel},inbound,browsed,{n % 600}\n")
    return path


def test_a_worker_killed_mid_file_leaves_a_job_the_next_one_finishes_counting_each_row_once(
    queue, workers, tmp_path
):
    web = web_source()
    first = worker(workers, queue, tmp_path)
    path = history_file(tmp_path / "history.csv")
    job = services.file_import_create(source=web, files=[FileSpec("interaction", "history.csv", str(path))])

    def some_rows_stored() -> int | None:
        rows = FileImport.objects.get(pk=job.pk).rows_read
        return rows if rows >= 2_000 else None

    wait_until(
        some_rows_stored, what="the first chunks to be stored", timeout=120, interval=0.02, process=first
    )
    first.popen.kill()  # SIGKILL: no warm shutdown, the message not acknowledged
    first.popen.wait(timeout=10)
    job.refresh_from_db()
    assert job.status == ImportStatus.RUNNING and job.rows_read < ROWS, "the file was read before the kill"

    second = worker(workers, queue, tmp_path)

    def done() -> bool:
        services.file_imports_sweep()  # what beat does every minute
        return FileImport.objects.get(pk=job.pk).status == ImportStatus.DONE

    wait_until(done, what="the new worker to finish the file", timeout=180, interval=1.0, process=second)
    job.refresh_from_db()
    bad = len([n for n in range(ROWS) if n % BAD_EVERY == 7])
    assert (job.rows_read, job.accepted, job.duplicates, job.refused) == (ROWS, ROWS - bad, 0, bad)
    assert TouchpointResult.objects.filter(source_system=web).count() == ROWS - bad
    assert ImportRejection.objects.filter(job=job).count() == bad
    assert f"file import {job.pk} done" in second.log_text()
