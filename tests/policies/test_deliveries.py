"""The e-mail platform and the dialer take the offers of their channel from a
feed, acknowledge them, and pass the customers' answers back."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from crm import services
from crm.models import BusinessEvent, Customer, SourceSystem, User
from policies.models import OfferPresentation
from tests.conftest import api_as
from tests.policies.conftest import make_offer, make_policy, page_viewed, present

pytestmark = pytest.mark.django_db


def integration(code: str, kind: str) -> User:
    source: SourceSystem = services.source_system_create(code=code, name=code.title(), kind=kind)
    return User.objects.get(source_system=source)


@pytest.fixture
def mailer(db: None) -> User:
    return integration("mailer", "email")


@pytest.fixture
def dialer(db: None) -> User:
    return integration("dialer", "dialer")


@pytest.fixture
def presented(bob: User, dave_customer: Customer, erin_customer: Customer) -> dict[str, OfferPresentation]:
    """One e-mail and one outbound-call offer each for Dave and Erin."""
    make_offer("travel-card", channels=["email", "outbound_call"], talking_points="Mention the lounge.")
    make_policy(
        bob, trigger_types=["web.page_view"], actions=present("travel-card", "email", "outbound_call")
    )
    Customer.objects.update(marketing_opt_in=True)
    BusinessEvent.objects.update(dispatched_at=timezone.now())
    for customer in (dave_customer, erin_customer):
        page_viewed(customer, f"view-{customer.pk}")
    found = OfferPresentation.objects.select_related("customer")
    return {f"{p.customer.given_name}/{p.channel}": p for p in found}


def feed(user: User, **query: Any) -> dict[str, Any]:
    response = api_as(user).get("/api/v1/offers/deliveries/", query)
    assert response.status_code == 200, response.content
    return response.json()


def test_each_integration_reads_its_own_channel_oldest_first(
    mailer: User, dialer: User, presented: dict[str, OfferPresentation]
) -> None:
    mail = feed(mailer)
    assert mail["channel"] == "email" and mail["more"] is False
    assert [d["id"] for d in mail["deliveries"]] == sorted(
        [presented["Dave/email"].pk, presented["Erin/email"].pk]
    )
    first = mail["deliveries"][0]
    assert first["customer"]["email"] and first["offer"]["code"] == "travel-card"
    calls = feed(dialer)
    assert calls["channel"] == "outbound_call"
    assert {d["id"] for d in calls["deliveries"]} == {
        presented["Dave/outbound_call"].pk,
        presented["Erin/outbound_call"].pk,
    }
    assert calls["deliveries"][0]["offer"]["talking_points"] == "Mention the lounge."


def test_the_feed_pages_with_limit_and_says_more_is_waiting(mailer: User, presented: dict[str, Any]) -> None:
    one = feed(mailer, limit=1)
    assert len(one["deliveries"]) == 1 and one["more"] is True
    bad = api_as(mailer).get("/api/v1/offers/deliveries/", {"limit": 0})
    assert bad.status_code == 400 and "limit" in bad.json()


def test_acknowledged_offers_leave_the_feed_once(
    mailer: User, presented: dict[str, OfferPresentation]
) -> None:
    daves = presented["Dave/email"].pk
    not_mine = presented["Dave/outbound_call"].pk
    body = {"delivered": [daves, not_mine, 999_999]}
    ack = api_as(mailer).post("/api/v1/offers/deliveries/ack/", body, format="json").json()
    assert ack == {"acknowledged": [daves], "already": [], "unknown": [not_mine, 999_999]}
    assert [d["id"] for d in feed(mailer)["deliveries"]] == [presented["Erin/email"].pk]
    again = (
        api_as(mailer).post("/api/v1/offers/deliveries/ack/", {"delivered": [daves]}, format="json").json()
    )
    assert again == {"acknowledged": [], "already": [daves], "unknown": []}
    # The dialer's offer was not touched by the mailer's acknowledgement.
    assert OfferPresentation.objects.get(pk=not_mine).delivered_at is None


def test_an_empty_or_malformed_acknowledgement_names_the_field(mailer: User) -> None:
    bodies: list[dict[str, Any]] = [{}, {"delivered": []}, {"delivered": ["x"]}]
    for body in bodies:
        response = api_as(mailer).post("/api/v1/offers/deliveries/ack/", body, format="json")
        assert response.status_code == 400 and "delivered" in response.json()


def test_withdrawn_consent_keeps_an_offer_from_being_sent(
    mailer: User, dialer: User, presented: dict[str, OfferPresentation]
) -> None:
    Customer.objects.filter(pk=presented["Dave/email"].customer_id).update(do_not_email=True)
    Customer.objects.filter(pk=presented["Erin/email"].customer_id).update(do_not_call=True)
    assert [d["id"] for d in feed(mailer)["deliveries"]] == [presented["Erin/email"].pk]
    assert [d["id"] for d in feed(dialer)["deliveries"]] == [presented["Dave/outbound_call"].pk]


def test_other_integrations_staff_and_customers_have_no_feed(
    frank: User, alice: User, dave: User, presented: dict[str, Any]
) -> None:
    for user in (frank, alice, dave):
        assert api_as(user).get("/api/v1/offers/deliveries/").status_code == 403
        ack = api_as(user).post("/api/v1/offers/deliveries/ack/", {"delivered": [1]}, format="json")
        assert ack.status_code == 403


def test_the_mailer_passes_on_an_answer_to_its_own_channels_offers_only(
    mailer: User, frank: User, presented: dict[str, OfferPresentation]
) -> None:
    email = presented["Dave/email"]
    accepted = api_as(mailer).post(f"/api/v1/offers/{email.pk}/accept/")
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    event = BusinessEvent.objects.get(type="offer.accepted", customer_id=email.customer_id)
    assert (event.payload["offer"], event.payload["channel"]) == ("travel-card", "email")
    call = presented["Dave/outbound_call"]
    assert api_as(mailer).post(f"/api/v1/offers/{call.pk}/decline/").status_code == 404
    assert api_as(frank).post(f"/api/v1/offers/{presented['Erin/email'].pk}/accept/").status_code == 403
    assert set(OfferPresentation.objects.exclude(pk=email.pk).values_list("status", flat=True)) == {
        "presented"
    }
