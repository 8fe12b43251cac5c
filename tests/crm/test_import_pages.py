"""The administrator's upload page, the job's progress partial and the rejected-rows report."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from crm import services
from crm.models import FieldMapping, FileImport, ImportStatus, SourceSystem, TouchpointResult, User
from tests.touchpoint_data import web_source

pytestmark = pytest.mark.django_db

UPLOAD = "/admin/crm/fileimport/add/"
HISTORY = (
    "email,channel,direction,outcome,seconds\n"
    "dave@example.com,web,inbound,browsed,42\n"
    "erin@example.org,fax,inbound,browsed,12\n"
    "frank@example.com,web,inbound,read,7\n"
)


@pytest.fixture(autouse=True)
def import_dir(settings, tmp_path: Path) -> Path:
    settings.CRM_IMPORT_DIR = tmp_path / "imports"
    return settings.CRM_IMPORT_DIR


@pytest.fixture
def web(db: None) -> SourceSystem:
    return web_source()


def as_user(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def csv_upload(name: str = "history.csv", text: str = HISTORY) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


def job_of(source: SourceSystem, path: Path) -> FileImport:
    spec = services.FileSpec("interaction", path.name, str(path))
    return services.file_import_create(source=source, files=[spec], enqueue=False)


def test_an_administrator_uploads_a_file_that_a_task_imports_and_follows_it(
    carol, web, import_dir, django_capture_on_commit_callbacks
):
    client = as_user(carol)
    page = client.get(UPLOAD)
    assert page.status_code == 200 and "Import CSV files" in page.content.decode()

    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        response = client.post(UPLOAD, {"source_system": web.pk, "kind_1": "interaction", "kind_2": "account",
                                        "kind_3": "interaction", "file_1": csv_upload()})  # fmt: skip
    job = FileImport.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/admin/crm/fileimport/{job.pk}/change/"
    assert len(enqueued) == 1  # the task, once the job is committed
    stored = Path(job.files.get().path)
    assert stored.is_relative_to(import_dir) and stored.read_text() == HISTORY
    assert job.created_by == carol

    waiting = client.get(f"/admin/crm/fileimport/{job.pk}/progress/").content.decode()
    assert 'hx-trigger="every 1s"' in waiting and "Waiting for a worker" in waiting

    services.file_import_run(job_id=job.pk, worker="test")  # what the task does
    partial = client.get(f"/admin/crm/fileimport/{job.pk}/progress/").content.decode()
    assert "hx-trigger" not in partial  # done: the page stops polling
    assert 'id="rows-read">3<' in partial and 'id="rows-accepted">2<' in partial
    assert f"/admin/crm/fileimport/{job.pk}/report.csv" in partial and "1 rejected row" in partial
    html = client.get(f"/admin/crm/fileimport/{job.pk}/change/").content.decode()
    assert 'id="import-progress"' in html and "htmx.min.js" in html

    report = client.get(f"/admin/crm/fileimport/{job.pk}/report.csv")
    assert report["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(report.getvalue().decode())))
    assert rows[0] == ["file", "line", "field", "reason"]
    assert rows[1][:3] == ["history.csv", "3", "channel"] and "fax" in rows[1][3]


def test_several_files_each_with_its_kind_are_one_import(carol, web):
    profiles = csv_upload("people.csv", "first,last,email\nDave,Miller,dave@example.com\n")
    data = {"source_system": web.pk, "kind_1": "customer", "file_1": profiles,
            "kind_2": "account", "kind_3": "interaction", "file_3": csv_upload()}  # fmt: skip
    as_user(carol).post(UPLOAD, data)
    job = FileImport.objects.get()
    assert list(job.files.values_list("name", "record_kind")) == [
        ("people.csv", "customer"), ("history.csv", "interaction")]  # fmt: skip


@pytest.mark.parametrize(
    ("post", "expected"),
    [
        ({}, "Choose at least one CSV file to import."),
        ({"file_1": SimpleUploadedFile("photo.png", b"\x89PNG\r\n")}, "photo.png is not a CSV file"),
        ({"file_1": SimpleUploadedFile("x.csv", b"\x89PNG\r\n\x00\x00")}, "not a CSV text file"),
        ({"source_system": 99_999, "file_1": "history"}, "That source system does not exist"),
        ({"file_1": "history", "kind_1": "account"}, "none of its columns"),
    ],
)
def test_the_upload_page_says_what_is_wrong(carol, web, import_dir, post, expected):
    data = {"source_system": web.pk, "kind_1": "interaction", "kind_2": "account", "kind_3": "interaction",
            **post}  # fmt: skip
    if data.get("file_1") == "history":
        data["file_1"] = csv_upload()
    response = as_user(carol).post(UPLOAD, data)
    assert response.status_code == 200
    assert expected in response.content.decode()
    assert not FileImport.objects.exists()
    assert not any(p.is_file() for p in Path(import_dir).rglob("*"))  # nothing left behind


def test_a_missing_required_column_is_named_with_its_mapping(carol, web):
    FieldMapping.objects.filter(source_system=web, source_field="seconds").update(required=True)
    text = "email,channel,direction\ndave@example.com,web,inbound\n"
    data = {"source_system": web.pk, "kind_1": "interaction", "kind_2": "account",
            "kind_3": "interaction", "file_1": csv_upload(text=text)}  # fmt: skip
    response = as_user(carol).post(UPLOAD, data)
    assert "“seconds” (mapped to interaction.duration_seconds, required)" in response.content.decode()


def test_agents_and_supervisors_cannot_reach_the_import_pages(alice, bob, carol, web, tmp_path):
    path = tmp_path / "h.csv"
    path.write_text(HISTORY)
    job = job_of(web, path)
    for user in (alice, bob):
        client = as_user(user)
        for url in (
            UPLOAD,
            f"/admin/crm/fileimport/{job.pk}/progress/",
            f"/admin/crm/fileimport/{job.pk}/report.csv",
            f"/admin/crm/sourcesystem/{web.pk}/try-mappings/",
        ):
            response = client.get(url)
            assert response.status_code in (302, 403), (user.username, url)
            assert response.status_code == 403 or "/admin/login/" in response["Location"]
        assert client.post(UPLOAD, {"source_system": web.pk, "file_1": csv_upload()}).status_code in (
            302,
            403,
        )
    assert FileImport.objects.count() == 1
    assert not TouchpointResult.objects.exists()


def test_the_import_list_shows_jobs_with_their_counts(carol, web, tmp_path):
    path = tmp_path / "h.csv"
    path.write_text(HISTORY)
    job = job_of(web, path)
    services.file_import_run(job_id=job.pk)
    page = as_user(carol).get("/admin/crm/fileimport/").content.decode()
    assert "h.csv" in page and "3 · 2 · 1" in page and ImportStatus.DONE.label in page


def test_the_uploaded_copies_are_deleted_once_the_import_is_over(carol, web, import_dir):
    data = {"source_system": web.pk, "kind_1": "interaction", "kind_2": "account", "kind_3": "interaction",
            "file_1": csv_upload()}  # fmt: skip
    as_user(carol).post(UPLOAD, data)
    job = FileImport.objects.get()
    stored = Path(job.files.get().path)
    assert stored.exists()
    services.file_import_run(job_id=job.pk)
    assert not stored.exists() and not stored.parent.exists()
    assert Path(import_dir).exists()


def test_the_task_run_twice_imports_once(web, tmp_path):
    from crm import tasks

    path = tmp_path / "h.csv"
    path.write_text(HISTORY)
    job = job_of(web, path)
    tasks.file_import_run(job.pk)
    tasks.file_import_run(job.pk)  # a redelivered message
    job.refresh_from_db()
    assert (job.status, job.rows_read, job.accepted) == (ImportStatus.DONE, 3, 2)
    assert TouchpointResult.objects.count() == 2
    assert path.exists()  # read where it lies: not an upload, never deleted


def test_the_polled_progress_partial_costs_a_few_queries(carol, web, tmp_path, django_assert_max_num_queries):
    path = tmp_path / "h.csv"
    path.write_text(HISTORY)
    job = job_of(web, path)
    client = as_user(carol)
    # Session, user, the role catalog (3, cached per process after the first request), job, files.
    with django_assert_max_num_queries(7):
        assert client.get(f"/admin/crm/fileimport/{job.pk}/progress/").status_code == 200


def test_a_large_upload_is_moved_into_the_import_folder(carol, web, settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 10  # every upload goes to a temporary file first
    data = {"source_system": web.pk, "kind_1": "interaction", "kind_2": "account", "kind_3": "interaction",
            "file_1": csv_upload()}  # fmt: skip
    assert as_user(carol).post(UPLOAD, data).status_code == 302
    assert Path(FileImport.objects.get().files.get().path).read_text() == HISTORY
