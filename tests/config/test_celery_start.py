"""A worker skips Django's full system checks (they load every view for nothing)
but still refuses to start with an event listener it cannot call."""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from config import celery as celery_config
from crm import listeners


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
