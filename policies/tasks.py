"""Celery tasks of the policies app (ids in, one service call, idempotent)."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from policies import services, simulation


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


@shared_task(name="policies.tasks.policy_simulate", acks_late=True, ignore_result=True)
def policy_simulate(run_id: str) -> None:
    """Replay a policy over recent events (the supervisor's simulation). A run that
    already finished is not run again when the message is redelivered."""
    simulation.simulation_run(run_id)
