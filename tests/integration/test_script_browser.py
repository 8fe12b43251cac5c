"""Call scripting end to end in a real browser against a real uvicorn: a
supervisor builds and publishes a branching script in the designer's forms, an
agent runs it on a popped call from the keyboard (answering the call starts
it), the branch follows the answer, the answers appear in the contact history
after wrap-up, and the analytics page counts the run. Screenshots of the
designer, the diagram, the panel and the analytics land in artifacts/screenshots/."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agents import services as agents_services
from agents.models import Disposition, Queue
from crm import services
from crm.models import Customer, User
from scripting.models import Run, RunStatus
from tests.e2e.conftest import NEEDS_CHROMIUM, SCREENSHOTS
from tests.integration.conftest import COMMITTED, Server, chromium

pytestmark = [pytest.mark.integration, pytest.mark.e2e, COMMITTED, NEEDS_CHROMIUM]


def _post_call(server: Server, token: str, call_id: str) -> None:
    request = urllib.request.Request(  # noqa: S310  (http on loopback: the test's own server)
        f"{server.origin}/api/v1/calls/",
        data=json.dumps({"call_id": call_id, "ani": "202-555-0143", "queue": "service"}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        response.read()


def _design(page: Any, origin: str, shots: Path) -> None:
    """The supervisor's part: create, add steps, fill them in, publish, assign."""
    from playwright.sync_api import expect

    page.goto(f"{origin}/scripts/")
    expect(page.locator(".panel-empty")).to_contain_text("No scripts yet")
    page.fill("#new-name", "Moving check")
    page.fill("#new-code", "moving-check")
    page.click("text=Create and design")
    expect(page.locator("h1")).to_contain_text("Moving check")
    for key, title in (("moving", "Moving home"), ("close", "Goodbye")):
        page.fill("#new-step-key", key)
        page.fill("#new-step-title", title)
        with page.expect_response(lambda r: r.url.endswith("/edit/")):
            page.click("text=Add step")
        expect(page.locator(f"#step-{key}")).to_be_visible()
    # Unreachable steps are flagged on their cards while the flow is incomplete.
    expect(page.locator("#step-close .problems")).to_contain_text("No way forward")
    page.screenshot(path=str(SCREENSHOTS / "script-designer-problems.png"))

    def edited(click: Any) -> None:
        with page.expect_response(lambda r: r.url.endswith("/edit/")):
            click()
        page.wait_for_timeout(100)  # htmx settles the swap after the response

    def save(key: str, **fields: Any) -> None:
        card = page.locator(f"#step-{key}")
        card.locator(f"#x-{key}").fill(fields["text"])
        if "next" in fields:
            card.locator(f"#n-{key}").select_option(fields["next"])
        if fields.get("end"):
            card.locator("input[name=end]").check()
        edited(card.locator("text=Save step").click)
        expect(page.locator(f"#x-{key}")).to_have_value(fields["text"])

    def add(key: str, what: str) -> Any:
        """Open the step's "Add a …" form and return it."""
        card = page.locator(f"#step-{key}")
        card.locator(
            ".designer-add summary", has_text=f"Add a{'n' if what == 'action' else ''} {what}"
        ).click()
        return card.locator(f"form[aria-label='New {what} of {key}']")

    save("start", text='Hello {{ customer.first_name | "there" }}, thanks for calling {{ call.queue }}.',
         next="close")  # fmt: skip
    # The question, its branch and an action through labelled fields, as an author would: no JSON.
    form = add("start", "question")
    form.locator("#start-qnew-label").fill("Are you moving soon?")
    form.locator("#start-qnew-key").fill("moving")
    form.locator("#start-qnew-type").select_option("yes_no")
    expect(form.locator("#start-qnew-choices")).to_be_hidden()  # options only for the choice types
    form.locator("input[name=q_required]").check()
    edited(form.locator("text=Add question").click)
    form = add("start", "branch")
    expect(form.locator("#start-bnew-cel")).to_be_hidden()
    form.locator("#start-bnew-match").select_option(label="Are you moving soon? is yes")
    form.locator("#start-bnew-to").select_option("moving")
    form.locator("#start-bnew-label").fill("moving")
    edited(form.locator("text=Add branch").click)
    expect(page.locator("#diagram text.edge-label", has_text="moving")).to_be_visible()
    form = add("start", "action")
    form.locator("#start-anew-kind").select_option(label="Record a disposition")
    edited(form.locator("text=Add action").click)  # the code is missing: refused, naming the field
    expect(page.locator("#start-anew-errors")).to_contain_text("set “Disposition code” (code)")
    form.locator("[name=a_record_disposition__code]").fill("resolved")
    edited(form.locator("text=Add action").click)
    expect(page.locator("#step-start .designer-item")).to_have_count(3)
    # A CEL condition is checked on save, the error placed in the condition.
    form = add("moving", "branch")
    form.locator("input[value=cel]").check()
    form.locator("#moving-bnew-cel").fill("answers.moving == ")
    form.locator("#moving-bnew-to").select_option("close")
    edited(form.locator("text=Add branch").click)
    expect(page.locator("#moving-bnew-errors")).to_contain_text("at column 18 (answers.moving ==▸)")
    expect(form.locator("#moving-bnew-cel")).to_have_value("answers.moving == ")  # kept for fixing
    for item in page.locator("#step-start .designer-item").all():
        item.locator("summary").click()  # each item's own form, filled in
    page.locator("#step-start").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "script-designer-step.png"))
    page.locator("#step-start").screenshot(path=str(SCREENSHOTS / "script-designer-step-card.png"))
    page.locator("#step-moving").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "script-designer-cel-error.png"))
    save("moving", text="Where are you moving to, {{ customer.first_name }}?", next="close")
    form = add("moving", "question")
    form.locator("#moving-qnew-label").fill("New city")
    form.locator("#moving-qnew-key").fill("new_city")
    form.locator("#moving-qnew-type").select_option("text")
    form.locator("input[name=q_required]").check()
    form.locator("#moving-qnew-minl").fill("2")
    edited(form.locator("text=Add question").click)
    save("close", text="Thank you, goodbye.", end=True)
    expect(page.locator("#flow-h")).to_contain_text("Ready to publish")
    page.screenshot(path=str(SCREENSHOTS / "script-designer.png"), full_page=True)
    page.locator("#diagram").screenshot(path=str(SCREENSHOTS / "script-diagram.png"))
    page.click("#publish")
    expect(page.locator(".alert-hint")).to_contain_text("Published as v1")
    page.goto(f"{origin}/scripts/assignments/")
    page.select_option("#as-queue", label="Customer service (service)")
    page.select_option("#as-script", label="Moving check")
    page.click("button:has-text('Assign')")
    expect(page.locator("table.grid")).to_contain_text("Moving check")
    page.screenshot(path=str(SCREENSHOTS / "script-assignments.png"))


