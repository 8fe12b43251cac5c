"""Offers and notices reach the screens through the real channel layer (Redis), on commit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from crm import realtime
from crm.models import Customer, User
from policies.models import Decision, OfferPresentation
from tests.policies.conftest import make_offer, make_policy, present


@pytest.fixture
def listen() -> Iterator[Any]:
    """Subscribe a fresh channel to a group; read what arrives (or None after a second)."""
    layer = get_channel_layer()
    assert layer is not None
    subscribed: list[tuple[str, str]] = []

    def subscribe(group: str) -> Any:
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(group, channel)
        subscribed.append((group, channel))

        def receive() -> dict[str, Any] | None:
            async def get() -> dict[str, Any] | None:
                try:
                    return await asyncio.wait_for(layer.receive(channel), timeout=1.0)
                except TimeoutError:
                    return None

            return async_to_sync(get)()

        return receive

    yield subscribe
    for group, channel in subscribed:
        async_to_sync(layer.group_discard)(group, channel)


def test_a_presented_offer_is_sent_to_everyone_watching_the_customer(
    live_engine: None, record: Any, bob: User, dave_customer: Customer, listen: Any
) -> None:
    make_offer("travel-card", talking_points="Mention the lounge.")
    make_policy(bob, trigger_types=["web.page_view"], actions=present("travel-card", "agent_screen"))
    Customer.objects.filter(pk=dave_customer.pk).update(marketing_opt_in=True)
    receive = listen(realtime.customer_group(dave_customer.pk))
    record(dave_customer, "web.page_view", {"url": "/travel"})
    presentation = OfferPresentation.objects.get()
    frame = receive()
    assert frame is not None
    assert frame["event"] == "offer.presented" and frame["presentation_id"] == presentation.pk
    assert frame["sequence"] == 1 and frame["channel"] == "agent_screen"
    assert (
        frame["offer"]["code"] == "travel-card" and frame["offer"]["talking_points"] == "Mention the lounge."
    )


def test_a_notice_reaches_each_supervisor(
    live_engine: None, record: Any, bob: User, erin_customer: Customer, listen: Any
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
    receive = listen(realtime.agent_group(bob.pk))
    record(erin_customer, "call.disposition", {"disposition": "sale"})
    record(erin_customer, "call.disposition", {"disposition": "complaint"})
    frame = receive()
    assert frame is not None and frame["event"] == "agent.notice"
    assert Decision.objects.count() == 1  # the sale raised nothing
    assert frame["message"] == "A complaint on a call." and frame["customer_id"] == erin_customer.pk
