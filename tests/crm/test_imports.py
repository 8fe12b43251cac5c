"""Legacy file imports: CSV files streamed into the touchpoint inbox with the source's mappings."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from crm import services
from crm.models import (
    FieldMapping,
    FileImport,
    ImportRejection,
    ImportStatus,
    SourceSystem,
    TouchpointBatch,
    TouchpointResult,
)
from crm.services import imports
from crm.services.imports import FileSpec
from tests.touchpoint_data import web_source

pytestmark = pytest.mark.django_db

HISTORY_HEADER = "email,channel,direction,outcome,seconds"


@pytest.fixture
def web(db: None) -> SourceSystem:
    return web_source()


def write(path: Path, text: str, *, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def run_import(source: SourceSystem, *files: tuple[str, Path]) -> FileImport:
    job = services.file_import_create(
        source=source, files=[FileSpec(kind, path.name, str(path)) for kind, path in files], enqueue=False
    )
    done = services.file_import_run(job_id=job.pk, worker="test")
    assert done is not None
    return done


def rejections(job: FileImport) -> list[tuple[int, str, str]]:
    return list(ImportRejection.objects.filter(job=job).order_by("line", "field").values_list(
        "line", "field", "reason"))  # fmt: skip


@pytest.fixture
def history(tmp_path: Path) -> Path:
    return write(
        tmp_path / "history.csv",
        f"{HISTORY_HEADER}\n"
        "dave@example.com,web,Inbound,browsed,42\n"  # line 2
        "erin@example.org,fax,Inbound,browsed,abc\n"  # line 3: two bad values
        "dave@example.com,mail,Outbound,sent\n"  # line 4: a value short
        "\n"  # line 5: blank, skipped
        '"frank@example.com",web,inbound,"read, then left",7\n',  # line 6
    )


def test_good_rows_are_stored_and_each_bad_one_is_reported_with_line_field_and_reason(web, history):
    job = run_import(web, ("interaction", history))

    assert job.status == ImportStatus.DONE
    assert (job.rows_read, job.accepted, job.duplicates, job.refused) == (4, 2, 0, 2)
    assert job.bytes_read == job.bytes_total == history.stat().st_size
    stored = TouchpointResult.objects.filter(source_system=web).order_by("id")
    assert [r.payload["email"] for r in stored] == ["dave@example.com", "frank@example.com"]
    assert stored[1].payload["outcome"] == "read, then left"
    assert {r.external_id.rsplit(":", 1)[0] for r in stored} == {"history.csv:2", "history.csv:6"}
    report = rejections(job)
    assert [(line, column) for line, column, _ in report] == [(3, "channel"), (3, "seconds"), (4, "row")]
    assert "not one of the mapped values" in report[0][2]
    assert "not a whole number" in report[1][2]
    assert "4 values where the header has 5 columns" in report[2][2]
    batch = TouchpointBatch.objects.get()
    assert (batch.origin, batch.file_name) == ("file", "history.csv")


def test_importing_the_same_file_again_stores_nothing_new(web, history):
    first = run_import(web, ("interaction", history))
    again = run_import(web, ("interaction", history))

    assert (again.accepted, again.duplicates, again.refused) == (0, 2, 2)
    assert TouchpointResult.objects.filter(source_system=web).count() == first.accepted == 2


def test_another_file_under_the_same_name_is_not_taken_for_the_first(web, tmp_path):
    run_import(
        web, ("interaction", write(tmp_path / "h.csv", f"{HISTORY_HEADER}\na@example.com,web,inbound,x,1\n"))
    )
    other = tmp_path / "other"
    other.mkdir()
    job = run_import(
        web, ("interaction", write(other / "h.csv", f"{HISTORY_HEADER}\nb@example.com,web,inbound,x,1\n"))
    )
    assert job.accepted == 1


def test_the_column_mapped_to_the_contact_id_is_the_rows_external_id(web, tmp_path):
    FieldMapping.objects.create(source_system=web, record_kind="interaction", source_field="call_id",
                                target="interaction.external_id", position=20)  # fmt: skip
    FieldMapping.objects.create(
        source_system=web, record_kind="interaction", source_field="at", target="interaction.occurred_at",
        transform="datetime", position=21,
    )  # fmt: skip
    web.time_zone = "America/Chicago"
    web.save()
    path = write(tmp_path / "calls.csv", "call_id,at,email,channel,direction\n"
                                         "C-1,2026-03-01T10:00:00Z,a@example.com,web,inbound\n"
                                         "C-2,2026-03-01 09:00,b@example.com,web,inbound\n")  # fmt: skip
    job = run_import(web, ("interaction", path))

    results = {r.external_id: r for r in TouchpointResult.objects.filter(source_system=web)}
    assert set(results) == {"C-1", "C-2"}  # the naive time is read on the source's clock
    times = {k: r.occurred_at.isoformat() for k, r in results.items() if r.occurred_at}
    assert times == {"C-1": "2026-03-01T10:00:00+00:00", "C-2": "2026-03-01T15:00:00+00:00"}
    assert rejections(job) == []


def test_naive_times_order_rows_in_the_sources_zone(web):
    zone = imports.zoneinfo.ZoneInfo("America/Chicago")
    moment = imports._moment("2026-03-01 09:00", zone)
    assert moment is not None and moment.isoformat() == "2026-03-01T15:00:00+00:00"
    assert imports._moment("not a time", zone) is None


def test_a_bom_and_semicolons_are_read_as_excel_writes_them(web, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefffirst;last;email\nJosé;Núñez;jose@example.com\n".encode())
    job = run_import(web, ("customer", path))
    assert job.accepted == 1
    assert TouchpointResult.objects.get().payload == {
        "first": "José",
        "last": "Núñez",
        "email": "jose@example.com",
    }


def test_a_header_without_a_required_mapped_column_is_refused_naming_both(web, tmp_path):
    FieldMapping.objects.filter(source_system=web, record_kind="interaction", source_field="channel").update(
        required=True
    )
    path = write(tmp_path / "h.csv", "email,direction\na@example.com,inbound\n")
    with pytest.raises(ValidationError) as refused:
        services.file_import_create(source=web, files=[FileSpec("interaction", "h.csv", str(path))])
    message = " ".join(refused.value.messages)
    assert "“channel” (mapped to interaction.channel, required)" in message
    assert "The header has: email, direction" in message
    assert not FileImport.objects.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a CSV text file"),
        ("email,channel\nRenée,web\n".encode("latin-1"), "not UTF-8"),
        (b"", "is empty"),
        (b"colour,size\nblue,9\n", "none of its columns (colour, size) is mapped"),
        (b"email,channel,email\na,b,c\n", "the header names email more than once"),
    ],
)
def test_a_file_that_is_not_a_mapped_csv_is_refused_saying_why(web, tmp_path, content, expected):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ValidationError, match=re.escape(expected)):
        services.file_import_create(source=web, files=[FileSpec("interaction", "bad.csv", str(path))])


def test_a_kind_without_mappings_or_an_inactive_source_is_refused(web, tmp_path):
    path = write(tmp_path / "h.csv", f"{HISTORY_HEADER}\n")
    ivr = services.source_system_create(code="ivr9", name="IVR nine", kind="ivr")
    with pytest.raises(ValidationError, match="IVR nine has no field mappings for Contact"):
        services.file_import_create(source=ivr, files=[FileSpec("interaction", "h.csv", str(path))])
    web.active = False
    web.save()
    with pytest.raises(ValidationError, match="deactivated"):
        services.file_import_create(source=web, files=[FileSpec("interaction", "h.csv", str(path))])


def test_several_files_are_read_profiles_first_whatever_order_they_come_in(web, tmp_path, history):
    profiles = write(tmp_path / "customers.csv", "first,last,email\nDave,Miller,dave@example.com\n")
    job = services.file_import_create(
        source=web, files=[FileSpec("interaction", "history.csv", str(history)),
                           FileSpec("customer", "customers.csv", str(profiles))], enqueue=False,
    )  # fmt: skip
    assert list(job.files.values_list("name", "record_kind")) == [
        ("customers.csv", "customer"), ("history.csv", "interaction")]  # fmt: skip
    done = services.file_import_run(job_id=job.pk)
    assert done is not None and (done.accepted, done.refused) == (3, 2)
    assert done.bytes_total == profiles.stat().st_size + history.stat().st_size
    assert list(TouchpointResult.objects.order_by("id").values_list("record_kind", flat=True)) == [
        "customer", "interaction", "interaction"]  # fmt: skip


def big_file(path: Path, rows: int) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "channel", "direction", "outcome", "seconds"])
        for n in range(rows):
            writer.writerow(
                [f"c{n}@example.com", "web", "inbound", "browsed" if n % 97 else "", str(n % 600)]
            )
    return path


def test_a_large_file_is_read_in_chunks_of_a_thousand_rows(web, tmp_path, monkeypatch):
    path = big_file(tmp_path / "big.csv", 50_000)
    calls: list[tuple[int, int]] = []
    real = imports.touchpoint_batch_receive
    job = services.file_import_create(source=web, files=[FileSpec("interaction", "big.csv", str(path))],
                                      enqueue=False)  # fmt: skip

    def spy(**kwargs: Any) -> TouchpointBatch:
        # How far the file was read when the chunk went out: never more than
        # the chunk plus the text buffer, so a big file is never in memory.
        calls.append((len(kwargs["items"]), FileImport.objects.get(pk=job.pk).bytes_read))
        return real(**kwargs)

    monkeypatch.setattr(imports, "touchpoint_batch_receive", spy)
    seen: list[int] = []
    done = services.file_import_run(job_id=job.pk, on_progress=lambda p: seen.append(p.rows_read))

    assert done is not None and done.accepted == 50_000
    assert len(calls) == 50 and max(size for size, _ in calls) == 1000
    assert [read for _, read in calls] == sorted(read for _, read in calls)
    assert 0 < calls[1][1] < path.stat().st_size // 10
    assert seen[:3] == [1000, 2000, 3000] and seen[-1] == 50_000
    assert TouchpointResult.objects.filter(source_system=web).count() == 50_000


def test_a_job_whose_worker_died_resumes_after_its_last_stored_chunk(web, tmp_path, monkeypatch):
    path = big_file(tmp_path / "big.csv", 2_500)
    job = services.file_import_create(source=web, files=[FileSpec("interaction", "big.csv", str(path))],
                                      enqueue=False)  # fmt: skip

    def die_after_the_first_chunk(progress: imports.Progress) -> None:
        raise KeyboardInterrupt  # the worker killed between two chunks

    with pytest.raises(KeyboardInterrupt):
        services.file_import_run(job_id=job.pk, on_progress=die_after_the_first_chunk)
    job.refresh_from_db()
    assert (job.status, job.rows_read, job.accepted) == (ImportStatus.RUNNING, 1000, 1000)

    resumed = services.file_import_run(job_id=job.pk)
    assert resumed is not None and resumed.status == ImportStatus.DONE
    assert (resumed.rows_read, resumed.accepted, resumed.duplicates) == (2_500, 2_500, 0)
    assert TouchpointResult.objects.count() == 2_500


def test_a_redelivered_task_leaves_a_job_that_a_live_worker_holds(web, history):
    job = services.file_import_create(source=web, files=[FileSpec("interaction", "h.csv", str(history))],
                                      enqueue=False)  # fmt: skip
    assert imports.file_import_claim(job_id=job.pk, token="first")
    assert services.file_import_run(job_id=job.pk) is None
    assert not TouchpointResult.objects.exists()


def test_a_file_gone_from_disk_fails_the_job_saying_so(web, history):
    job = services.file_import_create(source=web, files=[FileSpec("interaction", "h.csv", str(history))],
                                      enqueue=False)  # fmt: skip
    history.unlink()
    done = services.file_import_run(job_id=job.pk)
    assert done is not None and done.status == ImportStatus.FAILED
    assert "is gone from" in done.error and "upload it again" in done.error


def test_creating_a_job_enqueues_its_task_on_commit(web, history, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.file_import_create(source=web, files=[FileSpec("interaction", "h.csv", str(history))])
    assert len(callbacks) == 1


def test_the_sweep_takes_up_jobs_left_waiting(web, history, settings):
    job = services.file_import_create(source=web, files=[FileSpec("interaction", "h.csv", str(history))],
                                      enqueue=False)  # fmt: skip
    assert services.file_imports_sweep() == 0  # just created: its message is on its way
    FileImport.objects.filter(pk=job.pk).update(created_at=job.created_at - imports.dt.timedelta(hours=1))
    assert services.file_imports_sweep() == 1


def test_the_report_lists_file_line_field_and_reason(web, history, tmp_path):
    job = run_import(web, ("interaction", history))
    out = tmp_path / "report.csv"
    assert services.file_import_report_write(job=job, path=out) == 3
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["file", "line", "field", "reason"]
    assert rows[1][:3] == ["history.csv", "3", "channel"]


# --- The command --------------------------------------------------------------------------------


def test_the_command_imports_prints_a_summary_and_writes_the_report_beside_the_file(web, history):
    out, err = io.StringIO(), io.StringIO()
    call_command("import_touchpoints", "--source", "web", "--kind", "interaction", str(history),
                 stdout=out, stderr=err)  # fmt: skip
    text = out.getvalue()
    assert "4 rows read: 2 stored, 0 already there, 2 refused" in text
    report = history.with_name("history.rejected.csv")
    assert f"Rejected rows: {report}" in text
    assert report.read_text().splitlines()[1].startswith("history.csv,3,channel,")
    assert "rows" in err.getvalue()  # the progress bar


def test_the_command_takes_a_kind_per_file_and_a_report_path(web, history, tmp_path):
    profiles = write(tmp_path / "c.csv", "first,last,email\nDave,Miller,dave@example.com\n")
    report = tmp_path / "out" / "r.csv"
    report.parent.mkdir()
    out = io.StringIO()
    call_command(
        "import_touchpoints", "--source", "web", "--file", f"interaction={history}",
        "--file", f"customer={profiles}", "--report", str(report), "--no-progress", stdout=out,
    )  # fmt: skip
    assert "5 rows read: 3 stored" in out.getvalue()
    assert "c.csv (customer): 1 read, 1 stored, 0 already there, 0 refused" in out.getvalue()
    assert report.exists()


def test_the_command_names_an_unknown_source_and_kind(web, history):
    with pytest.raises(CommandError, match=r"No source system “nope”\. Known: .*web"):
        call_command("import_touchpoints", "--source", "nope", "--kind", "interaction", str(history))
    with pytest.raises(CommandError, match="“fax” is not a record kind"):
        call_command("import_touchpoints", "--source", "web", "--kind", "fax", str(history))
    with pytest.raises(CommandError, match="a record kind for"):
        call_command("import_touchpoints", "--source", "web", str(history))


def test_bad_encoding_deep_in_a_file_stops_the_job_naming_the_line_and_keeps_the_rows_before(web, tmp_path):
    path = big_file(tmp_path / "big.csv", 3_000)
    with path.open("ab") as out:
        out.write("zoë@example.com,web,inbound,browsed,1\n".encode("latin-1"))
    job = services.file_import_create(source=web, files=[FileSpec("interaction", "big.csv", str(path))],
                                      enqueue=False)  # fmt: skip
    done = services.file_import_run(job_id=job.pk)
    assert done is not None and done.status == ImportStatus.FAILED
    assert "is not UTF-8" in done.error and "the rows before it are stored" in done.error
    assert done.accepted >= 2_000  # the chunks before the bad bytes
    assert TouchpointResult.objects.count() == done.accepted


def test_the_command_says_why_a_job_failed(web, tmp_path):
    path = tmp_path / "h.csv"
    path.write_bytes(b"email,channel\n" + "Ren\u00e9e@example.com,web\n".encode("latin-1") * 2)
    with pytest.raises(CommandError, match="not UTF-8"):
        call_command(
            "import_touchpoints", "--source", "web", "--kind", "interaction", str(path), "--no-progress"
        )


def test_apostrophes_in_names_are_not_taken_for_quotes(web, tmp_path):
    path = write(
        tmp_path / "people.csv", "first,last,email\n'Seamus',O'Brien,s@example.com\nNiamh,O'Neill,n@x.org\n"
    )
    job = run_import(web, ("customer", path))
    assert job.accepted == 2
    assert TouchpointResult.objects.order_by("id").first().payload["first"] == "'Seamus'"  # type: ignore[union-attr]


def test_a_row_is_reported_at_the_line_it_starts_on_after_values_spanning_lines(web, tmp_path):
    path = write(tmp_path / "notes.csv", f'{HISTORY_HEADER}\na@example.com,web,inbound,"two\nlines",1\n'
                                         "b@example.com,fax,inbound,x,1\n")  # fmt: skip
    job = run_import(web, ("interaction", path))
    assert job.accepted == 1
    assert rejections(job)[0][:2] == (4, "channel")


def test_the_query_log_kept_with_debug_on_holds_one_chunk_at_most(web, tmp_path):
    """With DEBUG on Django logs every query, each chunk's INSERT with its 1,000
    rows; a big file must not pile them up in the worker's memory."""
    from django.db import connection

    path = big_file(tmp_path / "big.csv", 6_000)
    job = services.file_import_create(source=web, files=[FileSpec("interaction", "big.csv", str(path))],
                                      enqueue=False)  # fmt: skip
    connection.force_debug_cursor = True
    try:
        connection.queries_log.clear()
        services.file_import_run(job_id=job.pk)
        logged = len(connection.queries)
    finally:
        connection.force_debug_cursor = False
    assert logged <= 20, logged  # six chunks of about ten queries each, if nothing forgot them