@pytest.mark.usefixtures("alice", "bob", "ivr")
def test_a_supervisor_builds_a_script_and_an_agent_runs_it_on_a_call(
    uvicorn_server: Server, dave_customer: Customer, frank: User
) -> None:
    alice = User.objects.get(username="alice")
    queue = Queue.objects.create(code="service", name="Customer service")
    Disposition.objects.create(code="resolved", label="Resolved")
    agents_services.agent_for(user=alice).queues.set([queue])
    _, token = services.api_token_create(user=frank, name="pbx bridge")
    from playwright.sync_api import expect

    origin = uvicorn_server.origin
    with chromium() as browser:
        supervisor = browser.sign_in(uvicorn_server, "bob")
        _design(supervisor, origin, SCREENSHOTS)

        page = browser.sign_in(uvicorn_server, "alice")
        presence = page.locator("#presence")
        expect(presence).to_have_attribute("data-state", "offline", timeout=10_000)
        page.locator("body").click()
        page.keyboard.press("a")
        expect(presence).to_have_attribute("data-state", "available")
        _post_call(uvicorn_server, token, "pbx-script-1")
        page.wait_for_url(f"{origin}/customer/{dave_customer.pk}/", timeout=10_000)
        expect(page.locator("#callbar")).to_have_attribute("data-state", "ringing", timeout=10_000)
        page.locator("body").click()
        page.keyboard.press("Enter")
        expect(presence).to_have_attribute("data-state", "on_call")

        # Answering the call started its queue's script: no key pressed.
        panel = page.locator("#script-panel")
        expect(panel.locator(".script-text")).to_have_text("Hello Dave, thanks for calling Customer service.")
        # Next without the required answer: refused, named on the question.
        page.locator("body").click()
        page.keyboard.press("j")
        expect(panel.locator(".field-error-text")).to_contain_text("“Are you moving soon?” needs an answer")
        panel.locator("label", has_text="Yes").click()
        expect(panel.locator("#q-moving-msg")).to_have_text("Saved")
        page.locator("body").click()
        page.keyboard.press("j")
        # The branch followed the answer.
        expect(panel.locator(".script-step-title")).to_have_text("Moving home")
        expect(panel.locator(".script-text")).to_have_text("Where are you moving to, Dave?")
        page.reload()  # the run survives a reload
        expect(panel.locator(".script-step-title")).to_have_text("Moving home")
        panel.locator("#q-new_city").fill("Denver")
        panel.screenshot(path=str(SCREENSHOTS / "script-panel.png"))
        page.screenshot(path=str(SCREENSHOTS / "script-panel-screen.png"))
        panel.locator("#q-new_city").press("Control+Enter")
        expect(panel.locator(".script-done")).to_contain_text("Script complete")

        page.locator("body").click()
        page.keyboard.press("x")
        expect(presence).to_have_attribute("data-state", "wrap_up")
        page.locator("body").click()
        page.keyboard.press("w")
        expect(presence).to_have_attribute("data-state", "available")
        answers = page.locator(".script-answers").first
        expect(answers).to_be_visible(timeout=10_000)
        answers.locator("summary").click()
        expect(answers).to_contain_text("New city")
        expect(answers).to_contain_text("Denver")
        page.screenshot(path=str(SCREENSHOTS / "script-history.png"), full_page=True)

        supervisor.goto(f"{origin}/scripts/")
        supervisor.click("text=Moving check")
        supervisor.click("a:has-text('Analytics')")
        expect(supervisor.locator("[data-runs]")).to_have_text("1")
        supervisor.screenshot(path=str(SCREENSHOTS / "script-analytics.png"), full_page=True)
        # A new draft compared with the published version, side by side.
        supervisor.go_back()
        supervisor.locator("#x-start").fill("Good morning {{ customer.first_name }}.")
        with supervisor.expect_response(lambda r: r.url.endswith("/edit/")):
            supervisor.locator("#step-start").locator("text=Save step").click()
        supervisor.click("text=Compare versions side by side")
        expect(supervisor.locator("tr.diff-changed")).to_contain_text("changed: text")
        supervisor.screenshot(path=str(SCREENSHOTS / "script-compare.png"), full_page=True)
        supervisor.goto(f"{origin}/scripts/")
        supervisor.screenshot(path=str(SCREENSHOTS / "script-list.png"))
    run = Run.objects.get()
    assert (run.status, run.path) == (RunStatus.COMPLETED, ["start", "moving", "close"])
    entry = dave_customer.interactions.get()
    assert entry.script_run_id == run.pk and run.interaction_id == entry.pk
