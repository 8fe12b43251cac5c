"""The customer's own page: their self-service offers, their details, their
answers; nobody else's, and no staff page in their way."""

from __future__ import annotations

import zoneinfo
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from crm.models import BusinessEvent, Customer, User
from policies.models import OfferPresentation
from tests.conftest import PASSWORD, signed_in
from tests.policies.conftest import make_offer, make_policy, page_viewed, present

pytestmark = pytest.mark.django_db


@pytest.fixture
def offers(bob: User, dave_customer: Customer, erin_customer: Customer) -> dict[str, Any]:
    """Dave: one offer on his web page and one for the agents; Erin: one on hers."""
    make_offer("travel-card", name="A card for travellers", self_service_text="Lounge access included.")
    make_offer("fee-waiver", name="Fee waiver", talking_points="Only if they complain.")
    make_policy(bob, trigger_types=["web.page_view"], actions=present("travel-card", "self_service"))
    make_policy(
        bob, name="Agents", trigger_types=["web.page_view"], actions=present("fee-waiver", "agent_screen")
    )
    Customer.objects.update(marketing_opt_in=True)
    BusinessEvent.objects.update(dispatched_at=timezone.now())
    for customer in (dave_customer, erin_customer):
        page_viewed(customer, f"view-{customer.pk}")
    found = OfferPresentation.objects.select_related("customer", "offer")
    return {f"{p.customer.given_name}/{p.channel}": p for p in found}


def test_a_customer_sees_their_own_web_offers_and_details(dave: User, offers: dict[str, Any]) -> None:
    assert set(offers) >= {"Dave/self_service", "Dave/agent_screen", "Erin/self_service"}
    page = signed_in(dave).get(reverse("me"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "A card for travellers" in html and "Lounge access included." in html
    # An offer for the agents to raise, and its talking points, are not the customer's to read.
    assert "Fee waiver" not in html and "Only if they complain" not in html
    assert f'data-offer="{offers["Erin/self_service"].pk}"' not in html
    assert dave.customer is not None and dave.customer.display_name in html


def test_an_offers_closing_time_is_on_the_customers_clock(dave: User, offers: dict[str, Any]) -> None:
    Customer.objects.filter(pk=offers["Dave/self_service"].customer_id).update(time_zone="America/Chicago")
    expires = offers["Dave/self_service"].expires_at.astimezone(zoneinfo.ZoneInfo("America/Chicago"))
    for name in ("me", "me-offers"):
        html = signed_in(dave).get(reverse(name)).content.decode()
        assert f'{expires:%H:%M}</time> <span class="muted">(America/Chicago)' in html


def test_the_page_reads_as_many_queries_for_several_offers_as_for_one(
    dave: User, offers: dict[str, Any], bob: User
) -> None:
    client = signed_in(dave)
    client.get(reverse("me"))  # the first request of a process fills its caches
    with CaptureQueriesContext(connection) as one:
        client.get(reverse("me"))
    for n in range(3):
        make_offer(f"extra-{n}")
        make_policy(
            bob,
            name=f"Extra {n}",
            trigger_types=["web.page_view"],
            actions=present(f"extra-{n}", "self_service"),
        )
    page_viewed(offers["Dave/self_service"].customer, "view-again")
    assert OfferPresentation.objects.filter(customer__given_name="Dave", channel="self_service").count() >= 3
    with CaptureQueriesContext(connection) as four:
        client.get(reverse("me"))
    assert len(four) == len(one) <= 5  # session, user, customer, accounts, offers


def test_the_fragment_is_the_offers_list_alone(dave: User, offers: dict[str, Any]) -> None:
    html = signed_in(dave).get(reverse("me-offers")).content.decode()
    assert html.startswith('<div id="my-offers"') and "A card for travellers" in html
    assert "Your details" not in html


def test_accepting_records_the_answer_once_and_says_so(dave: User, offers: dict[str, Any]) -> None:
    mine = offers["Dave/self_service"]
    client = signed_in(dave)
    url = reverse("me-offer-answer", args=[mine.pk, "accept"])
    page = client.post(url, follow=True)
    assert page.redirect_chain == [(reverse("me"), 302)]
    assert "we have your answer" in page.content.decode()
    mine.refresh_from_db()
    assert (mine.status, mine.responded_by_id) == ("accepted", dave.pk)
    assert BusinessEvent.objects.filter(type="offer.accepted", customer_id=mine.customer_id).count() == 1
    again = client.post(url, follow=True).content.decode()
    assert "already accepted" in again
    assert BusinessEvent.objects.filter(type="offer.accepted", customer_id=mine.customer_id).count() == 1


def test_declining_keeps_the_reason(dave: User, offers: dict[str, Any]) -> None:
    mine = offers["Dave/self_service"]
    signed_in(dave).post(reverse("me-offer-answer", args=[mine.pk, "decline"]), {"reason": "not now"})
    mine.refresh_from_db()
    event = BusinessEvent.objects.get(type="offer.declined", customer_id=mine.customer_id)
    assert mine.status == "declined" and event.payload.get("reason") == "not now"


def test_another_customers_offer_and_a_made_up_answer_change_nothing(
    dave: User, offers: dict[str, Any]
) -> None:
    client = signed_in(dave)
    erins = offers["Erin/self_service"]
    page = client.post(reverse("me-offer-answer", args=[erins.pk, "accept"]), follow=True).content.decode()
    assert "not one of yours" in page
    odd = client.post(reverse("me-offer-answer", args=[offers["Dave/self_service"].pk, "maybe"]), follow=True)
    assert "Choose accept or decline" in odd.content.decode()
    assert set(OfferPresentation.objects.values_list("status", flat=True)) == {"presented"}


def test_answers_are_posted_not_linked(dave: User, offers: dict[str, Any]) -> None:
    url = reverse("me-offer-answer", args=[offers["Dave/self_service"].pk, "accept"])
    assert signed_in(dave).get(url).status_code == 405


def test_who_lands_where(client: Client, dave: User, alice: User, frank: User) -> None:
    assert client.get(reverse("me"))["Location"].startswith(reverse("login"))
    # Signing in lands on the home page: a customer's is their own page.
    assert client.post(reverse("login"), {"username": "dave", "password": PASSWORD}).status_code == 302
    assert client.get(reverse("home"))["Location"] == reverse("me")
    assert signed_in(alice).get(reverse("me"))["Location"] == reverse("home")
    refused = signed_in(frank).get(reverse("me"))
    assert refused.status_code == 403 and "an integration" in refused.content.decode()
