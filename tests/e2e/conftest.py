"""Real-browser tests: Playwright's sync API drives Debian's Chromium against
pytest-django's ``live_server``.

Nothing is downloaded: ``scripts/install-chromium.sh`` (``make browser``)
installs the system browser, and without it every test here skips, saying so.
Screenshots land in ``artifacts/screenshots/`` (git-ignored) for people to look at.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.db import connections

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
VIEWPORT: ViewportSize = {"width": 1440, "height": 900}

# live_server needs committed data, so these tests are transactional; the flush at
# the end of each one empties every table, including the rows data migrations made
# (staff role groups, the "crm" source system). serialized_rollback reloads them
# before each test, and pytest_runtest_teardown below reloads them after, so tests
# that run later in the session (or the next --reuse-db run) still find them.
COMMITTED = pytest.mark.django_db(transaction=True, serialized_rollback=True)
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is missing: run `make browser` (scripts/install-chromium.sh, as root) "
    "to install Debian's chromium package.",
)


@pytest.fixture(autouse=True)
def _allow_orm_beside_playwrights_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Playwright's sync API keeps an event loop on this thread, and Django refuses
    synchronous ORM calls while one runs. The tests' ORM calls are plain synchronous
    code on the test's thread, so telling Django so is safe. Only for these tests:
    set for the whole session, it would leak into subprocesses other tests start
    (``manage.py check --deploy`` rightly fails on it)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        # Even when a fixture's teardown failed: the flush has happened by now.
        marker = item.get_closest_marker("django_db")
        if marker is not None and marker.kwargs.get("serialized_rollback"):
            _reload_migration_data(item.config)


def _reload_migration_data(config: pytest.Config) -> None:
    from pytest_django.plugin import blocking_manager_key

    with config.stash[blocking_manager_key].unblock():
        for alias in connections:
            contents = getattr(connections[alias], "_test_serialized_contents", None)
            if contents:
                connections[alias].creation.deserialize_db_from_string(contents)


@pytest.fixture
def open_page() -> Iterator[Callable[[], Page]]:
    """``open_page()`` starts Chromium and returns a fresh page (no cookies).

    Call it after the test has created its data: Playwright's sync API then keeps
    an event loop on this thread, and crm's services publish real-time messages
    through asgiref's async_to_sync, which refuses to run beside one. The browser
    closes with the test, which fails if the page raised a JavaScript error."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run `make browser` to install Debian's chromium package.")
    from playwright.sync_api import sync_playwright

    started: list[tuple[Any, Browser]] = []
    errors: list[str] = []

    def start() -> Page:
        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        started.append((playwright, browser))
        context = browser.new_context(viewport=VIEWPORT, locale="en-US")
        context.set_default_timeout(10_000)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield start
    for playwright, browser in started:
        browser.close()
        playwright.stop()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """``screenshot(page, "name")`` saves artifacts/screenshots/name.png and returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str, **options: Any) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), **options)
        return path

    return take


@pytest.fixture
def log_in(live_server: Any) -> Callable[[Page, str, str], None]:
    """Sign in through the real log-in form, as a person would."""

    def sign_in(page: Page, username: str, password: str) -> None:
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.press("#id_password", "Enter")
        page.wait_for_load_state("domcontentloaded")

    return sign_in
