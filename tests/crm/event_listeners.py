"""Listeners the dispatch tests name in CRM_EVENT_LISTENERS."""

from __future__ import annotations

from collections.abc import Sequence

from crm.models import BusinessEvent, Task

seen: list[tuple[str, list[int]]] = []
POISON = "account.deposit"  # events of this type make ``refuses_deposits`` fail


def remember_realtime(events: Sequence[BusinessEvent]) -> None:
    seen.append(("realtime", [e.pk for e in events]))


def fails_every_time(events: Sequence[BusinessEvent]) -> None:
    raise RuntimeError("this listener always fails")


def writes_a_task(events: Sequence[BusinessEvent]) -> None:
    """A deferred listener with a visible, idempotent effect: one task per event."""
    seen.append(("deferred", [e.pk for e in events]))
    for event in events:
        if event.customer_id is not None:
            Task.objects.get_or_create(
                customer_id=event.customer_id,
                title=f"Follow up event {event.pk}",
                defaults={"kind": "follow_up"},
            )


def refuses_deposits(events: Sequence[BusinessEvent]) -> None:
    if any(e.type == POISON for e in events):
        raise ValueError("deposits are refused by this test listener")


not_callable = 42


ANSWER = "complaint.resolved"  # what ``answers_each_creation`` records


def answers_each_creation(events: Sequence[BusinessEvent]) -> None:
    """A deferred listener that records an event of its own for each customer.created,
    as the policies record an offer.presented for each offer they present."""
    from crm import services

    seen.append(("deferred", [e.pk for e in events]))
    for event in events:
        if event.type == "customer.created" and event.customer is not None:
            services.business_event_record(
                type=ANSWER, occurred_at=event.occurred_at, payload={}, source=event.source_system,
                idempotency_key=f"answer-{event.pk}", customer=event.customer,
            )  # fmt: skip


def remember_deferred(events: Sequence[BusinessEvent]) -> None:
    seen.append(("deferred", [e.pk for e in events]))
