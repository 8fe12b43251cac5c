"""Two passes over the same event at once decide it once; two events of one
customer decided at once get consecutive sequence numbers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from crm import listeners, services
from crm.models import BusinessEvent, Customer
from policies import engine
from policies.models import Decision, OfferPresentation
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


def _sequence_locks_held(customer_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            " AND granted AND classid = 7301 AND objid = %s",
            [customer_id],
        )
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_the_claim_takes_the_sequence_lock_only_when_it_wins(settings: Any) -> None:
    """The lock that numbers a customer's presentations is taken by the claim's own
    statement, and only by a pass that won the claim: one that finds the event
    decided never queues behind the customer's other decisions."""
    settings.CRM_EVENT_LISTENERS = {"realtime": [], "deferred": []}
    listeners.forget()
    try:
        make_offer("first-offer")
        make_policy(None, trigger_types=["web.page_view"], actions=present("first-offer", "self_service"))
        customer = make_customer(marketing_opt_in=True)
        viewed = _event(customer, "web.page_view", "v1")
        with transaction.atomic():
            assert engine.decide(viewed) is not None
            assert _sequence_locks_held(customer.pk) == 1  # held until this transaction ends
        assert OfferPresentation.objects.get(customer=customer).sequence == 1
        with transaction.atomic():
            assert engine.decide(viewed) is None  # decided already
            assert _sequence_locks_held(customer.pk) == 0
    finally:
        listeners.forget()
