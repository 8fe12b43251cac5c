"""The closed loop in a real browser against a real uvicorn: an event posted by
an integration raises an offer that appears by itself on the customer screen an
agent has open, and the agent accepts it from the keyboard; then a supervisor
reads the result on the policy's page."""

from __future__ import annotations

from typing import Any

import pytest

from crm import services
from crm.models import User
from policies.models import OfferPresentation
from tests.e2e.conftest import NEEDS_CHROMIUM, SCREENSHOTS
from tests.integration.conftest import (
    COMMITTED,
    Server,
    chromium,
    mortgage_policy,
    post_mortgage_page_view,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e, COMMITTED, NEEDS_CHROMIUM]


@pytest.mark.usefixtures("alice", "ivr")
def test_an_offer_appears_on_the_open_screen_and_the_agent_accepts_it_with_the_keyboard(
    uvicorn_server: Server, bob: User, frank: User
) -> None:
    customer = services.customer_create(given_name="Maya", family_name="Lopez", marketing_opt_in=True)
    policy = mortgage_policy(
        bob,
        "agent_screen",
        talking_points="Our 30-year fixed rate is locked for 60 days.",
        self_service_text="Lock a rate.",
    )
    _, token = services.api_token_create(user=frank, name="web site")
    from playwright.sync_api import expect

    with chromium() as browser:
        page: Any = browser.sign_in(uvicorn_server, "alice")
        page.goto(f"{uvicorn_server.origin}/customer/{customer.pk}/")
        expect(page.locator(".live-state")).to_have_attribute("data-state", "live", timeout=10_000)
        expect(page.locator(".offers-panel")).to_contain_text("No offers for this customer right now")

        post_mortgage_page_view(uvicorn_server, token, customer.pk)
        offer = page.locator("[data-first-offer]")
        expect(offer).to_contain_text("A mortgage for your new home", timeout=10_000)
        expect(offer).to_contain_text("locked for 60 days")
        page.screenshot(path=str(SCREENSHOTS / "desk-offer-arrived.png"))

        page.locator("body").click()  # focus off any field: letters are shortcuts
        page.keyboard.press("y")
        expect(page.locator(".offers-panel")).not_to_contain_text(
            "A mortgage for your new home", timeout=10_000
        )
        page.screenshot(path=str(SCREENSHOTS / "desk-offer-accepted.png"))

        supervisor = browser.sign_in(uvicorn_server, "bob")
        supervisor.goto(f"{uvicorn_server.origin}/policies/{policy.pk}/?days=7")
        expect(supervisor.locator(".tile-ok .tile-n").first).to_have_text("1")
        supervisor.screenshot(path=str(SCREENSHOTS / "policy-results.png"), full_page=True)
    presentation = OfferPresentation.objects.get(customer=customer)
    assert (presentation.status, presentation.responded_by) == (
        "accepted",
        User.objects.get(username="alice"),
    )
