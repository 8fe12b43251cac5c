"""The events API for integrations and the offers API for customers and agents."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from config.celery import app as celery_app
from crm import services
from crm.models import BusinessEvent, Customer, SourceSystem, User
from policies.models import Decision, OfferPresentation, Policy
from tests.conftest import api_as
from tests.policies.conftest import forget_pending_dispatch, make_offer, make_policy, page_viewed, present

WITHDRAWAL = {
    "type": "transaction.withdrawal",
    "occurred_at": "2026-03-01T14:30:00Z",
    "idempotency_key": "atm-1",
    "payload": {"amount": 12500.0, "account_number": "CHK-1", "channel": "atm"},
}


def test_an_integration_records_an_event_once_per_key(frank: User, erin_customer: Customer) -> None:
    client = api_as(frank)
    first = client.post("/api/v1/events", {**WITHDRAWAL, "customer": erin_customer.pk}, format="json")
    assert first.status_code == 201, first.json()
    assert first.json()["created"] is True and first.json()["customer"] == erin_customer.pk
    again = client.post("/api/v1/events", {**WITHDRAWAL, "customer": erin_customer.pk}, format="json")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    event = BusinessEvent.objects.get(pk=first.json()["id"])
    assert event.source_system.code == "ivr" and event.actor == frank
    assert event.occurred_at.isoformat() == "2026-03-01T14:30:00+00:00"


def test_an_event_names_its_customer_by_the_sources_own_key(
    frank: User, ivr: SourceSystem, erin_customer: Customer
) -> None:
    services.source_record_link(source=ivr, external_key="IVR-77", customer_id=erin_customer.pk)
    response = api_as(frank).post("/api/v1/events", {**WITHDRAWAL, "customer_key": "IVR-77"}, format="json")
    assert response.status_code == 201 and response.json()["customer"] == erin_customer.pk
    unknown = api_as(frank).post(
        "/api/v1/events", {**WITHDRAWAL, "idempotency_key": "k2", "customer_key": "IVR-00"}, format="json"
    )
    assert unknown.status_code == 400 and "IVR-00" in unknown.json()["customer_key"][0]


def test_bad_fields_are_named_and_a_time_without_zone_is_refused(
    frank: User, erin_customer: Customer
) -> None:
    bad = {**WITHDRAWAL, "customer": erin_customer.pk, "occurred_at": "2026-03-01T14:30:00",
           "payload": {"amount": "lots", "channel": "atm", "acount": "x"}}  # fmt: skip
    body = api_as(frank).post("/api/v1/events", bad, format="json").json()
    assert "has no time zone" in body["occurred_at"][0]
    bad["occurred_at"] = WITHDRAWAL["occurred_at"]
    body = api_as(frank).post("/api/v1/events", bad, format="json").json()
    assert body["payload.amount"] == ["Must be a number."]
    assert body["payload.account_number"] == ["transaction.withdrawal needs account_number (string)."]
    assert "has no field acount" in body["payload.acount"][0]
    unknown = api_as(frank).post("/api/v1/events", {**WITHDRAWAL, "type": "money.moved", "customer": 1})
    assert "not a known event type" in unknown.json()["type"][0]
    assert not BusinessEvent.objects.filter(source_system__code="ivr").exists()


def test_a_batch_names_each_bad_item_by_index_and_records_nothing(
    frank: User, erin_customer: Customer, dave_customer: Customer
) -> None:
    good = {**WITHDRAWAL, "customer": erin_customer.pk}
    batch = {"events": [good, {**good, "idempotency_key": "k2", "payload": {}},
                        {**good, "idempotency_key": "k3", "customer": 999_999}]}  # fmt: skip
    response = api_as(frank).post("/api/v1/events", batch, format="json")
    assert response.status_code == 400
    errors = response.json()["events"]
    assert set(errors) == {"1"} and "payload.amount" in errors["1"]
    batch["events"][1] = {**good, "idempotency_key": "k2", "customer": dave_customer.pk}
    response = api_as(frank).post("/api/v1/events", batch, format="json")
    assert response.json()["events"] == {"2": {"customer": ["There is no customer 999999."]}}
    assert not BusinessEvent.objects.filter(source_system__code="ivr").exists()
    batch["events"].pop()
    response = api_as(frank).post("/api/v1/events", batch, format="json")
    assert response.status_code == 200 and response.json()["created"] == 2
    again = api_as(frank).post("/api/v1/events", batch, format="json").json()
    assert again["created"] == 0 and [e["created"] for e in again["events"]] == [False, False]
    too_many = api_as(frank).post("/api/v1/events", {"events": [good] * 501}, format="json")
    assert too_many.status_code == 400


def test_only_integrations_send_events(alice: User, dave: User, erin_customer: Customer) -> None:
    for user in (alice, dave):
        response = api_as(user).post(
            "/api/v1/events", {**WITHDRAWAL, "customer": erin_customer.pk}, format="json"
        )
        assert response.status_code == 403


@pytest.fixture
def offers(bob: User, dave_customer: Customer, erin_customer: Customer) -> dict[str, OfferPresentation]:
    """A current offer each for dave and erin, presented by a policy."""
    make_offer("travel-card", value=Decimal("150"), talking_points="Mention the lounge.")
    make_policy(bob, trigger_types=["web.page_view"], actions=present("travel-card", "self_service"))
    Customer.objects.update(marketing_opt_in=True)

    forget_pending_dispatch()
    for customer in (dave_customer, erin_customer):
        page_viewed(customer, f"view-{customer.pk}")
    return {p.customer.given_name: p for p in OfferPresentation.objects.select_related("customer")}


def test_a_customer_sees_their_own_offers_with_the_self_service_text(
    dave: User, offers: dict[str, OfferPresentation]
) -> None:
    body = api_as(dave).get("/api/v1/me/offers/").json()
    assert body["reload"] is False and body["last_sequence"] == 1
    (offer,) = body["offers"]
    assert (
        offer["id"] == offers["Dave"].pk
        and offer["offer"]["self_service_text"] == "You may like travel-card."
    )
    assert "talking_points" not in offer["offer"] and "value" not in offer["offer"]
    own = api_as(dave).get(f"/api/v1/customers/{offers['Dave'].customer_id}/offers/")
    assert own.status_code == 200 and len(own.json()["offers"]) == 1


def test_a_customer_can_neither_see_nor_answer_another_customers_offers(
    dave: User, offers: dict[str, OfferPresentation]
) -> None:
    erins = offers["Erin"]
    client = api_as(dave)
    assert client.get(f"/api/v1/customers/{erins.customer_id}/offers/").status_code == 404
    assert client.post(f"/api/v1/offers/{erins.pk}/accept/").status_code == 404
    assert client.post(f"/api/v1/offers/{erins.pk}/decline/", {}, format="json").status_code == 404
    erins.refresh_from_db()
    assert erins.status == "presented"


def test_a_customer_accepts_and_cannot_answer_twice(dave: User, offers: dict[str, OfferPresentation]) -> None:
    client = api_as(dave)
    accepted = client.post(f"/api/v1/offers/{offers['Dave'].pk}/accept/")
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    assert client.post(f"/api/v1/offers/{offers['Dave'].pk}/decline/", {}, format="json").status_code == 409
    assert BusinessEvent.objects.filter(type="offer.accepted", actor=dave).count() == 1
    assert client.get("/api/v1/me/offers/").json()["offers"] == []


def test_an_agent_reads_and_declines_on_the_customers_behalf(
    alice: User, offers: dict[str, OfferPresentation]
) -> None:
    client = api_as(alice)
    erins = offers["Erin"]
    body = client.get(f"/api/v1/customers/{erins.customer_id}/offers/").json()
    assert body["offers"][0]["offer"]["talking_points"] == "Mention the lounge."
    declined = client.post(f"/api/v1/offers/{erins.pk}/decline/", {"reason": "not now"}, format="json")
    assert declined.status_code == 200 and declined.json()["status"] == "declined"
    assert BusinessEvent.objects.get(type="offer.declined").payload["reason"] == "not now"


def test_a_page_that_reconnects_gets_what_it_missed_once_in_order(
    dave: User, offers: dict[str, OfferPresentation], dave_customer: Customer
) -> None:
    make_offer("savings-boost")
    make_policy(None, trigger_types=["email.clicked"], actions=present("savings-boost", "self_service"))
    from policies import engine

    event, _ = services.business_event_record(
        type="email.clicked", occurred_at=timezone.now(), payload={"url": "/save"},
        source=services.crm_source(), idempotency_key="click-1", customer=dave_customer,
    )  # fmt: skip
    engine.decide(event)
    client = api_as(dave)
    url = f"/api/v1/customers/{dave_customer.pk}/offers/"
    missed = client.get(f"{url}?after=0").json()
    assert [o["sequence"] for o in missed["offers"]] == [1, 2] and missed["last_sequence"] == 2
    assert client.get(f"{url}?after=2").json()["offers"] == []
    ahead = client.get(f"{url}?after=9").json()
    assert ahead["reload"] is True and len(ahead["offers"]) == 2
    assert client.get("/api/v1/me/offers/?since=1").status_code == 400


def test_integrations_may_not_read_offers(frank: User, offers: dict[str, OfferPresentation]) -> None:
    response = api_as(frank).get(f"/api/v1/customers/{offers['Dave'].customer_id}/offers/")
    assert response.status_code == 403
    assert api_as(frank).post(f"/api/v1/offers/{offers['Dave'].pk}/accept/").status_code == 403


def test_staff_have_no_own_offers(alice: User) -> None:
    assert api_as(alice).get("/api/v1/me/offers/").status_code == 403


def test_after_is_given_once(dave: User, dave_customer: Customer) -> None:
    response = api_as(dave).get(f"/api/v1/customers/{dave_customer.pk}/offers/?after=1&after=2")
    assert response.status_code == 400 and "once" in response.json()["after"][0]


@pytest.mark.usefixtures("live_engine")
def test_an_event_posted_by_an_integration_reaches_the_engine(
    frank: User, bob: User, erin_customer: Customer, django_capture_on_commit_callbacks: Any
) -> None:
    policy = make_policy(
        bob, trigger_types=["transaction.withdrawal"], condition="event.amount > 10000.0",
        actions=[{"action": "tag_customer", "settings": {"tag": "large-withdrawal"}}],
    )  # fmt: skip
    client = api_as(frank)
    forget_pending_dispatch()
    recent = {**WITHDRAWAL, "customer": erin_customer.pk, "occurred_at": timezone.now().isoformat()}
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/v1/events", recent, format="json")
    assert response.status_code == 201
    assert list(erin_customer.policy_tags.values_list("tag", "policy")) == [("large-withdrawal", policy.pk)]


@pytest.mark.usefixtures("live_engine")
def test_a_large_batch_is_left_to_the_worker_not_decided_in_the_request(
    frank: User, bob: User, erin_customer: Customer, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.POLICIES_DECIDE_ON_COMMIT_MAX_EVENTS = 2
    make_policy(bob, trigger_types=["transaction.withdrawal"],
                actions=[{"action": "tag_customer", "settings": {"tag": "withdrew"}}])  # fmt: skip
    celery_app.conf.task_always_eager = False  # the worker is away: only the on-commit pass runs
    now = timezone.now().isoformat()
    events = [{**WITHDRAWAL, "customer": erin_customer.pk, "occurred_at": now, "idempotency_key": f"b{i}"}
              for i in range(3)]  # fmt: skip
    forget_pending_dispatch()
    with django_capture_on_commit_callbacks(execute=True):
        assert api_as(frank).post("/api/v1/events", {"events": events}, format="json").status_code == 200
    assert not Decision.objects.exists()
    forget_pending_dispatch()
    with django_capture_on_commit_callbacks(execute=True):
        single = {**events[0], "idempotency_key": "single"}
        assert api_as(frank).post("/api/v1/events", single, format="json").status_code == 201
    assert Decision.objects.count() == 1  # a small request is decided in it
    ids = list(BusinessEvent.objects.filter(source_system__code="ivr").values_list("pk", flat=True))
    BusinessEvent.objects.filter(pk__in=ids).update(dispatched_at=None)
    assert services.business_events_dispatch(event_ids=ids) == 4  # the worker decides the other three
    assert Decision.objects.count() == 4


def test_supervisors_read_what_a_policy_may_say(bob: User, alice: User) -> None:
    body = api_as(bob).get("/api/v1/policies/vocabulary/").json()
    withdrawal = next(t for t in body["event_types"] if t["name"] == "transaction.withdrawal")
    assert {"name": "amount", "type": "double"} in withdrawal["event_fields"]
    assert {"name": "source", "type": "string"} in withdrawal["event_fields"]
    assert {"name": "tier", "type": "string"} in body["customer_fields"]
    assert {a["name"] for a in body["actions"]} == {
        "present_offer",
        "create_task",
        "notify_agent",
        "tag_customer",
    }
    assert api_as(alice).get("/api/v1/policies/vocabulary/").status_code == 403


def test_a_policy_is_checked_before_it_is_saved(bob: User) -> None:
    tag = [{"action": "tag_customer", "settings": {"tag": "big"}}]
    client = api_as(bob)
    good = {
        "trigger_types": ["transaction.withdrawal"],
        "condition": "event.amount > 10000.0",
        "actions": tag,
    }
    assert client.post("/api/v1/policies/check/", good, format="json").json() == {"ok": True}
    bad = {**good, "condition": 'event.amount > "10000"', "actions": [{"action": "send_fax", "settings": {}}]}
    response = client.post("/api/v1/policies/check/", bad, format="json")
    assert response.status_code == 400
    assert response.json()["condition"][0].startswith("Line 1, column 14: event.amount is a number")
    assert "unknown action “send_fax”" in response.json()["actions"][0]
    assert not Policy.objects.exists()
