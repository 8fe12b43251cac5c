"""Real-browser tests: Playwright's sync API drives Debian's Chromium against
pytest-django's ``live_server``.

Nothing is downloaded: ``scripts/install-chromium.sh`` (``make browser``)
installs the system browser. Without it, every test here skips on a developer's
machine, saying why; in CI (``CI`` set to a true value) the run stops at
collection instead, so a missing browser can never pass as a green build.
Screenshots land in ``artifacts/screenshots/`` (git-ignored) for people to look at.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from config.env import env_bool

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

CHROMIUM = Path(os.environ.get("CRM_CHROMIUM", "/usr/bin/chromium"))
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
# the end of each one is followed by post_migrate, which restores the staff roles
# and the crm source system (crm.roles).
COMMITTED = pytest.mark.django_db(transaction=True)
MISSING_CHROMIUM = (
    f"{CHROMIUM} is missing: run `make browser` (scripts/install-chromium.sh, as root) "
    "to install Debian's chromium package."
)
NEEDS_CHROMIUM = pytest.mark.skipif(not CHROMIUM.exists(), reason=MISSING_CHROMIUM)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In CI a missing browser fails the run before any test starts; on a
    developer's machine the browser tests skip (NEEDS_CHROMIUM, reason shown by -ra)."""
    if CHROMIUM.exists() or not env_bool("CI", False):
        return
    if any(item.get_closest_marker("e2e") for item in items):
        pytest.exit(f"CI needs the real-browser tests, but {MISSING_CHROMIUM}", returncode=1)


@pytest.fixture(autouse=True)
def _allow_orm_beside_playwrights_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Playwright's sync API keeps an event loop on this thread, and Django refuses
    synchronous ORM calls while one runs. The tests' ORM calls are plain synchronous
    code on the test's thread, so telling Django so is safe. Only for these tests:
    set for the whole session, it would leak into subprocesses other tests start
    (``manage.py check --deploy`` rightly fails on it)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def open_page() -> Iterator[Callable[[], Page]]:
    """``open_page()`` starts Chromium and returns a fresh page (no cookies).

    Call it after the test has created its data: Playwright's sync API then keeps
    an event loop on this thread, and crm's services publish real-time messages
    through asgiref's async_to_sync, which refuses to run beside one. The browser
    closes with the test, which fails if the page raised a JavaScript error."""
    if not CHROMIUM.exists():
        pytest.skip(MISSING_CHROMIUM)
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
