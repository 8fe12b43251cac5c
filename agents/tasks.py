"""Celery tasks of the floor: ring timeouts and the sweep behind them."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from agents import services

_TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)


@shared_task(
    name="agents.tasks.call_ring_timeout",
    acks_late=True,
    ignore_result=True,
    autoretry_for=_TRANSIENT_DB_ERRORS,
    retry_backoff=True,
    max_retries=3,
)
def call_ring_timeout(call_id: int, offer: int) -> bool:
    """Idempotent: only the same ring of a still-ringing call moves on. Routing no
    longer sends it (the two-second sweep is the ring timer); kept so messages
    queued before that change are still understood."""
    return services.call_ring_timeout(call_id=int(call_id), offer=int(offer))


@shared_task(
    name="agents.tasks.calls_sweep",
    acks_late=True,
    ignore_result=True,
    autoretry_for=_TRANSIENT_DB_ERRORS,
    max_retries=1,
    expires=10,
)
def calls_sweep() -> int:
    """Move on calls whose timeout message was lost; offer waiting calls to agents
    a concurrent lock made the router skip."""
    return services.calls_sweep()


@shared_task(
    name="agents.tasks.agents_gone_quiet",
    acks_late=True,
    ignore_result=True,
    autoretry_for=_TRANSIENT_DB_ERRORS,
    max_retries=1,
    expires=30,
)
def agents_gone_quiet() -> int:
    """Agents whose desk stopped sending heartbeats go offline."""
    return services.agents_gone_quiet()


@shared_task(
    name="agents.tasks.callbacks_due",
    acks_late=True,
    ignore_result=True,
    autoretry_for=_TRANSIENT_DB_ERRORS,
    max_retries=1,
    expires=60,
)
def callbacks_due() -> int:
    """Tell agents their callbacks are due; escalate the ones nobody made."""
    return services.callbacks_due()
