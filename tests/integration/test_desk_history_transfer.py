"""The customer screen's contact history and the call bar's transfer, in a real
browser against a real uvicorn: a channel chip shows one channel, scrolling
loads older contacts, and t transfers the call to an available colleague."""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.request
from typing import Any

import pytest
from django.utils import timezone

from agents import services as agents_services
from agents.models import AgentState, Queue
from crm import services
from crm.models import Customer, SourceSystem, User
from tests.e2e.conftest import NEEDS_CHROMIUM, SCREENSHOTS
from tests.integration.conftest import COMMITTED, Server, chromium

pytestmark = [pytest.mark.integration, pytest.mark.e2e, COMMITTED, NEEDS_CHROMIUM]


@pytest.mark.usefixtures("bob")
def test_the_history_filters_by_channel_and_loads_older_contacts_as_the_agent_scrolls(
    uvicorn_server: Server, alice: User, dave_customer: Customer, ivr: SourceSystem
) -> None:
    now = timezone.now()
    for n in range(130):
        services.interaction_record(
            customer_id=dave_customer.pk, channel="email" if n % 4 == 0 else "phone", direction="inbound",
            source=ivr, external_id=f"hist-{n}", occurred_at=now - dt.timedelta(hours=n * 7),
            subject=f"Contact {n}", agent=alice if n % 2 else None,
            disposition="resolved" if n % 2 else "", campaign_code="spring-cards" if n % 5 == 0 else "",
        )  # fmt: skip
    from playwright.sync_api import expect

    with chromium() as browser:
        page = browser.sign_in(uvicorn_server, "alice")
        page.set_viewport_size({"width": 1366, "height": 768})
        page.goto(f"{uvicorn_server.origin}/customer/{dave_customer.pk}/")
        rows = page.locator("#history-rows tr[data-interaction]")
        expect(rows).to_have_count(50)
        page.screenshot(path=str(SCREENSHOTS / "customer-history.png"))
        # Scrolling to the end of the table brings the older pages, then says it is the first.
        for expected in (100, 130):
            page.locator("#history-rows tr").last.scroll_into_view_if_needed()
            expect(rows).to_have_count(expected, timeout=10_000)
        expect(page.locator("tr.history-end")).to_contain_text("The first contact on record.")
        page.screenshot(path=str(SCREENSHOTS / "customer-history-end.png"))
        # The chips are buttons: reachable with Tab, pressed with Enter.
        chip = page.locator('[data-history-channel="email"]')
        chip.focus()
        page.keyboard.press("Enter")
        expect(chip).to_have_attribute("aria-pressed", "true")
        expect(rows).to_have_count(33)
        assert set(rows.locator(".col-channel").all_inner_texts()) == {"↙ E-mail"}
        chip.scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / "customer-history-email.png"))


@pytest.mark.usefixtures("dave_customer")
def test_the_agent_transfers_a_call_to_an_available_colleague_with_t(
    uvicorn_server: Server, alice: User, ivr: SourceSystem
) -> None:
    queue = Queue.objects.create(code="service", name="Customer service")
    colleague = services.staff_user_create(
        username="carl", password="not-used-password-1", role="agent", first_name="Carl", last_name="Diaz"
    )
    for user in (alice, colleague):
        agents_services.agent_for(user=user).queues.set([queue])
    agents_services.agent_set_state(user=alice, state=AgentState.AVAILABLE)
    call, _ = agents_services.call_arrive(
        source=ivr, telephony_id="x1", ani="+12025550143", queue_code="service"
    )
    agents_services.call_event(source=ivr, telephony_id="x1", event_id="a", kind="answered")
    agents_services.agent_set_state(user=colleague, state=AgentState.AVAILABLE)
    from playwright.sync_api import expect

    with chromium() as browser:
        page: Any = browser.sign_in(uvicorn_server, "alice")
        page.set_viewport_size({"width": 1366, "height": 768})
        page.goto(f"{uvicorn_server.origin}/customer/{call.customer_id}/")
        callbar = page.locator("#callbar")
        expect(callbar).to_have_attribute("data-state", "connected", timeout=10_000)
        page.locator("body").click()
        page.keyboard.press("t")
        select = page.locator("#transfer-to")
        expect(select).to_be_focused()
        expect(select.locator("option")).to_contain_text(["Carl Diaz"])
        page.screenshot(path=str(SCREENSHOTS / "desk-transfer.png"))
        page.keyboard.press("Enter")
        expect(page.locator("#presence")).to_have_attribute("data-state", "wrap_up", timeout=10_000)
        expect(page.locator("#transfer")).to_be_hidden()
        page.screenshot(path=str(SCREENSHOTS / "desk-transferred.png"))
    assert agents_services.agent_for(user=colleague).state == AgentState.RINGING


