"""Offers and notices reach the screens through the real channel layer (Redis), on commit."""

from __future__ import annotations

from typing import Any

from crm import realtime
from crm.models import Customer, User
from policies.models import Decision, OfferPresentation
from tests.listening import hear
from tests.policies.conftest import make_offer, make_policy, present


def test_a_presented_offer_is_sent_to_everyone_watching_the_customer(
    live_engine: None, record: Any, bob: User, dave_customer: Customer
) -> None:
    make_offer("travel-card", talking_points="Mention the lounge.")
    make_policy(bob, trigger_types=["web.page_view"], actions=present("travel-card", "agent_screen"))
    Customer.objects.filter(pk=dave_customer.pk).update(marketing_opt_in=True)
    _, heard = hear(
        realtime.customer_group(dave_customer.pk),
        lambda: record(dave_customer, "web.page_view", {"url": "/travel"}),
    )
    presentation = OfferPresentation.objects.get()
    assert len(heard) == 1
    frame = heard[0]
    assert frame["event"] == "offer.presented" and frame["presentation_id"] == presentation.pk
    assert frame["sequence"] == 1 and frame["channel"] == "agent_screen"
    assert (
        frame["offer"]["code"] == "travel-card" and frame["offer"]["talking_points"] == "Mention the lounge."
    )


def test_a_notice_reaches_each_supervisor(
    live_engine: None, record: Any, bob: User, erin_customer: Customer
) -> None:
    notice = {
        "action": "notify_agent",
        "settings": {"to": "role:supervisor", "message": "A complaint on a call."},
    }
    make_policy(
        bob,
        trigger_types=["call.disposition"],
        condition='event.disposition == "complaint"',
        actions=[notice],
    )

    def sale_then_complaint() -> None:
        record(erin_customer, "call.disposition", {"disposition": "sale"})
        record(erin_customer, "call.disposition", {"disposition": "complaint"})

    # Two frames asked for: the sale must raise none, so only the complaint's arrives.
    _, heard = hear(realtime.agent_group(bob.pk), sale_then_complaint, frames=2, timeout=1.0)
    assert len(heard) == 1
    frame = heard[0]
    assert frame["event"] == "agent.notice"
    assert Decision.objects.count() == 1  # the sale raised nothing
    assert frame["message"] == "A complaint on a call." and frame["customer_id"] == erin_customer.pk
