"""An agent's working loop in a real browser against a real uvicorn: go
available from the keyboard, a call from the telephony API pops the caller's
record, Enter answers, x hangs up, w ends the wrap-up."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agents import services as agents_services
from agents.models import Agent, AgentState, Call, CallState, Disposition, Queue
from crm import services
from crm.models import Customer, SourceSystem, User
from tests.conftest import PASSWORD
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, NEEDS_CHROMIUM, SCREENSHOTS
from tests.integration.conftest import COMMITTED, Server

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


def test_an_agent_goes_available_gets_a_call_popped_answers_and_wraps_up(
    uvicorn_server: Server, alice: User, dave_customer: Customer, ivr: SourceSystem, frank: User
) -> None:
    queue = Queue.objects.create(code="service", name="Customer service")
    Disposition.objects.create(code="resolved", label="Resolved")
    agents_services.agent_for(user=alice).queues.set([queue])
    _, token = services.api_token_create(user=frank, name="pbx bridge")
    from playwright.sync_api import expect, sync_playwright

    shots = Path(SCREENSHOTS)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1366, "height": 768}, locale="en-US").new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{uvicorn_server.origin}/login/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", PASSWORD)
        page.press("#id_password", "Enter")
        page.wait_for_url(f"{uvicorn_server.origin}/")
        presence = page.locator("#presence")
        expect(presence).to_have_attribute("data-state", "offline", timeout=10_000)

        page.locator("body").click()  # focus off the search box: letters are shortcuts now
        page.keyboard.press("a")
        expect(presence).to_have_attribute("data-state", "available")
        page.screenshot(path=str(shots / "desk-available.png"))

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
        page.screenshot(path=str(shots / "desk-ringing.png"))

        page.locator("body").click()
        page.keyboard.press("Enter")
        expect(callbar).to_have_attribute("data-state", "connected")
        expect(presence).to_have_attribute("data-state", "on_call")
        page.screenshot(path=str(shots / "desk-on-call.png"))

        page.keyboard.press("x")
        expect(presence).to_have_attribute("data-state", "wrap_up")
        page.fill("#wrap-notes", "Asked about the new card")
        page.screenshot(path=str(shots / "desk-wrap-up.png"))
        page.locator("body").click()
        page.keyboard.press("w")
        expect(presence).to_have_attribute("data-state", "available")
        expect(callbar).to_be_hidden()
        browser.close()
    assert not errors, errors
    call = Call.objects.get(telephony_id="pbx-1")
    assert (call.state, call.end_reason, call.customer_id) == (CallState.ENDED, "completed", dave_customer.pk)
    assert Agent.objects.get(user=alice).state == AgentState.AVAILABLE
    entry = dave_customer.interactions.get()
    assert (entry.disposition, entry.notes, entry.agent_id) == (
        "resolved",
        "Asked about the new card",
        alice.pk,
    )
