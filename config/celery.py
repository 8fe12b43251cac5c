"""The Celery application: configuration comes from Django settings (CELERY_*)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# A worker starting up would run Django's system checks, which load the whole URL
# configuration: every view, the admin and the API schema generator, ~9 MB in each
# worker process that no task uses (a task that needs a URL loads it then). The
# checks run where they belong: `manage.py check` in CI and at deploy, and the
# test suite. The one check a worker needs, that every event listener it will call
# is importable, still runs when it starts (below). Set CELERY_SKIP_CHECKS= (empty)
# to run all of them in the worker.
os.environ.setdefault("CELERY_SKIP_CHECKS", "1")

app = Celery("crm")
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
