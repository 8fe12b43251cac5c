"""The supervisors' pages: design a draft, publish, clone, retire, compare,
assign, preview and read the analytics."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from agents.models import Queue
from crm.models import Customer, User
from scripting import services
from scripting.models import Assignment, Run, RunStatus, Script, ScriptVersion, VersionStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def desk(bob: User) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def edit(client: Client, script: Script, **data: str) -> str:
    return client.post(
        reverse("script-designer-edit", args=[script.pk]), data, HTTP_HX_REQUEST="true"
    ).content.decode()


def test_a_supervisor_designs_a_branching_script_and_publishes_it(desk: Client) -> None:
    response = desk.post(reverse("script-new"), {"code": "moving", "name": "Moving check"})
    script = Script.objects.get(code="moving")
    assert response["Location"] == reverse("script-designer", args=[script.pk])
    edit(desk, script, op="add", new_key="congrats", new_title="Congratulate")
    html = edit(desk, script, op="add", new_key="bye", new_title="Goodbye")
    assert "Unreachable: no step leads here from the first step." in html  # shown on its step, live
    edit(
        desk,
        script,
        op="save",
        step="start",
        title="Greeting",
        text="Hi {{ customer.first_name }}",
        next="bye",
    )
    edit(desk, script, op="question", step="start", q_key="moving", q_label="Moving?", q_type="yes_no",
         q_required="on")  # fmt: skip
    html = edit(desk, script, op="branch", step="start", b_kind="match", b_match="moving|yes",
                b_to="congrats", b_label="yes")  # fmt: skip
    assert 'data-step="congrats"' in html and ">yes</text>" in html  # the diagram's box and labelled arrow
    assert '<option value="moving|yes" selected>Moving? is yes</option>' in html  # the form reads it back
    edit(desk, script, op="save", step="congrats", title="Congratulate", text="Congratulations!", next="bye")
    edit(desk, script, op="save", step="bye", title="Goodbye", text="Bye", end="on", next="")
    html = edit(desk, script, op="action", step="bye", a_action="record_disposition")
    assert "Record a disposition: set “Disposition code” (code)." in html
    edit(
        desk, script, op="action", step="bye", a_action="record_disposition", a_record_disposition__code="ok"
    )
    assert "Ready to publish" in edit(desk, script, op="down", step="congrats")
    html = desk.post(reverse("script-publish", args=[script.pk])).content.decode()
    assert "Published as v1" in html
    version = ScriptVersion.objects.get(script=script, status=VersionStatus.PUBLISHED)
    assert version.number == 1
    assert version.graph["steps"][0]["branches"] == [
        {"kind": "match", "question": "moving", "value": True, "to": "congrats", "label": "yes"}
    ]


def test_publishing_a_broken_draft_lists_the_problems_by_step(desk: Client, bob: User) -> None:
    script = services.script_create(code="broken", name="Broken", actor=bob)
    response = desk.post(reverse("script-publish", args=[script.pk]))
    assert response.status_code == 400
    html = response.content.decode()
    assert (
        "Not published" in html
        and "No step ends the script" in html
        and "Step “start”: No way forward" in html
    )


def test_clone_retire_compare_assign_and_preview(
    desk: Client, published: ScriptVersion, dave_customer: Customer
) -> None:
    script_id = published.script_id
    desk.post(reverse("script-clone", args=[script_id]), {"code": "svc-copy", "name": "Copy"})
    assert Script.objects.get(code="svc-copy").versions.get().status == VersionStatus.DRAFT
    services.draft_edit(script_id=script_id, change=lambda g: g["steps"][0].update(title="Welcome"))
    html = desk.get(reverse("script-compare", args=[script_id])).content.decode()
    assert "changed: title" in html and "Welcome" in html and "Greeting" in html
    desk.post(reverse("script-version-retire", args=[published.pk]))
    published.refresh_from_db()
    assert published.status == VersionStatus.RETIRED
    Queue.objects.create(code="sales", name="Sales")
    html = desk.get(reverse("script-assignments")).content.decode()
    assert '<option value="sales">Sales (sales)</option>' in html  # the queues, as a choice
    wanted = {"queue_code": "sales", "campaign_code": "", "direction": "outbound", "script": script_id}
    desk.post(reverse("script-assignments"), wanted)
    assert Assignment.objects.filter(queue_code="sales", direction="outbound").exists()
    response = desk.post(reverse("script-assignments"), {**wanted, "queue_code": "slaes"})
    assert response.status_code == 400
    assert "There is no queue “slaes”: choose one of service, sales." in response.content.decode()
    assert not Assignment.objects.filter(queue_code="slaes").exists()
    html = desk.get(
        reverse("script-preview", args=[script_id]), {"customer": dave_customer.number}
    ).content.decode()
    assert "Hello Dave, thanks for calling (the call&#x27;s queue)." in html
    assert desk.get(reverse("script-preview", args=[script_id]), {"customer": "C-9999999"}).status_code == 404


def test_the_analytics_count_runs_completion_drop_off_and_answers(
    desk: Client, published: ScriptVersion, alice: User, dave_customer: Customer, erin_customer: Customer
) -> None:
    services.assignment_set(script_id=published.script_id)
    done = services.run_start(customer_id=dave_customer.pk, agent=alice)
    done = services.run_next(run_id=done.pk, agent=alice, answers={"moving": "no"})
    services.run_next(run_id=done.pk, agent=alice, answers={"reason": "card"})
    dropped = services.run_start(customer_id=erin_customer.pk, agent=alice)
    services.run_next(run_id=dropped.pk, agent=alice, answers={"moving": "yes"})
    Run.objects.filter(pk=dropped.pk).update(status=RunStatus.ABANDONED)
    html = desk.get(reverse("script-analytics", args=[published.pk])).content.decode()
    assert '<span class="tile-n" data-runs>2</span>' in html
    assert "50%" in html  # one of two finished runs completed
    assert "1 dropped" in html
    assert "greet → reason → close" in html and '<span class="dispo">resolved</span> 1' in html


def test_questions_branches_and_actions_are_built_from_labelled_fields(desk: Client, bob: User) -> None:
    script = services.script_create(code="forms", name="Forms", actor=bob)
    edit(desk, script, op="add", new_key="done", new_title="Done")
    edit(desk, script, op="question", step="start", q_key="reason", q_label="Reason", q_type="single",
         q_choices="card\n billing \n\ncard", q_required="on", q_min="5")  # fmt: skip
    edit(desk, script, op="question", step="start", q_key="amount", q_label="Amount", q_type="number",
         q_min="0", q_max="2500.5", q_pattern="ignored")  # fmt: skip
    edit(desk, script, op="question", step="start", q_key="when", q_label="Moving date", q_type="date",
         q_min_date="2026-01-01")  # fmt: skip
    edit(desk, script, op="question", step="start", q_key="city", q_label="City", q_type="text",
         q_min_length="2", q_max_length="40", q_pattern="[A-Za-z ]+")  # fmt: skip
    html = edit(desk, script, op="question", step="start", q_key="bad", q_type="number", q_min="ten")
    assert "Question “bad”: Min must be a number, e.g. 10; “ten” is not." in html
    html = edit(desk, script, op="question", step="start", q_key="bad", q_type="text", q_pattern="([")
    assert "Question “bad”: the pattern is not a valid regular expression" in html
    html = edit(desk, script, op="question", step="start", q_key="bad", q_type="single", q_choices=" ")
    assert "Question “bad”: list its options, one per line." in html
    html = edit(desk, script, op="question", step="start", q_key="amount", q_type="text")
    assert "There is already a question “amount”" in html
    html = edit(desk, script, op="branch", step="start", b_kind="match", b_match="amount|", b_value="lots",
                b_to="done")  # fmt: skip
    assert "“Amount”: “lots” is not a number" in html
    edit(desk, script, op="branch", step="start", b_kind="match", b_match="reason|billing", b_to="done",
         b_label="billing", b_condition="ignored")  # fmt: skip
    html = edit(
        desk, script, op="branch", step="start", b_kind="cel", b_condition="answers.reason == ", b_to="done"
    )
    assert (
        "Branch condition: The condition does not compile at column 18 (answers.reason ==▸): "
        "Syntax error: mismatched input" in html
    )
    html = edit(
        desk, script, op="branch", step="start", b_kind="cel", b_condition="answers.nope", b_to="done"
    )
    assert "answers.nope names no question of this script" in html
    edit(
        desk,
        script,
        op="branch",
        step="start",
        b_kind="cel",
        b_condition='answers.reason == "card"',
        b_to="done",
    )
    html = edit(desk, script, op="action", step="done", a_action="schedule_callback",
                a_schedule_callback__in_hours="soon")  # fmt: skip
    assert "Schedule a callback: “Call back in (hours)” must be a number" in html
    html = edit(desk, script, op="action", step="done", a_action="update_customer_field",
                a_update_customer_field__field="language")  # fmt: skip
    assert "set “Answer to store” (question) or “Fixed value” (value)." in html
    edit(desk, script, op="action", step="done", a_action="update_customer_field",
         a_update_customer_field__field="language", a_update_customer_field__value="fr",
         a_record_disposition__code="not this kind's")  # fmt: skip
    edit(desk, script, op="action", step="done", a_action="create_task", a_create_task__title="Send the form",
         a_create_task__kind="follow_up", a_create_task__in_hours="24")  # fmt: skip
    draft = services.draft_for(script_id=script.pk)
    start, done = draft.graph["steps"]
    assert start["questions"] == [
        {"key": "reason", "label": "Reason", "type": "single", "required": True,
         "choices": ["card", "billing"]},
        {"key": "amount", "label": "Amount", "type": "number", "required": False, "min": 0, "max": 2500.5},
        {"key": "when", "label": "Moving date", "type": "date", "required": False, "min": "2026-01-01"},
        {"key": "city", "label": "City", "type": "text", "required": False, "min_length": 2, "max_length": 40,
         "pattern": "[A-Za-z ]+"},
    ]  # fmt: skip
    assert start["branches"] == [
        {"kind": "match", "question": "reason", "value": "billing", "to": "done", "label": "billing"},
        {"kind": "cel", "condition": 'answers.reason == "card"', "to": "done", "label": ""},
    ]
    assert done["actions"] == [
        {"action": "update_customer_field", "settings": {"field": "language", "value": "fr"}},
        {
            "action": "create_task",
            "settings": {"title": "Send the form", "kind": "follow_up", "in_hours": 24},
        },
    ]
    # An item is edited in place from its own form.
    edit(desk, script, op="question", step="start", index="1", q_key="amount", q_label="Amount ($)",
         q_type="number", q_max="900")  # fmt: skip
    edit(
        desk, script, op="branch", step="start", index="0", b_kind="match", b_match="reason|card", b_to="done"
    )
    start = services.draft_for(script_id=script.pk).graph["steps"][0]
    assert start["questions"][1] == {
        "key": "amount", "label": "Amount ($)", "type": "number", "required": False, "max": 900
    }  # fmt: skip
    assert start["branches"][0]["value"] == "card"


def test_a_refused_edit_answers_on_the_step_and_keeps_the_form(desk: Client, bob: User) -> None:
    script = services.script_create(code="keep", name="Keep", actor=bob)
    url = reverse("script-designer-edit", args=[script.pk])
    response = desk.post(
        url, {"op": "action", "step": "start", "a_action": "raise_event"}, HTTP_HX_REQUEST="true"
    )
    assert response["HX-Retarget"] == "#errors-start" and response["HX-Reswap"] == "innerHTML"
    form = {"op": "action", "step": "start", "a_action": "raise_event", "errors_to": "start-a0"}
    assert desk.post(url, form, HTTP_HX_REQUEST="true")["HX-Retarget"] == "#start-a0-errors"
    form["errors_to"] = "other-a0"  # a form of another step: the step's own place
    assert desk.post(url, form, HTTP_HX_REQUEST="true")["HX-Retarget"] == "#errors-start"
    assert "Raise a business event with the answers: set “Event type” (type)." in response.content.decode()
    response = desk.post(url, {"op": "add", "new_key": "Bad Key"}, HTTP_HX_REQUEST="true")
    assert response["HX-Retarget"] == "#errors-designer"
    assert services.draft_for(script_id=script.pk).graph["steps"][0]["actions"] == []


def test_an_item_of_a_step_is_removed_from_its_line(desk: Client, published: ScriptVersion) -> None:
    script = published.script
    html = desk.get(reverse("script-designer", args=[script.pk])).content.decode()
    assert "moving = yes → moving" in html and "Are you moving soon? (yes / no, required)" in html
    edit(desk, script, op="remove", step="greet", part="branches", index="0")
    draft = services.draft_for(script_id=script.pk)
    assert draft.graph["steps"][0]["branches"] == [] and published.graph["steps"][0]["branches"]
    html = edit(desk, script, op="remove", step="greet", part="branches", index="0")
    assert "That item is no longer there" in html
