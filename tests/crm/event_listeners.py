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
