"""The Celery application: configuration comes from Django settings (CELERY_*)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.loaders.app import AppLoader
from celery.signals import task_postrun, task_prerun, worker_init

from config import heap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# A worker starting up would run Django's system checks, which load the whole URL
# configuration: every view, the admin and the API schema generator, ~9 MB in each
# worker process that no task uses (a task that needs a URL loads it then). The
# checks run where they belong: `manage.py check` in CI and at deploy, and the
# test suite. The one check a worker needs, that every event listener it will call
# is importable, still runs when it starts (below). Set CELERY_SKIP_CHECKS= (empty)
# to run all of them in the worker.
os.environ.setdefault("CELERY_SKIP_CHECKS", "1")


class WorkerLoader(AppLoader):
    """Celery's loader, which also prepares Django for a worker (or beat) process."""

    def init_worker(self) -> None:
        # Runs before Django is set up in a worker or beat (set up here, by Celery's
        # Django fixup), never in a web process, which only sends tasks.
        if not self.worker_initialized:
            _without_admin_discovery()
            _keep_database_connections()
        super().init_worker()


def _without_admin_discovery() -> None:
    """Keep the admin's models, not its pages: the admin's app config imports every
    app's admin module when Django starts (their forms and change views, the file
    import upload views, and with them DRF's views), ~8 MB per process that no task
    uses. The simple config skips that; config/urls.py discovers them if this process
    ever loads the URLs."""
    from django.apps import apps  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415

    if apps.ready:  # a worker started inside a process where Django already runs
        return
    settings.INSTALLED_APPS = [
        "django.contrib.admin.apps.SimpleAdminConfig" if name == "django.contrib.admin" else name
        for name in settings.INSTALLED_APPS
    ]


def _keep_database_connections() -> None:
    """A worker's connections outlive a task (CELERY_WORKER_DB_CONN_MAX_AGE): Celery
    closes them only every CELERY_DB_REUSE_MAX tasks, and ``_drop_broken_connections``
    drops one that broke or aged, before and after each task. With a psycopg pool
    (DATABASE_POOL_MAX_SIZE) the pool keeps them instead: persistent connections and
    a pool exclude each other. They are named, so that an operator tells the workers'
    backends from the web's in pg_stat_activity."""
    from django.conf import settings  # noqa: PLC0415

    database = settings.DATABASES["default"]
    options = database.setdefault("OPTIONS", {})
    options.setdefault("application_name", "crm-celery")
    if not options.get("pool"):
        database["CONN_MAX_AGE"] = database.get("CONN_MAX_AGE") or settings.CELERY_WORKER_DB_CONN_MAX_AGE
        database["CONN_HEALTH_CHECKS"] = True


@task_prerun.connect
@task_postrun.connect
def _drop_broken_connections(sender: Any = None, **_kwargs: Any) -> None:
    """What a web request does at its start and end (Django's close_old_connections),
    done around a task: a connection that failed or outlived its age is closed, and
    the next statement opens a new one. A task run eagerly, inside its caller, leaves
    the caller's connection alone."""
    request = getattr(sender, "request", None)
    if getattr(request, "is_eager", False):
        return
    from django.db import close_old_connections  # noqa: PLC0415

    close_old_connections()


app = Celery("crm", loader=f"{__name__}:WorkerLoader")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _check_event_listeners(**_kwargs: Any) -> None:
    """A worker refuses to start with an event listener it cannot call."""
    from django.core.exceptions import ImproperlyConfigured  # noqa: PLC0415  (after Django is set up)

    from crm.listeners import check_listeners  # noqa: PLC0415

    errors = check_listeners()
    if errors:
        raise ImproperlyConfigured("; ".join(str(error.msg) for error in errors))


@worker_init.connect
def _freeze_before_fork(**_kwargs: Any) -> None:
    """Move every object the worker has made so far (the imported code, the settings,
    the app) out of the garbage collector's reach before the pool processes fork.
    A collection writes into each object it examines; in a pool process that copies
    the page holding it, and the imports the parent made stop being shared. Frozen,
    they stay shared for the pool processes' lifetime (the objects live as long as
    the process anyway). The pool processes inherit the collector's thresholds
    (config.heap)."""
    heap.settle()
