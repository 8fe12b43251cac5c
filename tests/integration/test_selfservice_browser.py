"""The customer's side of the loop in a real browser against a real uvicorn: an
event posted by an integration raises an offer on the customer's own web page,
which shows it by itself, and the customer accepts it."""

from __future__ import annotations

from typing import Any

import pytest

from crm import services
from crm.models import User
from policies.models import OfferPresentation
from tests.conftest import PASSWORD
from tests.e2e.conftest import NEEDS_CHROMIUM, SCREENSHOTS
from tests.integration.conftest import (
    COMMITTED,
    Server,
    chromium,
    mortgage_policy,
    post_mortgage_page_view,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e, COMMITTED, NEEDS_CHROMIUM]


def test_an_offer_appears_on_the_customers_page_and_they_accept_it(
    uvicorn_server: Server, bob: User, frank: User
) -> None:
    customer = services.customer_create(
        given_name="Nadia", family_name="Okafor", marketing_opt_in=True, time_zone="America/Chicago",
        emails=[{"address": "nadia@example.com"}], phones=[{"number": "+12025550199", "kind": "mobile"}],
    )  # fmt: skip
    services.customer_login_create(customer=customer, username="nadia", password=PASSWORD)
    mortgage_policy(
        bob,
        "self_service",
        talking_points="For the agents only.",
        self_service_text="Lock today's rate for 60 days.",
    )
    _, token = services.api_token_create(user=frank, name="web site")
    from playwright.sync_api import expect

    with chromium() as browser:
        page: Any = browser.sign_in(uvicorn_server, "nadia", landing="/me/")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live", timeout=10_000)
        expect(page.locator("#my-offers")).to_contain_text("Nothing new for you right now")
        page.screenshot(path=str(SCREENSHOTS / "self-service-empty.png"))

        post_mortgage_page_view(uvicorn_server, token, customer.pk)

        offer = page.locator("[data-offer]")
        expect(offer).to_contain_text("A mortgage for your new home", timeout=10_000)
        expect(offer).to_contain_text("Lock today's rate")
        expect(page.locator("#my-offers")).not_to_contain_text("For the agents only")
        page.screenshot(path=str(SCREENSHOTS / "self-service-offer.png"), full_page=True)

        page.get_by_role("button", name="Yes, I'm interested").click()
        expect(page.locator("#my-offers")).to_contain_text("we have your answer", timeout=10_000)
        expect(page.locator("[data-offer]")).to_have_count(0)
        page.screenshot(path=str(SCREENSHOTS / "self-service-accepted.png"))
    presentation = OfferPresentation.objects.get(customer=customer)
    assert (presentation.status, presentation.responded_by) == (
        "accepted",
        User.objects.get(username="nadia"),
    )
