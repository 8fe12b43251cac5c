"""From recorded events to tasks, offers and decisions, through the real outbox."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crm import listeners, services
from crm.exceptions import Conflict
from crm.models import BusinessEvent, Customer, Task, User
from crm.selectors import source_systems
from crm.services import event_dispatch
from policies import engine
from policies import services as policy_services
from policies.models import Decision, EventEvaluation, OfferPresentation
from tests.policies.conftest import forget_pending_dispatch, make_offer, make_policy, present

WITHDRAWAL = {"amount": 25000, "account_number": "ACC-9", "channel": "branch"}


def opted_in(customer: Customer, **flags: Any) -> Customer:
    Customer.objects.filter(pk=customer.pk).update(marketing_opt_in=True, **flags)
    customer.refresh_from_db()
    return customer


@pytest.fixture
def sales_call_policy(bob: User) -> Any:
    return make_policy(
        bob,
        name="Platinum withdraws more than $10,000: a sales rep calls within a day",
        trigger_types=["transaction.withdrawal", "account.withdrawal"],
        condition='customer.tier == "platinum" && event.amount > 10000.0',
        actions=[{"action": "create_task", "settings": {
            "kind": "sales_call", "title": "Call about the large withdrawal", "due_in_hours": 24,
            "assign_to": "queue:sales"}}],
    )  # fmt: skip


def test_a_platinum_withdrawal_over_10000_gets_a_sales_call_within_a_day(
    live_engine: None, record: Any, sales_call_policy: Any, erin_customer: Customer, dave_customer: Customer
) -> None:
    event = record(erin_customer, "transaction.withdrawal", WITHDRAWAL)
    record(erin_customer, "transaction.withdrawal", {**WITHDRAWAL, "amount": 9000})  # too small
    record(dave_customer, "transaction.withdrawal", WITHDRAWAL)  # not platinum
    task = Task.objects.get()
    assert task.customer == erin_customer and task.kind == "sales_call"
    assert task.origin == f"policy:{sales_call_policy.pk}"
    assert task.description == "For the sales queue."
    assert task.due_at is not None
    assert timezone.now() < task.due_at <= timezone.now() + dt.timedelta(hours=24)
    decision = Decision.objects.get()
    assert (decision.event_id, decision.outcome, decision.task) == (event.pk, "acted", task)
    # Every event was dispatched: the worker's pass ran after the on-commit pass.
    assert not BusinessEvent.objects.filter(dispatched_at__isnull=True).exists()


def test_a_ledger_withdrawal_triggers_the_same_policy(
    live_engine: None, record: Any, sales_call_policy: Any, erin_customer: Customer
) -> None:
    record(erin_customer, "account.withdrawal", {"amount": "12000.50", "account_number": "ACC-9"})
    assert Task.objects.filter(origin=f"policy:{sales_call_policy.pk}").count() == 1


def test_no_sales_call_for_a_customer_who_asked_not_to_be_called(
    live_engine: None, record: Any, sales_call_policy: Any, erin_customer: Customer
) -> None:
    Customer.objects.filter(pk=erin_customer.pk).update(do_not_call=True)
    record(erin_customer, "transaction.withdrawal", WITHDRAWAL)
    assert not Task.objects.exists()
    decision = Decision.objects.get()
    assert decision.outcome == "suppressed" and "not to be called" in decision.reason


@pytest.mark.usefixtures("live_engine")
def test_an_address_change_reported_to_the_call_center_offers_a_mortgage_on_the_web(
    alice: User,
    bob: User,
    dave_customer: Customer,
    mortgage_product: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    make_offer("home-mortgage", product=mortgage_product, channels=["self_service", "agent_screen"],
               value=Decimal("2500.00"))  # fmt: skip
    policy = make_policy(
        bob, name="Moving: a mortgage on the self-service page", trigger_types=["customer.address_changed"],
        condition='event.source == "crm"', actions=present("home-mortgage", "self_service"),
    )  # fmt: skip
    customer = opted_in(dave_customer)
    forget_pending_dispatch()
    with django_capture_on_commit_callbacks(execute=True):
        services.customer_update(
            customer_id=customer.pk, expected_version=customer.version, actor=alice,
            changes={"addresses": [{"kind": "home", "line1": "1 New St", "city": "Denver", "country": "US"}]},
        )  # fmt: skip
    presentation = OfferPresentation.objects.get()
    shown = (presentation.customer_id, presentation.channel, presentation.offer.code, presentation.sequence)
    assert shown == (customer.pk, "self_service", "home-mortgage", 1)
    assert presentation.policy == policy and presentation.status == "presented"
    presented = BusinessEvent.objects.get(type="offer.presented")
    assert presented.payload == {"offer": "home-mortgage", "channel": "self_service",
                                 "presentation_id": presentation.pk, "policy_id": policy.pk}  # fmt: skip


def test_an_address_change_from_another_system_offers_nothing(
    live_engine: None, record: Any, bob: User, dave_customer: Customer
) -> None:
    make_offer("home-mortgage")
    make_policy(bob, trigger_types=["customer.address_changed"], condition='event.source == "crm"',
                actions=present("home-mortgage", "self_service"))  # fmt: skip
    record(opted_in(dave_customer), "customer.address_changed", {"city": "Denver"})
    assert not OfferPresentation.objects.exists() and not Decision.objects.exists()


def test_the_worker_alone_decides_when_the_on_commit_pass_is_off(
    live_engine: None, record: Any, sales_call_policy: Any, erin_customer: Customer, settings: Any
) -> None:
    settings.POLICIES_DECIDE_ON_COMMIT = False
    record(erin_customer, "transaction.withdrawal", WITHDRAWAL)
    assert Task.objects.count() == 1


def test_an_event_is_decided_once_however_often_it_is_dispatched(
    live_engine: None, record: Any, sales_call_policy: Any, erin_customer: Customer
) -> None:
    event = record(erin_customer, "transaction.withdrawal", WITHDRAWAL)
    BusinessEvent.objects.filter(pk=event.pk).update(dispatched_at=None)  # a redelivered message
    assert services.business_events_dispatch(event_ids=[event.pk]) == 1
    assert engine.decide(BusinessEvent.objects.get(pk=event.pk)) is None
    engine.decide_on_commit([event])
    assert Task.objects.count() == 1 and Decision.objects.count() == 1
    assert EventEvaluation.objects.get(event_id=event.pk).matched == 1


def test_holdouts_are_stable_and_recorded_as_held_out(
    live_engine: None, record: Any, bob: User, erin_customer: Customer
) -> None:
    policy = make_policy(bob, trigger_types=["web.page_view"], holdout_percent=100,
                         actions=[{"action": "tag_customer", "settings": {"tag": "browsing"}}])  # fmt: skip
    record(erin_customer, "web.page_view", {"url": "/mortgages"})
    decision = Decision.objects.get()
    assert decision.outcome == "held_out" and decision.policy == policy
    assert not erin_customer.policy_tags.exists()
    # Half the customers, by a hash that does not change between runs or processes.
    held = [engine.in_holdout(customer_id, 7, 50) for customer_id in range(2000)]
    assert 900 < sum(held) < 1100
    assert held == [engine.in_holdout(customer_id, 7, 50) for customer_id in range(2000)]
    assert not any(engine.in_holdout(customer_id, 7, 0) for customer_id in range(200))


def test_a_cap_stops_an_offer_shown_too_often(
    live_engine: None, record: Any, bob: User, dave_customer: Customer, dave: User
) -> None:
    make_offer("travel-card", max_presentations=1, period_days=30)
    make_policy(bob, trigger_types=["web.page_view"], actions=present("travel-card", "agent_screen"))
    customer = opted_in(dave_customer)
    record(customer, "web.page_view", {"url": "/travel"})
    first = OfferPresentation.objects.get()
    policy_services.offer_respond(presentation_id=first.pk, accepted=True, actor=dave)
    record(customer, "web.page_view", {"url": "/travel"})
    assert OfferPresentation.objects.count() == 1
    last = Decision.objects.latest("id")
    assert (
        last.outcome == "suppressed"
        and last.reason == "Cap reached: 1 presentations of travel-card in 30 days."
    )


def test_an_offer_waiting_for_an_answer_is_not_presented_again(
    live_engine: None, record: Any, bob: User, dave_customer: Customer
) -> None:
    make_offer("travel-card")
    make_policy(bob, trigger_types=["web.page_view"], actions=present("travel-card", "agent_screen"))
    customer = opted_in(dave_customer)
    record(customer, "web.page_view", {"url": "/travel"})
    record(customer, "web.page_view", {"url": "/travel"})
    assert OfferPresentation.objects.count() == 1
    assert "already waiting" in Decision.objects.latest("id").reason


def test_a_declined_offer_cools_off_and_the_decline_flows_back_as_an_event(
    live_engine: None, record: Any, bob: User, dave_customer: Customer, dave: User
) -> None:
    make_offer("travel-card", cooling_off_days=30)
    make_policy(bob, trigger_types=["web.page_view"], actions=present("travel-card", "self_service"))
    customer = opted_in(dave_customer)
    record(customer, "web.page_view", {"url": "/travel"})
    presentation = OfferPresentation.objects.get()
    policy_services.offer_respond(
        presentation_id=presentation.pk, accepted=False, actor=dave, reason="no need"
    )
    declined = BusinessEvent.objects.get(type="offer.declined")
    assert declined.payload["presentation_id"] == presentation.pk and declined.actor == dave
    with pytest.raises(Conflict):
        policy_services.offer_respond(presentation_id=presentation.pk, accepted=True, actor=dave)
    record(customer, "web.page_view", {"url": "/travel"})
    assert OfferPresentation.objects.count() == 1
    assert Decision.objects.latest("id").reason.startswith("Cooling off: declined on")


def test_consents_and_complaints_suppress_what_they_should(
    live_engine: None, record: Any, bob: User, dave_customer: Customer
) -> None:
    make_offer("gold-card", channels=["outbound_call", "agent_screen"], value=Decimal("300"))
    make_offer("fee-refund", channels=["agent_screen"], marketing=False, value=Decimal("10"))
    make_policy(bob, trigger_types=["web.page_view"], actions=present("gold-card", "outbound_call"))
    make_policy(bob, trigger_types=["email.clicked"], actions=present("gold-card", "agent_screen"))
    make_policy(bob, trigger_types=["call.ended"], actions=present("fee-refund", "agent_screen"))
    # No marketing consent: no marketing offer, but a service offer is still made.
    record(dave_customer, "email.clicked", {"url": "/cards"})
    assert Decision.objects.latest("id").reason == "No marketing consent."
    record(dave_customer, "call.ended", {"call_id": "c1", "direction": "inbound", "duration_seconds": 90})
    assert list(OfferPresentation.objects.values_list("offer__code", flat=True)) == ["fee-refund"]
    # Do not call: never on the outbound-call channel.
    customer = opted_in(dave_customer, do_not_call=True)
    record(customer, "web.page_view", {"url": "/cards"})
    assert Decision.objects.latest("id").reason == "Do not call: no outbound call."
    # An open complaint stops marketing until it is resolved.
    record(customer, "complaint.opened", {"category": "fees"})
    record(customer, "email.clicked", {"url": "/cards"})
    assert "open complaint" in Decision.objects.latest("id").reason
    record(customer, "complaint.resolved", {})
    record(customer, "email.clicked", {"url": "/cards"})
    assert Decision.objects.latest("id").outcome == "acted"
    assert OfferPresentation.objects.filter(offer__code="gold-card", channel="agent_screen").count() == 1


def test_arbitration_keeps_the_top_n_by_priority_times_value(
    live_engine: None, record: Any, bob: User, dave_customer: Customer, settings: Any
) -> None:
    settings.POLICIES_TOP_N_PER_CHANNEL = 2
    make_offer("small", value=Decimal("100"))
    make_offer("medium", value=Decimal("100"))
    make_offer("large", value=Decimal("1000"))
    low = make_policy(bob, name="low", priority=10, trigger_types=["web.page_view"],
                      actions=present("small", "agent_screen"))  # fmt: skip
    make_policy(bob, name="mid", priority=50, trigger_types=["web.page_view"],
                actions=present("medium", "agent_screen"))  # fmt: skip
    make_policy(bob, name="high", priority=6, trigger_types=["web.page_view"],
                actions=present("large", "agent_screen"))  # fmt: skip
    record(opted_in(dave_customer), "web.page_view", {"url": "/"})
    shown = set(OfferPresentation.objects.values_list("offer__code", flat=True))
    assert shown == {"large", "medium"}  # 6 × 1000 and 50 × 100 beat 10 × 100
    lost = Decision.objects.get(policy=low)
    assert lost.outcome == "outranked" and lost.reason == "Outranked on agent_screen by large, medium."
    assert list(OfferPresentation.objects.order_by("sequence").values_list("sequence", flat=True)) == [1, 2]


def test_unknown_actions_offers_and_missing_settings_are_refused_when_saved(bob: User) -> None:
    make_offer("travel-card", channels=["agent_screen"])
    with pytest.raises(ValidationError) as caught:
        make_policy(bob, trigger_types=["web.page_view"], actions=[
            {"action": "send_sms", "settings": {}},
            {"action": "present_offer", "settings": {"offer": "no-such-offer", "channels": ["agent_screen"]}},
            {"action": "present_offer", "settings": {"offer": "travel-card", "channels": ["email"]}},
            {"action": "create_task", "settings": {"kind": "sales_call", "title": "Call", "due_in_hours": 0,
                                                   "assign_to": "everyone"}},
        ])  # fmt: skip
    problems = caught.value.message_dict["actions"]
    assert problems[0].startswith("Action 1: unknown action “send_sms”: use one of create_task")
    assert "Action 2 (present_offer): there is no offer “no-such-offer”" in problems[1]
    assert "the offer “travel-card” is not made for email" in problems[2]
    assert any("due_in_hours must be a whole number of hours from 1 to 720" in p for p in problems)
    assert any("assign_to “everyone” is not an assignee" in p for p in problems)


def test_a_policy_saved_with_a_bad_condition_or_trigger_is_refused(bob: User) -> None:
    with pytest.raises(ValidationError) as caught:
        make_policy(bob, trigger_types=["transaction.withdrawal"], condition="event.amount > ",
                    actions=[{"action": "tag_customer", "settings": {"tag": "x"}}])  # fmt: skip
    assert caught.value.message_dict["condition"][0].startswith("Line 1, column 16: Syntax error")
    with pytest.raises(ValidationError) as caught:
        make_policy(
            bob, trigger_types=["money.moved"], actions=[{"action": "tag_customer", "settings": {"tag": "x"}}]
        )
    assert "Unknown event type money.moved" in caught.value.message_dict["trigger_types"][0]


def test_a_changed_policy_is_used_at_once(
    live_engine: None, record: Any, bob: User, erin_customer: Customer
) -> None:
    policy = make_policy(bob, trigger_types=["web.page_view"], condition='event.url == "/a"',
                         actions=[{"action": "tag_customer", "settings": {"tag": "saw-a"}}])  # fmt: skip
    record(erin_customer, "web.page_view", {"url": "/b"})
    assert not erin_customer.policy_tags.exists()
    policy_services.policy_save(actor=bob, policy_id=policy.pk, condition='event.url == "/b"')
    record(erin_customer, "web.page_view", {"url": "/b"})
    assert list(erin_customer.policy_tags.values_list("tag", flat=True)) == ["saw-a"]
    policy_services.policy_set_status(policy_id=policy.pk, status="paused", actor=bob)
    record(erin_customer, "web.page_view", {"url": "/b"})
    assert Decision.objects.count() == 1


def test_unanswered_offers_expire_with_an_event(
    live_engine: None, record: Any, bob: User, dave_customer: Customer
) -> None:
    make_offer("travel-card", expires_after_hours=1)
    make_policy(bob, trigger_types=["web.page_view"], actions=present("travel-card", "agent_screen"))
    record(opted_in(dave_customer), "web.page_view", {"url": "/travel"})
    assert policy_services.offers_expire() == 0
    assert policy_services.offers_expire(now=timezone.now() + dt.timedelta(hours=2)) == 1
    assert OfferPresentation.objects.get().status == "expired"
    assert BusinessEvent.objects.filter(type="offer.expired").count() == 1


def test_an_old_event_decides_nothing(
    live_engine: None, record: Any, sales_call_policy: Any, erin_customer: Customer, ivr: Any
) -> None:
    event, _ = services.business_event_record(
        type="transaction.withdrawal", occurred_at=timezone.now() - dt.timedelta(days=3), payload=WITHDRAWAL,
        source=ivr, idempotency_key="replayed-1", customer=erin_customer,
    )  # fmt: skip
    assert engine.decide(event) is None
    assert not Task.objects.exists() and not EventEvaluation.objects.exists()


def test_a_channels_daily_limit_holds_back_further_offers(
    live_engine: None, record: Any, bob: User, dave_customer: Customer, settings: Any
) -> None:
    settings.POLICIES_CHANNEL_DAILY_LIMITS = {**settings.POLICIES_CHANNEL_DAILY_LIMITS, "agent_screen": 1}
    make_offer("first-offer")
    make_offer("second-offer")
    make_policy(bob, trigger_types=["web.page_view"], actions=present("first-offer", "agent_screen"))
    make_policy(bob, trigger_types=["email.clicked"], actions=present("second-offer", "agent_screen"))
    customer = opted_in(dave_customer)
    record(customer, "web.page_view", {"url": "/"})
    record(customer, "email.clicked", {"url": "/"})
    assert list(OfferPresentation.objects.values_list("offer__code", flat=True)) == ["first-offer"]
    assert Decision.objects.latest("id").reason == "Channel limit: 1 a day on agent_screen reached."


@pytest.fixture
def on_commit_only(settings: Any) -> Iterator[None]:
    """The engine's on-commit pass alone: what the worker would do is left undone."""
    settings.CRM_EVENT_LISTENERS = {"realtime": ["policies.engine.decide_on_commit"], "deferred": []}
    listeners.forget()
    yield
    listeners.forget()


