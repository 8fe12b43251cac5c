"""Offers, policies and an engine that runs as the project configures it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from config.celery import app as celery_app
from crm import listeners, services
from crm.models import BusinessEvent, Customer, Product, SourceSystem, User
from crm.services.event_dispatch import _DispatchOnCommit
from policies import engine
from policies import services as policy_services
from policies.models import Offer, Policy

PROJECT_LISTENERS = {
    "realtime": ["policies.engine.decide_on_commit"],
    "deferred": ["policies.engine.decide_events"],
}


@pytest.fixture(autouse=True)
def _fresh_index() -> Iterator[None]:
    """Each test's policies are its own: no index left over from another test."""
    engine.index_forget()
    yield
    engine.index_forget()


@pytest.fixture
def live_engine(settings: Any, db: None) -> Iterator[None]:
    """The engine listed as in config/settings.py; Celery runs the worker's pass in
    this process, so an event recorded in a captured commit is decided at once."""
    settings.CRM_EVENT_LISTENERS = PROJECT_LISTENERS
    listeners.forget()
    # The fixtures' own events were recorded in the test transaction, whose hook
    # would collect every later event too: start without it, as in the dispatch tests.
    connection.run_on_commit.clear()
    BusinessEvent.objects.update(dispatched_at=timezone.now())
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = eager
    listeners.forget()


@pytest.fixture
def mortgage_product(db: None) -> Product:
    return Product.objects.create(code="home-mortgage", name="Home Mortgage", category="mortgage")


def make_offer(code: str, **fields: Any) -> Offer:
    values: dict[str, Any] = {
        "name": code.replace("-", " ").title(),
        "channels": ["agent_screen", "self_service"],
        "value": Decimal("100.00"),
        "status": "active",
        "talking_points": f"Tell them about {code}.",
        "self_service_text": f"You may like {code}.",
    }
    values.update(fields)
    return policy_services.offer_save(code=code, **values)


def make_policy(actor: User | None, **fields: Any) -> Policy:
    values: dict[str, Any] = {"name": "A policy", "status": "active", "priority": 50}
    values.update(fields)
    return policy_services.policy_save(actor=actor, **values)


def page_viewed(customer: Customer, key: str) -> None:
    """The customer read a web page (``web.page_view``), decided by the engine at once."""
    event, _ = services.business_event_record(
        type="web.page_view", occurred_at=timezone.now(), payload={"url": "/travel"},
        source=services.crm_source(), idempotency_key=key, customer=customer,
    )  # fmt: skip
    engine.decide(event)


def present(offer: str, *channels: str) -> list[dict[str, Any]]:
    return [{"action": "present_offer", "settings": {"offer": offer, "channels": list(channels)}}]


def forget_pending_dispatch() -> None:
    """Events the fixtures recorded (customer.created) sit in the test transaction's
    hook, which never runs and would collect the next events too: drop it."""
    connection.run_on_commit[:] = [
        hook for hook in connection.run_on_commit if not isinstance(hook[1], _DispatchOnCommit)
    ]
    BusinessEvent.objects.filter(dispatched_at__isnull=True).update(dispatched_at=timezone.now())


@pytest.fixture
def record(ivr: SourceSystem, django_capture_on_commit_callbacks: Any) -> Callable[..., BusinessEvent]:
    """Record an event as a source would, commit it (captured), and let every
    listener run."""
    counter = iter(range(1, 10_000))

    def record_(
        customer: Customer, event_type: str, payload: dict[str, Any] | None = None, *,
        source: SourceSystem | None = None, key: str | None = None,
    ) -> BusinessEvent:  # fmt: skip
        forget_pending_dispatch()
        with django_capture_on_commit_callbacks(execute=True):
            event, _ = services.business_event_record(
                type=event_type, occurred_at=timezone.now(), payload=payload or {}, source=source or ivr,
                idempotency_key=key or f"test-{next(counter)}", customer=customer,
            )  # fmt: skip
        return event

    return record_
