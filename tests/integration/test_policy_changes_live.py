"""A supervisor's change to a policy or an offer applies to the very next event,
in another process: a real uvicorn decides the events posted to it, this test
process makes the changes, and the announcement crosses the real Redis."""

from __future__ import annotations

import json
import urllib.request

import pytest
from django.utils import timezone

from crm import services
from crm.models import SourceSystem, User
from policies import services as policy_services
from policies.models import Decision, OfferPresentation
from tests.conftest import make_customer
from tests.integration.conftest import COMMITTED, Server

pytestmark = [pytest.mark.integration, COMMITTED]


def post_page_view(server: Server, token: str, key: str) -> int:
    """A mortgage page read by a new customer; the event's id (decided in the server
    on commit, before it answers)."""
    customer = make_customer(marketing_opt_in=True)
    body = json.dumps({"type": "web.page_view", "customer": customer.pk, "idempotency_key": key,
                       "occurred_at": timezone.now().isoformat(),
                       "payload": {"url": "/mortgages", "page_category": "mortgage"}})  # fmt: skip
    request = urllib.request.Request(  # noqa: S310  (the test's own http:// server)
        f"{server.origin}/api/v1/events", data=body.encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 201
        return int(json.loads(response.read())["id"])


def offered(event_id: int) -> bool:
    return OfferPresentation.objects.filter(event_id=event_id).exists()


def test_pausing_a_policy_or_editing_its_offer_stops_the_very_next_event_on_another_process(
    uvicorn_server: Server, bob: User, ivr: SourceSystem
) -> None:
    _, token = services.api_token_create(user=User.objects.get(source_system=ivr), name="test")
    offer = policy_services.offer_save(
        code="home-mortgage", name="Home mortgage", channels=["self_service"], status="active",
        self_service_text="Moving? Lock a rate.", max_presentations=50, period_days=1, cooling_off_days=0,
    )  # fmt: skip
    present = {"offer": "home-mortgage", "channels": ["self_service"]}
    policy = policy_services.policy_save(
        actor=bob, name="Mortgage pages", status="active", trigger_types=["web.page_view"],
        condition='event.page_category == "mortgage"',
        actions=[{"action": "present_offer", "settings": present}],
    )  # fmt: skip
    first = post_page_view(uvicorn_server, token, "view-1")
    assert offered(first)  # the server's index holds the policy now

    policy_services.policy_set_status(policy_id=policy.pk, status="paused", actor=bob)
    paused = post_page_view(uvicorn_server, token, "view-2")
    assert not offered(paused)
    assert not Decision.objects.filter(event_id=paused).exists()

    policy_services.policy_set_status(policy_id=policy.pk, status="active", actor=bob)
    again = post_page_view(uvicorn_server, token, "view-3")
    assert offered(again)

    # A contact-rule edit of the offer: no longer made for the self-service page.
    policy_services.offer_save(offer_id=offer.pk, channels=["agent_screen"])
    edited = post_page_view(uvicorn_server, token, "view-4")
    assert not offered(edited)
    assert Decision.objects.get(event_id=edited, policy=policy).outcome == "suppressed"