def _page_view(source: Any, customer: Customer, key: str) -> BusinessEvent:
    event, _ = services.business_event_record(
        type="web.page_view", occurred_at=timezone.now(), payload={"url": "/travel"}, source=source,
        idempotency_key=key, customer=customer,
    )  # fmt: skip
    return event


def _offers_answer_offers(bob: User) -> None:
    """A page view presents travel-card; each offer.presented is answered by a policy
    that tags the customer, one that presents travel-card again (the contact rules
    must see the first one waiting), and one that presents lounge-pass while fewer
    than two offers were presented today (the history must count those just made)."""
    make_offer("travel-card")
    make_offer("lounge-pass", max_presentations=5)
    make_policy(bob, name="Travel page", trigger_types=["web.page_view"],
                actions=present("travel-card", "self_service"))  # fmt: skip
    make_policy(bob, name="Tag who saw an offer", trigger_types=["offer.presented"], priority=10,
                actions=[{"action": "tag_customer", "settings": {"tag": "saw-offer"}}])  # fmt: skip
    make_policy(bob, name="Again", trigger_types=["offer.presented"], priority=20,
                actions=present("travel-card", "self_service"))  # fmt: skip
    make_policy(bob, name="Lounge", trigger_types=["offer.presented"], priority=30,
                condition='history.count("offer.presented", 1) < 2',
                actions=present("lounge-pass", "agent_screen"))  # fmt: skip


