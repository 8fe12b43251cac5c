"""An administrator imports a CSV file in a real browser and watches its progress bar reach done."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from crm import services
from crm.models import FileImport, SourceSystem, User
from tests.conftest import PASSWORD
from tests.e2e.conftest import COMMITTED, NEEDS_CHROMIUM
from tests.touchpoint_data import web_source

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.e2e, COMMITTED, NEEDS_CHROMIUM]


@pytest.fixture
def admin_user() -> User:
    return services.staff_user_create(
        username="sam", password=PASSWORD, role="administrator", first_name="Sam"
    )


@pytest.fixture
def web() -> SourceSystem:
    return web_source()


@pytest.fixture(autouse=True)
def import_dir(settings: Any, tmp_path: Path) -> Path:
    settings.CRM_IMPORT_DIR = tmp_path / "imports"
    return settings.CRM_IMPORT_DIR


@pytest.mark.usefixtures("admin_user")
def test_an_administrator_uploads_a_file_and_the_bar_reaches_done(
    web: SourceSystem, open_page: Callable[[], Page], live_server: Any, screenshot: Callable[..., Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    history = tmp_path / "visits.csv"
    lines = ["email,channel,direction,outcome,seconds"]
    lines += [f"c{n}@example.com,web,inbound,browsed,{n}" for n in range(2_500)]
    lines[1_234] = "c1233@example.com,fax,inbound,browsed,1"  # one row the mapping refuses
    history.write_text("\n".join(lines) + "\n")

    page = open_page()
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "sam")
    page.fill("#id_password", PASSWORD)
    page.press("#id_password", "Enter")
    page.goto(f"{live_server.url}/admin/crm/fileimport/add/")
    page.select_option("#id_source_system", label=web.name)
    page.select_option("#id_kind_1", "interaction")
    page.set_input_files("#id_file_1", str(history))
    page.click("input[type=submit]")
    page.wait_for_url("**/change/")
    assert page.locator("#import-progress").get_attribute("data-status") == "queued"

    # What the Celery worker does with the job (no worker runs beside the live server).
    job = FileImport.objects.get()
    services.file_import_run(job_id=job.pk, worker="e2e")

    # The page polls its progress partial every second and stops once it is done.
    page.wait_for_selector("#import-progress[data-status=done]", timeout=10_000)
    assert page.locator("#rows-read").inner_text() == "2,500"
    assert page.locator("#rows-accepted").inner_text() == "2,499"
    assert page.locator(".import-bar").get_attribute("aria-valuenow") == "100"
    screenshot(page, "file-import-done", full_page=True)

    with page.expect_download() as download:
        page.click("text=Download the 1 rejected row")
    report = Path(download.value.path()).read_text().splitlines()
    assert report[0] == "file,line,field,reason"
    assert report[1].startswith("visits.csv,1235,channel,")
