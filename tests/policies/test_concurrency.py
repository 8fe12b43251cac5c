"""Two passes over the same event at once decide it once; two events of one
customer decided at once get consecutive sequence numbers."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.utils import timezone

from crm import listeners, services
from crm.models import BusinessEvent, Customer
from policies import engine
from policies.models import Decision, OfferPresentation, PresentationCounter
from tests.conftest import make_customer
from tests.policies.conftest import make_offer, make_policy, present


def at_once(*work: Callable[[], Any]) -> list[Any]:
    start = threading.Barrier(len(work))
    results: list[Any] = []

    def run(job: Callable[[], Any]) -> None:
        start.wait()
        try:
            results.append(job())
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def _event(customer: Customer, event_type: str, key: str) -> BusinessEvent:
    event, _ = services.business_event_record(
        type=event_type, occurred_at=timezone.now(), payload={"url": "/"}, source=services.crm_source(),
        idempotency_key=key, customer=customer,
    )  # fmt: skip
    return event


@pytest.mark.django_db(transaction=True)
def test_concurrent_passes_decide_an_event_once_and_number_presentations_without_gaps(settings: Any) -> None:
    # Nothing decides on its own here: the threads are the two passes.
    settings.CRM_EVENT_LISTENERS = {"realtime": [], "deferred": []}
    listeners.forget()
    try:
        make_offer("first-offer")
        make_offer("second-offer")
        make_policy(None, trigger_types=["web.page_view"], actions=present("first-offer", "self_service"))
        make_policy(None, trigger_types=["email.clicked"], actions=present("second-offer", "self_service"))
        customer = make_customer(marketing_opt_in=True)
        viewed = _event(customer, "web.page_view", "v1")

        outcomes = at_once(lambda: engine.decide(viewed), lambda: engine.decide(viewed))
        assert len(outcomes) == 2 and sum(1 for o in outcomes if o is None) == 1  # one found the claim taken
        assert Decision.objects.filter(event=viewed).count() == 1

        # Two events of another customer, each presenting an offer, decided at once.
        other = make_customer(given_name="Nora", phones=[], emails=[], marketing_opt_in=True)
        page, click = _event(other, "web.page_view", "v2"), _event(other, "email.clicked", "c2")
        outcomes = at_once(lambda: engine.decide(page), lambda: engine.decide(click))
        assert len(outcomes) == 2 and None not in outcomes
        sequences = sorted(
            OfferPresentation.objects.filter(customer=other).values_list("sequence", flat=True)
        )
        assert sequences == [1, 2]
    finally:
        listeners.forget()


def _counter_locked(customer_id: int) -> bool:
    """Whether another session finds the customer's presentation counter locked."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM policies_presentationcounter WHERE customer_id = %s FOR UPDATE NOWAIT",
                [customer_id],
            )
        return False
    except OperationalError as exc:
        if "could not obtain lock" not in str(exc):
            raise
        return True
    finally:
        other.close()


@pytest.mark.django_db(transaction=True)
def test_the_claim_takes_the_numbering_lock_only_when_it_wins(settings: Any) -> None:
    """The row that numbers a customer's presentations is locked by the claim's own
    statement, until its transaction ends, and only by a pass that won the claim:
    one that finds the event decided never queues behind the customer's other
    decisions."""
    settings.CRM_EVENT_LISTENERS = {"realtime": [], "deferred": []}
    listeners.forget()
    try:
        make_offer("first-offer")
        make_offer("second-offer")
        make_policy(None, trigger_types=["web.page_view"], actions=present("first-offer", "self_service"))
        make_policy(None, trigger_types=["email.clicked"], actions=present("second-offer", "self_service"))
        customer = make_customer(marketing_opt_in=True)
        viewed = _event(customer, "web.page_view", "v1")
        assert engine.decide(viewed) is not None
        assert OfferPresentation.objects.get(customer=customer).sequence == 1
        clicked = _event(customer, "email.clicked", "c1")
        with transaction.atomic():
            assert engine.decide(clicked) is not None
            assert _counter_locked(customer.pk)  # held until this transaction ends
        assert not _counter_locked(customer.pk)
        numbers = OfferPresentation.objects.filter(customer=customer).values_list("sequence", flat=True)
        assert sorted(numbers) == [1, 2]
        with transaction.atomic():
            assert engine.decide(viewed) is None  # decided already
            assert not _counter_locked(customer.pk)
    finally:
        listeners.forget()


@pytest.mark.django_db(transaction=True)
def test_numbers_follow_the_rows_when_the_counter_is_behind_them(settings: Any) -> None:
    """Presentations written by other means (an import, a fixture) leave the counter
    behind, or without a row: the next number still follows the customer's last."""
    settings.CRM_EVENT_LISTENERS = {"realtime": [], "deferred": []}
    listeners.forget()
    try:
        offer = make_offer("first-offer")
        make_policy(None, trigger_types=["web.page_view"], actions=present("first-offer", "self_service"))
        customer = make_customer(marketing_opt_in=True)
        now = timezone.now()
        old = {"offer": offer, "customer": customer, "channel": "agent_screen", "status": "expired",
               "presented_at": now, "expires_at": now, "responded_at": now}  # fmt: skip
        OfferPresentation.objects.create(sequence=7, **old)  # no counter row yet
        assert engine.decide(_event(customer, "web.page_view", "v1")) is not None
        assert PresentationCounter.objects.get(customer=customer).last == 8
        OfferPresentation.objects.create(sequence=12, **old)  # the counter is behind now
        long_ago = now - dt.timedelta(days=400)  # out of the contact rules' sight
        OfferPresentation.objects.filter(customer=customer).update(
            status="declined", presented_at=long_ago, expires_at=long_ago, responded_at=long_ago
        )
        assert engine.decide(_event(customer, "web.page_view", "v2")) is not None
        numbers = OfferPresentation.objects.filter(customer=customer).values_list("sequence", flat=True)
        assert sorted(numbers) == [7, 8, 12, 13]
        assert PresentationCounter.objects.get(customer=customer).last == 13
    finally:
        listeners.forget()