def _outcomes() -> list[tuple[str, str, str, str]]:
    return [
        (d.event.type, d.policy.name, d.outcome, d.reason)
        for d in Decision.objects.select_related("event", "policy").order_by("event_id", "policy__priority")
    ]


@pytest.mark.django_db(transaction=True)
def test_the_pass_that_presents_an_offer_decides_its_offer_presented_events_as_the_worker_would(
    on_commit_only: Any, settings: Any, bob: User, ivr: Any, dave_customer: Customer
) -> None:
    """The on-commit pass decides the offer.presented events its offers recorded,
    after its own commit, with the facts it read brought up to date in memory; the
    decisions are those the worker makes reading the facts afresh, one event at a time."""
    _offers_answer_offers(bob)
    customer = opted_in(dave_customer)

    def page_view(key: str) -> None:
        with transaction.atomic():  # the request's transaction; its commit runs the on-commit pass
            _page_view(ivr, customer, key)

    page_view("page-1")
    presented = list(BusinessEvent.objects.filter(type="offer.presented").order_by("pk"))
    # travel-card, then lounge-pass (answering travel-card's event); lounge-pass's own event
    # finds two offers presented today: no third.
    assert [e.payload["offer"] for e in presented] == ["travel-card", "lounge-pass"]
    assert set(EventEvaluation.objects.values_list("event_id", flat=True)) >= {e.pk for e in presented}
    assert customer.policy_tags.get().tag == "saw-offer"
    chained = _outcomes()

    # The same, decided by the worker's pass alone.
    Decision.objects.all().delete()
    EventEvaluation.objects.all().delete()
    OfferPresentation.objects.all().delete()
    BusinessEvent.objects.filter(customer=customer).delete()
    customer.policy_tags.all().delete()
    settings.POLICIES_FOLLOW_MAX_EVENTS = 0
    page_view("page-2")
    assert BusinessEvent.objects.filter(type="offer.presented").count() == 1  # left to the worker
    while waiting := list(
        BusinessEvent.objects.filter(type="offer.presented")
        .exclude(pk__in=EventEvaluation.objects.values("event_id"))
        .order_by("pk")
    ):
        engine.decide_events(waiting)
    assert _outcomes() == chained
    assert chained == [
        ("web.page_view", "Travel page", "acted", "Presented travel-card on self_service."),
        ("offer.presented", "Tag who saw an offer", "acted", "Ran tag_customer."),
        ("offer.presented", "Again", "suppressed",
         "The offer travel-card is already waiting for an answer on self_service."),
        ("offer.presented", "Lounge", "acted", "Presented lounge-pass on agent_screen."),
        ("offer.presented", "Tag who saw an offer", "acted", "Ran tag_customer."),
        ("offer.presented", "Again", "suppressed",
         "The offer travel-card is already waiting for an answer on self_service."),
    ]  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_the_pass_decides_at_most_its_bound_of_recorded_events_and_the_worker_the_rest(
    on_commit_only: Any, settings: Any, bob: User, ivr: Any, dave_customer: Customer
) -> None:
    settings.POLICIES_FOLLOW_MAX_EVENTS = 1
    _offers_answer_offers(bob)
    customer = opted_in(dave_customer)
    with transaction.atomic():
        _page_view(ivr, customer, "page-1")
    first, second = BusinessEvent.objects.filter(type="offer.presented").order_by("pk")
    assert EventEvaluation.objects.filter(event_id=first.pk).exists()
    assert not EventEvaluation.objects.filter(event_id=second.pk).exists()  # past the bound
    engine.decide_events([first, second])  # the worker's pass: the first is decided already
    assert EventEvaluation.objects.get(event_id=second.pk).matched == 2
    assert Decision.objects.filter(event=first).count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_follower_claimed_by_another_pass_undoes_the_followers_pass_and_the_worker_decides_them(
    on_commit_only: Any, settings: Any, bob: User, ivr: Any, dave_customer: Customer
) -> None:
    taken: list[int] = []

    def another_pass_first(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if "json_to_recordset(%(events)s::json)" in sql and not taken:
            # Another process claims the follower just before this pass's statement.
            taken.append(json.loads(params["events"])[0]["id"])
            EventEvaluation.objects.create(event_id=taken[0], candidates=0, matched=0)
        return execute(sql, params, many, context)

    _offers_answer_offers(bob)
    customer = opted_in(dave_customer)
    with connection.execute_wrapper(another_pass_first), transaction.atomic():
        _page_view(ivr, customer, "page-1")
    presented = BusinessEvent.objects.get(type="offer.presented")
    assert taken == [presented.pk]
    # Nothing of the followers' pass stands: no tag, no lounge-pass, no decision of its.
    assert not customer.policy_tags.exists()
    assert list(OfferPresentation.objects.values_list("offer__code", flat=True)) == ["travel-card"]
    assert not Decision.objects.filter(event=presented).exists()


@pytest.mark.django_db(transaction=True)
def test_followers_that_only_decide_cost_one_statement_and_no_transaction(
    on_commit_only: Any, settings: Any, bob: User, ivr: Any, dave_customer: Customer
) -> None:
    make_offer("travel-card")
    make_policy(bob, name="Travel page", trigger_types=["web.page_view"],
                actions=present("travel-card", "self_service"))  # fmt: skip
    make_policy(bob, name="Again", trigger_types=["offer.presented"],
                actions=present("travel-card", "self_service"))  # fmt: skip
    customer = opted_in(dave_customer)
    engine.policy_index()
    source_systems()
    with CaptureQueriesContext(connection) as queries:
        _page_view(ivr, customer, "page-1")
    presented = BusinessEvent.objects.get(type="offer.presented")
    assert Decision.objects.get(event=presented).outcome == "suppressed"  # already waiting
    # (Without deferred listeners, the outbox marks each event dispatched on its commit.)
    captured = queries.captured_queries
    statements = [q["sql"].split()[0] for q in captured if "dispatched_at" not in q["sql"]]
    # The event, the facts, the decision (claim, decisions and presentations in one
    # statement), then the follower's claim: four statements, no transaction.
    assert statements == ["INSERT", "SELECT", "WITH", "WITH"], statements


@pytest.mark.django_db(transaction=True)
def test_in_a_worker_the_events_decided_in_the_pass_are_not_read_again_on_commit(
    settings: Any, bob: User, ivr: Any, dave_customer: Customer
) -> None:
    """The worker's dispatch decides an event, and its offers' events in the same pass;
    on the dispatch's commit, the real-time pass finds them decided without reading
    their facts (one read of the facts for the whole chain)."""
    settings.POLICIES_DECIDE_ON_COMMIT = True
    listeners.forget()  # the project's listeners, whatever a test before set
    _offers_answer_offers(bob)
    customer = opted_in(dave_customer)
    with transaction.atomic():
        event = _page_view(ivr, customer, "page-1")
        connection.run_on_commit.clear()  # as if the recording process died before its commit hook
    with CaptureQueriesContext(connection) as queries:
        dispatched = event_dispatch.business_events_dispatch(event_ids=[event.pk])
    facts_reads = [q for q in queries.captured_queries if "json_object_agg" in q["sql"]]
    assert len(facts_reads) == 1
    assert dispatched == 3  # the page view and its two offers' events
    assert EventEvaluation.objects.count() == 3
    assert not BusinessEvent.objects.filter(
        type__in=["web.page_view", "offer.presented"], dispatched_at__isnull=True
    ).exists()
    assert not engine._followed.ids  # consumed by the commit's real-time pass


DECISION_STATEMENTS = 2


def test_a_decision_costs_the_same_queries_however_many_offers_it_presents(
    live_engine: None, bob: User, dave_customer: Customer, settings: Any
) -> None:
    settings.POLICIES_TOP_N_PER_CHANNEL = 4
    customer = opted_in(dave_customer)

    def decide_one(key: str) -> int:
        event, _ = services.business_event_record(
            type="web.page_view", occurred_at=timezone.now(), payload={"url": "/"},
            source=services.crm_source(), idempotency_key=key, customer=customer,
        )  # fmt: skip
        forget_pending_dispatch()
        # The process's caches warm, as in a running server: only the decision counts.
        engine.policy_index()
        source_systems()
        with CaptureQueriesContext(connection) as queries:
            assert engine.decide(event, customer=customer) is not None
        return len(queries)

    make_offer("one")
    make_policy(bob, name="one", trigger_types=["web.page_view"], actions=present("one", "agent_screen"))
    with_one = decide_one("k1")
    assert OfferPresentation.objects.count() == 1
    tags = []
    tag = {"action": "tag_customer", "settings": {"tag": "seen"}}
    for code in ("two", "three", "four"):
        make_offer(code)
        tags.append(
            make_policy(
                bob, name=code, trigger_types=["web.page_view"], actions=[*present(code, "agent_screen"), tag]
            )
        )
    with_three = decide_one("k2")  # "one" still waits for an answer: the three others
    sequences = list(OfferPresentation.objects.order_by("sequence").values_list("sequence", flat=True))
    assert sequences == [1, 2, 3, 4]
    # Each offer presented is also an offer.presented event, recorded with the others, in order.
    presented = BusinessEvent.objects.filter(type="offer.presented").order_by("pk")
    assert [(e.payload, e.idempotency_key, e.source_system.code) for e in presented] == [
        (
            {
                "offer": p.offer.code,
                "channel": "agent_screen",
                "presentation_id": p.pk,
                "policy_id": p.policy_id,
            },
            f"offer.presented:{p.pk}",
            services.CRM_SOURCE_CODE,
        )
        for p in OfferPresentation.objects.select_related("offer").order_by("sequence")
    ]
    # Three policies of one priority tag the customer alike: the first (by id) names the tag.
    assert list(customer.policy_tags.values_list("tag", "policy_id")) == [("seen", min(p.pk for p in tags))]
    # Three offers, three tags and four decision rows take the statements one offer took.
    assert with_three == with_one
    # The facts (customer given: history and presentations), the claim with the decision
    # rows and the sequence lock, the presentations with their offer.presented events and
    # the tags; and the savepoint's two (the test's transaction encloses the decision's).
    assert with_one == DECISION_STATEMENTS


def _page_views(customers: list[Customer], prefix: str) -> list[BusinessEvent]:
    """Events recorded and left undecided, as a worker's batch finds them."""
    events = [
        services.business_event_record(
            type="web.page_view", occurred_at=timezone.now(), payload={"url": "/"},
            source=services.crm_source(), idempotency_key=f"{prefix}-{n}", customer=customer,
        )[0]
        for n, customer in enumerate(customers)
    ]  # fmt: skip
    forget_pending_dispatch()
    return events


def test_a_batch_reads_what_it_needs_in_statements_that_do_not_grow_with_its_size(
    live_engine: None, bob: User, dave_customer: Customer, erin_customer: Customer
) -> None:
    """The worker's pass over a batch: events no policy listens to read nothing; the
    rest cost one statement for the batch (which are claimed, and their customers),
    with the same text whatever the batch's size, plus each undecided one's decision."""
    make_offer("one")
    make_policy(bob, name="one", trigger_types=["web.page_view"], actions=present("one", "self_service"))
    opted_in(dave_customer)
    opted_in(erin_customer)
    engine.policy_index()  # warm, as in a running worker
    source_systems()

    def statements(events: list[BusinessEvent]) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            engine.decide_events(events)
        return [q["sql"] for q in queries.captured_queries]

    unheard = [
        services.business_event_record(
            type="email.clicked", occurred_at=timezone.now(), payload={"url": "/"},
            source=services.crm_source(), idempotency_key=f"unheard-{n}", customer=dave_customer,
        )[0]
        for n in range(30)
    ]  # fmt: skip
    forget_pending_dispatch()
    assert statements(unheard) == []
    assert not EventEvaluation.objects.filter(event_id__in=[e.pk for e in unheard]).exists()

    small = _page_views([dave_customer, erin_customer], "small")
    large = _page_views([dave_customer, erin_customer] * 10, "large")
    for batch in (small, large):
        EventEvaluation.objects.bulk_create(
            EventEvaluation(event_id=e.pk, evaluated_at=timezone.now(), candidates=1, matched=0)
            for e in batch
        )
    read_small, read_large = statements(small), statements(large)
    assert len(read_small) == len(read_large) == 1
    assert read_small == read_large  # one array parameter: the same statement, prepared once
    assert not Decision.objects.exists()

    # Undecided: the batch's read, then each event's decision (the customer not read again).
    two, four = _page_views([dave_customer, erin_customer], "two"), _page_views([erin_customer] * 4, "four")
    decided_two, decided_four = statements(two), statements(four)
    assert len(decided_two) == 1 + 2 * DECISION_STATEMENTS
    assert sum("crm_customer c" in sql for sql in decided_four) == 1  # the batch's read only
    assert EventEvaluation.objects.filter(event_id__in=[e.pk for e in two + four]).count() == 6
    assert [Decision.objects.get(event_id=e.pk).outcome for e in two] == ["acted", "acted"]
    # Erin's offer from the first batch waits for an answer: the contact rule stops the rest.
    reasons = {Decision.objects.get(event_id=e.pk).reason for e in four}
    assert reasons == {"The offer one is already waiting for an answer on self_service."}


def test_a_batch_skips_the_event_of_an_erased_customer_and_decides_the_rest(
    live_engine: None, bob: User, dave_customer: Customer, erin_customer: Customer
) -> None:
    make_offer("one")
    make_policy(bob, name="one", trigger_types=["web.page_view"], actions=present("one", "self_service"))
    opted_in(erin_customer)
    gone, kept = _page_views([dave_customer, erin_customer], "erased")
    # As the worker's copy of an event whose customer was erased since: no such row.
    gone.customer_id = Customer.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1000
    engine.decide_events([gone, kept])
    assert list(EventEvaluation.objects.values_list("event_id", flat=True)) == [kept.pk]
    assert OfferPresentation.objects.get().customer_id == erin_customer.pk


def _eventually(check: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return bool(check())


def test_a_change_announced_by_another_process_reaches_this_ones_index_without_a_round_trip(
    live_engine: None,
) -> None:
    first = engine.policy_index()  # starts this process's listener
    assert _eventually(lambda: engine._listener.live)
    # Another process's commit: the generation bumped and published by the same script.
    other = redis.Redis.from_url(django_settings.REDIS_URL)
    generation = int(other.eval(engine._ANNOUNCE, 1, engine.GENERATION_KEY, engine.CHANGES_CHANNEL))
    assert _eventually(lambda: engine._listener.generation >= generation)
    rebuilt = engine.policy_index()
    assert rebuilt is not first and rebuilt.generation >= generation
    assert engine.policy_index() is rebuilt  # nothing new announced: the same index, no read
