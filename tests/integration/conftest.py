"""Real processes for the integration tests: a Celery worker and a uvicorn server.

Both run against the pytest test database and the same Redis as the test
process, so a row the test commits is visible to them and a message they send
reaches the test (and the other way round). That needs committed data: the
tests use ``django_db(transaction=True)``; the flush that ends each of them is
followed by post_migrate, which restores the staff roles and the crm source
system (crm.roles).

Every process is stopped in a fixture finaliser (terminate, wait, then kill),
whatever the test did.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMMITTED = pytest.mark.django_db(transaction=True)

T = TypeVar("T")


# --- Polling ------------------------------------------------------------------------


def wait_until(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float = 30.0,
    interval: float = 0.05,
    process: ManagedProcess | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` s.

    With ``process``, stop early (and show its log) if the process dies, so a
    crash reads as a crash rather than as a 30-second timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if process is not None and process.popen.poll() is not None:
            pytest.fail(f"{process.name} exited ({process.popen.returncode}) while waiting for {what}:\n"
                        f"{process.log_tail()}")  # fmt: skip
        if time.monotonic() > deadline:
            detail = f"\n{process.log_tail()}" if process is not None else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


# --- Subprocesses -------------------------------------------------------------------


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Ask politely (SIGTERM: Celery's warm shutdown, uvicorn's graceful
        exit), then kill if it does not leave in time."""
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=timeout)


def start_process(name: str, argv: list[str], *, env: dict[str, str], log_path: Path) -> ManagedProcess:
    with open(log_path, "wb") as log:
        # The child keeps its own copy of the file descriptor.
        popen = subprocess.Popen(
            argv, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return ManagedProcess(name=name, popen=popen, log_path=log_path)


def url_of_test_database() -> str:
    """A DATABASE_URL for the test database (after pytest-django created it).

    The embedded PostgreSQL listens on a Unix socket whose directory arrives as
    ``OPTIONS["host"]`` (from ``?host=`` in its URL); connection options such as
    ``sslmode`` travel the same way, so every plain option goes back into the query."""
    db: dict[str, Any] = connection.settings_dict
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else f"{user}@" if user else ""
    host = db.get("HOST") or ""
    port = str(db.get("PORT") or "")
    query = {k: str(v) for k, v in (db.get("OPTIONS") or {}).items() if isinstance(v, str | int)}
    netloc = ""
    if host.startswith("/"):
        query["host"] = host
        if port:
            query["port"] = port
    elif host:
        netloc = f"{host}:{port}" if port else host
    url = f"postgresql://{auth}{netloc}/{quote(db['NAME'], safe='')}"
    return f"{url}?{urlencode(query)}" if query else url


def subprocess_env(**overrides: str) -> dict[str, str]:
    """The test process's environment, pointed at the test database and Redis."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=url_of_test_database(),
        REDIS_URL=settings.REDIS_URL,
        SECRET_KEY=settings.SECRET_KEY,  # session hashes must match the test process
        CELERY_TASK_ALWAYS_EAGER="false",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- A real Celery worker -----------------------------------------------------------------


@dataclass
class Worker:
    queue: str
    process: ManagedProcess

    def succeeded(self, task_id: str) -> int:
        """How many times the worker logged this task id as succeeded."""
        return self.process.log_text().count(f"[{task_id}] succeeded")


@pytest.fixture(scope="module")
def celery_worker(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One Celery worker (solo pool) on a queue no other worker consumes, so it
    never takes a demo worker's tasks and no demo worker takes the test's."""
    from config.celery import app

    # Eager mode would run tasks in this process and prove nothing about a worker.
    assert not app.conf.task_always_eager, "unset CELERY_TASK_ALWAYS_EAGER for the integration tests"
    queue = f"integration-{secrets.token_hex(6)}"
    process = start_worker(queue, tmp_path_factory.mktemp("celery") / "worker.log")
    try:
        yield Worker(queue=queue, process=process)
    finally:
        process.stop()


def start_worker(queue: str, log_path: Path, **env: str) -> ManagedProcess:
    """A Celery worker (solo pool) consuming only ``queue``, ready when this returns;
    ``env`` adds settings for it (e.g. a short lease for a test that kills it)."""
    argv = [
        str(BIN / "celery"), "-A", "config", "worker",
        "--pool", "solo", "--queues", queue, "--hostname", f"{queue}-{secrets.token_hex(3)}@%h",
        "--loglevel", "INFO",
        # Nothing to synchronise with; without these the worker is ready sooner.
        "--without-mingle", "--without-gossip", "--without-heartbeat",
    ]  # fmt: skip
    process = start_process("celery worker", argv, env=subprocess_env(**env), log_path=log_path)
    try:
        wait_until(lambda: " ready." in process.log_text(), what="the Celery worker", process=process)
    except BaseException:
        process.stop()
        raise
    return process


# --- A real uvicorn -------------------------------------------------------------------------


@dataclass
class Server:
    port: int
    process: ManagedProcess

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def uvicorn_server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The project's ASGI application served by uvicorn, configured as in
    production except for plain HTTP on the loopback interface."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    env = subprocess_env(
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
    )
    argv = [
        str(BIN / "uvicorn"), "config.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--lifespan", "off",
        # A refused socket's consumer can linger ~5 s in a Redis read (see
        # run() in test_realtime.py); do not let it hold up the shutdown.
        "--timeout-graceful-shutdown", "1",
    ]  # fmt: skip
    process = start_process("uvicorn", argv, env=env, log_path=log_path)
    try:
        wait_until(lambda: _accepts_connections(port), what="uvicorn to listen", process=process)
        yield Server(port=port, process=process)
    finally:
        process.stop()


