"""Celery tasks of the policies app (ids in, one service call, idempotent)."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from policies import services


@shared_task(
    name="policies.tasks.offers_expire",
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=5,
)
def offers_expire() -> int:
    """Expire unanswered offers past their time (beat, every few minutes). Running
    twice expires nothing twice: only rows still presented are taken."""
    return services.offers_expire()
