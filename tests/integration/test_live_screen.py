"""The customer screen stays current by itself: an agent has it open in a real
browser, an integration records a contact and changes the profile through the
API of a real uvicorn process, and the screen shows both without a reload
(WebSocket frame through channels-redis, then a fresh read of the screen)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from crm import services
from crm.models import Customer, SourceSystem, User
from tests.e2e.conftest import NEEDS_CHROMIUM, SCREENSHOTS
from tests.integration.conftest import COMMITTED, Server, chromium

pytestmark = [pytest.mark.integration, pytest.mark.e2e, COMMITTED, NEEDS_CHROMIUM]


def _api(server: Server, method: str, path: str, token: str, body: dict[str, Any], **headers: str) -> Any:
    request = urllib.request.Request(  # noqa: S310  (http on loopback: the test's own server)
        f"{server.origin}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310  (loopback, the test's own server)
        return json.loads(response.read())


def test_a_synced_contact_and_a_profile_change_appear_on_an_open_screen(
    uvicorn_server: Server, alice: User, dave_customer: Customer, ivr: SourceSystem, frank: User
) -> None:
    _, token = services.api_token_create(user=frank, name="ivr sync")
    from playwright.sync_api import expect

    with chromium() as browser:
        page = browser.sign_in(uvicorn_server, "alice")
        page.goto(f"{uvicorn_server.origin}/customer/{dave_customer.pk}/")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live", timeout=10_000)
        expect(page.locator("#screen")).not_to_contain_text("Asked about mortgage rates")

        _api(
            uvicorn_server,
            "POST",
            f"/api/v1/customers/{dave_customer.pk}/timeline/",
            token,
            {
                "channel": "ivr",
                "direction": "inbound",
                "occurred_at": "2026-03-01T14:30:00Z",
                "external_id": "ivr-call-77",
                "subject": "Asked about mortgage rates",
                "disposition": "self_served",
            },
        )
        new_row = page.locator("tr.row-new", has_text="Asked about mortgage rates")
        expect(new_row).to_be_visible(timeout=5_000)

        _api(
            uvicorn_server,
            "PATCH",
            f"/api/v1/customers/{dave_customer.pk}/",
            token,
            {"given_name": "David"},
            **{"If-Match": f'"{dave_customer.version}"'},
        )
        expect(page.locator(".cust-title h1")).to_have_text("David Miller", timeout=5_000)
        expect(page.locator("#screen")).to_have_attribute("data-version", str(dave_customer.version + 1))

        page.screenshot(path=str(SCREENSHOTS / "customer-live-update.png"), full_page=True)


def test_an_agent_edits_in_place_and_a_clash_shows_both_sides(
    uvicorn_server: Server, alice: User, dave_customer: Customer, ivr: SourceSystem, frank: User
) -> None:
    _, token = services.api_token_create(user=frank, name="web sync")
    from playwright.sync_api import expect

    with chromium() as browser:
        page = browser.sign_in(uvicorn_server, "alice")
        page.goto(f"{uvicorn_server.origin}/customer/{dave_customer.pk}/")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live", timeout=10_000)
        page.locator("body").click()
        page.keyboard.press("e")
        given = page.locator("#id_given_name")
        expect(given).to_be_visible()
        given.fill("Davey")
        # Meanwhile the web site changes the same name: the open form is left alone.
        _api(
            uvicorn_server, "PATCH", f"/api/v1/customers/{dave_customer.pk}/", token,
            {"given_name": "David"}, **{"If-Match": f'"{dave_customer.version}"'},
        )  # fmt: skip
        page.wait_for_timeout(800)
        expect(given).to_have_value("Davey")
        given.press("Control+Enter")
        conflict = page.locator(".conflict")
        expect(conflict).to_contain_text("David")
        expect(conflict).to_contain_text("Davey")
        page.screenshot(path=str(SCREENSHOTS / "customer-edit-conflict.png"))
        page.locator(".profile-form button[type=submit]").click()
        expect(page.locator(".cust-title h1")).to_have_text("Davey Miller", timeout=5_000)
    dave_customer.refresh_from_db()
    assert dave_customer.given_name == "Davey"


def test_the_agent_answers_an_offer_on_the_screen_with_a_key(
    uvicorn_server: Server, alice: User, dave_customer: Customer
) -> None:
    import datetime as dt

    from django.utils import timezone

    from policies.models import Offer, OfferPresentation

    offer = Offer.objects.create(
        code="mortgage", name="Fixed-rate mortgage", channels=["agent_screen"], value=500,
        talking_points="You mentioned moving: our fixed-rate mortgage starts at 4.1% for ten years.",
    )  # fmt: skip
    presented = OfferPresentation.objects.create(
        offer=offer, customer=dave_customer, channel="agent_screen", sequence=1,
        expires_at=timezone.now() + dt.timedelta(hours=4),
    )  # fmt: skip
    from playwright.sync_api import expect

    with chromium() as browser:
        page = browser.sign_in(uvicorn_server, "alice")
        page.goto(f"{uvicorn_server.origin}/customer/{dave_customer.pk}/")
        expect(page.locator(".offers-panel")).to_contain_text("Fixed-rate mortgage")
        page.screenshot(path=str(SCREENSHOTS / "customer-offer.png"))
        page.locator("body").click()
        page.keyboard.press("y")
        expect(page.locator(".offers-panel")).to_contain_text("No offers for this customer right now")
    presented.refresh_from_db()
    assert (presented.status, presented.responded_by_id) == ("accepted", alice.pk)