def signed_in_page(
    browser: Any, server: Server, username: str, errors: list[str], *, landing: str = "/"
) -> Any:
    """A new browser context at 1366x768 signed in through the real log-in form of
    ``server`` (staff land on ``/``, customers on their own page); the page's
    JavaScript errors are appended to ``errors``."""
    from tests.conftest import PASSWORD

    page = browser.new_context(viewport={"width": 1366, "height": 768}, locale="en-US").new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.origin}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.press("#id_password", "Enter")
    page.wait_for_url(f"{server.origin}{landing}")
    return page


@dataclass
class BrowserSession:
    """The Chromium of one ``chromium()`` block; ``errors`` gathers the JavaScript
    errors of every page it opened."""

    browser: Any
    errors: list[str]

    def sign_in(self, server: Server, username: str, *, landing: str = "/") -> Any:
        """A new page signed in as ``username`` (see ``signed_in_page``)."""
        return signed_in_page(self.browser, server, username, self.errors, landing=landing)


@contextmanager
def chromium() -> Iterator[BrowserSession]:
    """A real Chromium for the block, which then fails on any JavaScript error its
    pages raised. Open it once the test's data exists: Playwright's sync API keeps
    an event loop on this thread while the block runs, and crm's services publish
    through asgiref's async_to_sync, which refuses to run beside one."""
    from playwright.sync_api import sync_playwright

    from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    session = BrowserSession(browser=None, errors=[])
    with sync_playwright() as playwright:
        session.browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield session
        finally:
            session.browser.close()
    assert not session.errors, f"JavaScript errors on the page: {session.errors}"


def mortgage_policy(actor: Any, channel: str, *, talking_points: str, self_service_text: str) -> Any:
    """An active mortgage offer on ``channel`` and an active policy presenting it
    to whoever reads a mortgage page (see ``post_mortgage_page_view``)."""
    from policies import engine
    from policies import services as policy_services

    policy_services.offer_save(
        code="home-mortgage", name="A mortgage for your new home", channels=[channel], status="active",
        talking_points=talking_points, self_service_text=self_service_text,
    )  # fmt: skip
    policy = policy_services.policy_save(
        actor=actor, name=f"Mortgage pages read: the mortgage on {channel}", status="active",
        trigger_types=["web.page_view"], condition='event.page_category == "mortgage"',
        actions=[{"action": "present_offer", "settings": {"offer": "home-mortgage", "channels": [channel]}}],
    )  # fmt: skip
    engine.index_invalidate()
    return policy


def post_mortgage_page_view(server: Server, token: str, customer_id: int) -> None:
    """An integration (``token``) tells the real server that the customer read a
    mortgage page: the event the offer tests' policies react to."""

    body = {"type": "web.page_view", "customer": customer_id, "idempotency_key": f"page-{customer_id}",
            "occurred_at": timezone.now().isoformat(),
            "payload": {"url": "/mortgages/calculator", "page_category": "mortgage"}}  # fmt: skip
    request = urllib.request.Request(  # noqa: S310  (http on loopback: the test's own server)
        f"{server.origin}/api/v1/events", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 201
