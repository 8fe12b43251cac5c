"""An agent's working loop in a real browser against a real uvicorn: go
available from the keyboard, a call from the telephony API pops the caller's
record, Enter answers, x hangs up, w ends the wrap-up."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from agents import services as agents_services
from agents.models import Agent, AgentState, Call, CallState, Disposition, Queue
from crm import services
from crm.models import Customer, User
from tests.e2e.conftest import NEEDS_CHROMIUM, SCREENSHOTS
from tests.integration.conftest import COMMITTED, Server, chromium

pytestmark = [pytest.mark.integration, pytest.mark.e2e, COMMITTED, NEEDS_CHROMIUM]


def _post(server: Server, path: str, token: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(  # noqa: S310  (http on loopback: the test's own server)
        f"{server.origin}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


@pytest.mark.usefixtures("alice", "bob", "ivr")
def test_an_agent_goes_available_gets_a_call_popped_answers_and_wraps_up(
    uvicorn_server: Server, dave_customer: Customer, frank: User
) -> None:
    alice = User.objects.get(username="alice")
    queue = Queue.objects.create(code="service", name="Customer service")
    Disposition.objects.create(code="resolved", label="Resolved")
    agents_services.agent_for(user=alice).queues.set([queue])
    _, token = services.api_token_create(user=frank, name="pbx bridge")
    from playwright.sync_api import expect

    with chromium() as browser:
        # The supervisor watches the floor in another browser while the agent works.
        floor = browser.sign_in(uvicorn_server, "bob")
        floor.goto(f"{uvicorn_server.origin}/floor/")
        expect(floor.locator(".tile-available .tile-n")).to_have_text("0")
        page = browser.sign_in(uvicorn_server, "alice")
        presence = page.locator("#presence")
        expect(presence).to_have_attribute("data-state", "offline", timeout=10_000)

        page.locator("body").click()  # focus off the search box: letters are shortcuts now
        page.keyboard.press("a")
        expect(presence).to_have_attribute("data-state", "available")
        page.screenshot(path=str(SCREENSHOTS / "desk-available.png"))
        expect(floor.locator(".tile-available .tile-n")).to_have_text("1", timeout=5_000)

        _post(
            uvicorn_server,
            "/api/v1/calls/",
            token,
            {"call_id": "pbx-1", "ani": "202-555-0143", "queue": "service"},
        )
        page.wait_for_url(f"{uvicorn_server.origin}/customer/{dave_customer.pk}/", timeout=10_000)
        callbar = page.locator("#callbar")
        expect(callbar).to_have_attribute("data-state", "ringing", timeout=10_000)
        expect(presence).to_have_attribute("data-state", "ringing")
        page.screenshot(path=str(SCREENSHOTS / "desk-ringing.png"))

        page.locator("body").click()
        page.keyboard.press("Enter")
        expect(callbar).to_have_attribute("data-state", "connected")
        expect(presence).to_have_attribute("data-state", "on_call")
        page.screenshot(path=str(SCREENSHOTS / "desk-on-call.png"))
        expect(floor.locator(".tile-on_call .tile-n")).to_have_text("1", timeout=5_000)
        floor.screenshot(path=str(SCREENSHOTS / "floor.png"), full_page=True)

        page.keyboard.press("x")
        expect(presence).to_have_attribute("data-state", "wrap_up")
        page.fill("#wrap-notes", "Asked about the new card")
        page.screenshot(path=str(SCREENSHOTS / "desk-wrap-up.png"))
        page.locator("body").click()
        page.keyboard.press("w")
        expect(presence).to_have_attribute("data-state", "available")
        expect(callbar).to_be_hidden()

        # A caller nobody knows: the pop offers the search and a new record with the number.
        _post(
            uvicorn_server,
            "/api/v1/calls/",
            token,
            {"call_id": "pbx-2", "ani": "312-555-0100", "queue": "service"},
        )
        expect(page.locator("h2", has_text="No customer has this number")).to_be_visible(timeout=10_000)
        page.screenshot(path=str(SCREENSHOTS / "desk-pop-unknown.png"))
        page.locator("body").click()
        page.keyboard.press("n")
        expect(page.locator("#id_phone")).to_have_value("+1 312-555-0100")
        page.screenshot(path=str(SCREENSHOTS / "desk-new-customer.png"))
    call = Call.objects.get(telephony_id="pbx-1")
    assert (call.state, call.end_reason, call.customer_id) == (CallState.ENDED, "completed", dave_customer.pk)
    # The second caller rings her now, from a number no record has.
    assert Agent.objects.get(user=alice).state == AgentState.RINGING
    assert Call.objects.get(telephony_id="pbx-2").customer_id is None
    entry = dave_customer.interactions.get()
    assert (entry.disposition, entry.notes, entry.agent_id) == (
        "resolved",
        "Asked about the new card",
        alice.pk,
    )