def _timeline_post(server: Server, token: str, customer_id: int, body: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310  (http on loopback: the test's own server)
        f"{server.origin}/api/v1/customers/{customer_id}/timeline/",
        data=json.dumps({"direction": "inbound", **body}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310  (loopback)
        assert response.status == 201


def test_the_history_keeps_its_channel_when_the_screen_reads_itself_again(
    uvicorn_server: Server, alice: User, dave_customer: Customer, ivr: SourceSystem, frank: User
) -> None:
    now = timezone.now()
    for n in range(8):
        services.interaction_record(
            customer_id=dave_customer.pk, channel="email" if n % 2 else "phone", direction="inbound",
            source=ivr, external_id=f"before-{n}", occurred_at=now - dt.timedelta(days=n + 1),
            subject=f"Earlier contact {n}",
        )  # fmt: skip
    _, token = services.api_token_create(user=frank, name="ivr sync")
    from playwright.sync_api import expect

    with chromium() as browser:
        page = browser.sign_in(uvicorn_server, "alice")
        page.set_viewport_size({"width": 1366, "height": 768})
        page.goto(f"{uvicorn_server.origin}/customer/{dave_customer.pk}/")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live", timeout=10_000)
        rows = page.locator("#history-rows tr[data-interaction]")
        page.locator('[data-history-channel="email"]').click()
        expect(rows).to_have_count(4)
        # Two contacts synced while the agent reads the e-mails: the screen reads itself
        # again (one re-read for both), and stays on e-mail.
        _timeline_post(uvicorn_server, token, dave_customer.pk,
                       {"channel": "phone", "external_id": "live-phone", "subject": "Phoned while filtered",
                        "occurred_at": now.isoformat()})  # fmt: skip
        _timeline_post(uvicorn_server, token, dave_customer.pk,
                       {"channel": "email", "external_id": "live-email", "subject": "Wrote while filtered",
                        "occurred_at": now.isoformat()})  # fmt: skip
        expect(page.locator("#history-rows")).to_contain_text("Wrote while filtered", timeout=10_000)
        expect(rows).to_have_count(5)
        expect(page.locator('[data-history-channel="email"]')).to_have_attribute("aria-pressed", "true")
        expect(page.locator('[data-history-channel=""]')).to_have_attribute("aria-pressed", "false")
        assert set(rows.locator(".col-channel").all_inner_texts()) == {"↙ E-mail"}
        expect(page.locator("#screen")).not_to_contain_text("Phoned while filtered")
        expect(page.locator("#history-rows tr.row-new")).to_have_count(1)
        page.locator(".history-filter").scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / "customer-history-filter-live.png"))
        # All again: the phone contact was there all along.
        page.locator('[data-history-channel=""]').click()
        expect(page.locator("#history-rows")).to_contain_text("Phoned while filtered")


@pytest.mark.usefixtures("dave_customer")
def test_a_refused_transfer_keeps_the_list_open_beside_the_reason(
    uvicorn_server: Server, alice: User, ivr: SourceSystem
) -> None:
    queue = Queue.objects.create(code="service", name="Customer service")
    colleague = services.staff_user_create(
        username="carl", password="not-used-password-1", role="agent", first_name="Carl", last_name="Diaz"
    )
    for user in (alice, colleague):
        agents_services.agent_for(user=user).queues.set([queue])
    agents_services.agent_set_state(user=alice, state=AgentState.AVAILABLE)
    call, _ = agents_services.call_arrive(
        source=ivr, telephony_id="x2", ani="+12025550143", queue_code="service"
    )
    agents_services.call_event(source=ivr, telephony_id="x2", event_id="a", kind="answered")
    agents_services.agent_set_state(user=colleague, state=AgentState.AVAILABLE)
    from playwright.sync_api import expect

    with chromium() as browser:
        page: Any = browser.sign_in(uvicorn_server, "alice")
        page.set_viewport_size({"width": 1366, "height": 768})
        page.goto(f"{uvicorn_server.origin}/customer/{call.customer_id}/")
        expect(page.locator("#callbar")).to_have_attribute("data-state", "connected", timeout=10_000)
        page.locator("body").click()
        page.keyboard.press("t")
        select = page.locator("#transfer-to")
        expect(select.locator("option")).to_contain_text(["Carl Diaz"])
        # Carl goes on a break while the list is open (from another thread: Playwright's
        # loop runs on this one, and the state change sends its frames on commit).
        went = threading.Thread(target=_on_break, args=(colleague,))
        went.start()
        went.join()
        page.keyboard.press("Enter")
        expect(page.locator(".callbar-error")).to_contain_text("Carl Diaz is on a break", timeout=10_000)
        expect(page.locator("#transfer")).to_be_visible()
        expect(select).to_be_focused()
        # Read again: Carl is no longer offered.
        expect(select).not_to_contain_text("Carl Diaz")
        expect(select).to_contain_text("Nobody with this skill is available")
        expect(page.locator("#presence")).to_have_attribute("data-state", "on_call")
        page.screenshot(path=str(SCREENSHOTS / "desk-transfer-refused.png"))
        # The agent picks the queue instead, from the same list.
        select.select_option(value="queue:service")
        page.keyboard.press("Enter")
        expect(page.locator("#presence")).to_have_attribute("data-state", "wrap_up", timeout=10_000)
        expect(page.locator("#transfer")).to_be_hidden()
        expect(page.locator(".callbar-error")).to_have_text("")
    assert agents_services.agent_for(user=colleague).state == AgentState.BREAK


def _on_break(user: User) -> None:
    from django.db import connection

    try:
        agents_services.agent_set_state(user=user, state=AgentState.BREAK, reason="lunch")
    finally:
        connection.close()


def test_a_saved_profile_and_an_answered_offer_keep_the_history_on_the_chosen_channel(
    uvicorn_server: Server, alice: User, dave_customer: Customer, ivr: SourceSystem
) -> None:
    from policies.models import Offer, OfferPresentation

    now = timezone.now()
    for n in range(6):
        services.interaction_record(
            customer_id=dave_customer.pk, channel="email" if n % 2 else "phone", direction="inbound",
            source=ivr, external_id=f"kept-{n}", occurred_at=now - dt.timedelta(days=n + 1),
            subject=f"Earlier contact {n}",
        )  # fmt: skip
    offer = Offer.objects.create(
        code="travel-card", name="Travel card", talking_points="Mention the lounge.",
        channels=["agent_screen"], value=100,
    )  # fmt: skip
    OfferPresentation.objects.create(
        offer=offer, customer=dave_customer, channel="agent_screen", sequence=1,
        expires_at=now + dt.timedelta(hours=1),
    )  # fmt: skip
    from playwright.sync_api import expect

    with chromium() as browser:
        page = browser.sign_in(uvicorn_server, "alice")
        page.set_viewport_size({"width": 1366, "height": 768})
        page.goto(f"{uvicorn_server.origin}/customer/{dave_customer.pk}/")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live", timeout=10_000)
        rows = page.locator("#history-rows tr[data-interaction]")
        email_chip = page.locator('[data-history-channel="email"]')

        def on_email() -> None:
            expect(email_chip).to_have_attribute("aria-pressed", "true")
            expect(rows).to_have_count(3)
            assert set(rows.locator(".col-channel").all_inner_texts()) == {"↙ E-mail"}

        email_chip.click()
        on_email()
        # The profile saved: the server renders the screen again, still on e-mail.
        page.locator("#contact-panel button", has_text="Edit").click()
        page.locator("#id_given_name").fill("Davey")
        page.locator("#contact-panel button[type=submit]").click()
        expect(page.locator("#screen h1")).to_contain_text("Davey", timeout=10_000)
        on_email()
        # The offer answered: the same.
        page.locator('[data-offer="accept"]').click()
        expect(page.locator(".offers-panel")).to_contain_text("No offers for this customer right now")
        on_email()
        page.locator(".history-filter").scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / "customer-history-filter-kept.png"))
    assert OfferPresentation.objects.get().status == "accepted"
