"""A worker skips Django's full system checks (they load every view for nothing)
but still refuses to start with an event listener it cannot call; it starts without
the code only pages use, keeps what it imported shared with its pool processes, and
replaces a pool process that outgrows its memory limit."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from config import celery as celery_config
from crm import listeners
from tests.integration.conftest import BIN, COMMITTED, PROJECT_ROOT, start_process, subprocess_env, wait_until


def test_a_worker_skips_the_full_checks_unless_told_otherwise() -> None:
    assert os.environ.get("CELERY_SKIP_CHECKS") == "1"


def test_a_worker_refuses_a_listener_it_cannot_import(settings: Any) -> None:
    settings.CRM_EVENT_LISTENERS = {"realtime": [], "deferred": ["policies.engine.no_such_listener"]}
    listeners.forget()
    try:
        with pytest.raises(ImproperlyConfigured, match="no_such_listener"):
            celery_config._check_event_listeners()
    finally:
        listeners.forget()


def test_a_worker_starts_with_the_projects_listeners() -> None:
    celery_config._check_event_listeners()  # raises if any is wrong


# --- What a worker loads, and what it keeps ---------------------------------------------

# The worker's start-up as Celery runs it (its loader sets Django up and imports the
# task modules; then worker_init, before the pool processes fork), in a fresh
# process, since Django is set up once per process.
WORKER_START = """
import gc, json, sys
from celery.signals import worker_init
from config.celery import app
app.loader.init_worker()
threshold_before = gc.get_threshold()
worker_init.send(sender=app.WorkController)
from django.contrib import admin
loaded = {name: name in sys.modules for name in MODULES}
registered = len(admin.site._registry)
frozen = gc.get_freeze_count()
threshold = gc.get_threshold()
from django.urls import reverse
print(json.dumps({"loaded": loaded, "registered_at_start": registered, "frozen": frozen,
                  "threshold": threshold, "threshold_before": threshold_before, "tasks": sorted(app.tasks),
                  "admin_url": reverse("admin:crm_product_changelist"),
                  "registered_after_urls": len(admin.site._registry)}))
"""
# A web process: Django set up as the ASGI application does it.
WEB_START = """
import json, sys
import django
django.setup()
from django.contrib import admin
print(json.dumps({"loaded": {name: name in sys.modules for name in MODULES},
                  "registered_at_start": len(admin.site._registry)}))
"""
# Browser-facing code no task runs.
BROWSER_ONLY = ["crm.admin", "policies.admin", "crm.admin_imports",
                "django.contrib.auth.forms", "rest_framework.views", "requests"]  # fmt: skip


def _run(script: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", f"MODULES = {BROWSER_ONLY!r}\n{script}"],
        cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_a_worker_starts_without_the_admin_pages_and_the_api_views() -> None:
    started = _run(WORKER_START)

    assert started["loaded"] == dict.fromkeys(BROWSER_ONLY, False)
    assert started["registered_at_start"] == 0
    # ... yet it has every task, and an admin URL still resolves if a task needs one.
    expected_tasks = {"crm.tasks.touchpoint_results_apply", "crm.tasks.business_events_dispatch"}
    assert expected_tasks <= set(started["tasks"])
    assert started["admin_url"] == "/admin/crm/product/"
    assert started["registered_after_urls"] > 0


def test_a_web_process_still_discovers_the_admin_when_django_starts() -> None:
    started = _run(WEB_START)

    assert started["loaded"]["crm.admin"] and started["loaded"]["policies.admin"]
    assert started["registered_at_start"] > 0


def test_the_worker_freezes_what_it_imported_before_the_pool_forks() -> None:
    # Frozen objects are never examined by a collection, so a pool process does not
    # copy the pages it shares with the parent just by collecting garbage.
    started = _run(WORKER_START)
    assert started["frozen"] > 10_000
    # ... and the pool processes it forks collect young garbage in larger passes.
    assert started["threshold"][0] == 20_000
    assert started["threshold_before"][0] < 20_000  # not the interpreter's own


def test_a_pool_process_is_replaced_by_default_only_past_200_mb() -> None:
    from django.conf import settings

    assert settings.CELERY_WORKER_MAX_MEMORY_PER_CHILD == 200_000
    assert settings.CELERY_WORKER_MAX_TASKS_PER_CHILD is None


def _pool_processes(pid: int) -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.update(int(child) for child in (task / "children").read_text().split())
        except OSError:
            pass
    return children


@pytest.mark.integration
@COMMITTED
@pytest.mark.parametrize(("limit_kib", "replaced"), [("1", True), ("", False)], ids=["1 KiB", "default"])
def test_a_pool_process_over_its_memory_limit_is_replaced_after_its_task(
    tmp_path: Path, limit_kib: str, replaced: bool
) -> None:
    from crm import tasks

    queue = f"memory-{secrets.token_hex(4)}"
    argv = [
        str(BIN / "celery"), "-A", "config", "worker", "--pool", "prefork", "--concurrency", "1",
        "--queues", queue, "--hostname", f"{queue}@%h", "--loglevel", "INFO",
        "--without-mingle", "--without-gossip", "--without-heartbeat",
    ]  # fmt: skip
    # 1 KiB: any pool process is over it once its first task is done; none is near the default.
    env = subprocess_env(CELERY_WORKER_MAX_MEMORY_PER_CHILD=limit_kib)
    worker = start_process("celery worker", argv, env=env, log_path=tmp_path / "worker.log")
    try:
        wait_until(lambda: " ready." in worker.log_text(), what="the Celery worker", process=worker)
        first = wait_until(lambda: _pool_processes(worker.popen.pid), what="the pool process")

        result = tasks.touchpoint_results_sweep.apply_async(queue=queue)

        wait_until(lambda: f"[{result.id}] succeeded" in worker.log_text(), what="the task", process=worker)
        if replaced:

            def others() -> set[int]:
                now = _pool_processes(worker.popen.pid)
                return now if now.isdisjoint(first) else set()

            assert len(wait_until(others, what="a new pool process", process=worker)) == 1
        else:
            time.sleep(1)  # as long as a replacement takes
            assert _pool_processes(worker.popen.pid) == first
    finally:
        worker.stop()
