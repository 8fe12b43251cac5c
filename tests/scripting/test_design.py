"""The supervisors' pages: design a draft, publish, clone, retire, compare,
assign, preview and read the analytics."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

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
    questions = json.dumps([{"key": "moving", "label": "Moving?", "type": "yes_no", "required": True}])
    branches = json.dumps(
        [{"kind": "match", "question": "moving", "value": True, "to": "congrats", "label": "yes"}]
    )
    html = edit(desk, script, op="save", step="start", title="Greeting", text="Hi {{ customer.first_name }}",
                next="bye", questions=questions, branches=branches, actions="[]")  # fmt: skip
    assert 'data-step="congrats"' in html and ">yes</text>" in html  # the diagram's box and labelled arrow
    edit(desk, script, op="save", step="congrats", title="Congratulate", text="Congratulations!", next="bye",
         questions="[]", branches="[]", actions="[]")  # fmt: skip
    html = edit(desk, script, op="save", step="bye", title="Goodbye", text="Bye", end="on", next="",
                questions="[]", branches="[]", actions="[{")  # fmt: skip
    assert "Actions: not valid JSON" in html
    edit(desk, script, op="save", step="bye", title="Goodbye", text="Bye", end="on", next="",
         questions="[]", branches="[]",
         actions='[{"action": "record_disposition", "settings": {"code": "ok"}}]')  # fmt: skip
    assert "Ready to publish" in edit(desk, script, op="down", step="congrats")
    html = desk.post(reverse("script-publish", args=[script.pk])).content.decode()
    assert "Published as v1" in html
    assert ScriptVersion.objects.get(script=script, status=VersionStatus.PUBLISHED).number == 1


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
    wanted = {"queue_code": "sales", "campaign_code": "", "direction": "outbound", "script": script_id}
    desk.post(reverse("script-assignments"), wanted)
    assert Assignment.objects.filter(queue_code="sales", direction="outbound").exists()
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


def test_questions_branches_and_actions_are_added_from_small_forms(desk: Client, bob: User) -> None:
    script = services.script_create(code="forms", name="Forms", actor=bob)
    edit(desk, script, op="add", new_key="done", new_title="Done")
    edit(desk, script, op="add_question", step="start", q_key="reason", q_label="Reason", q_type="single",
         q_choices="card, billing", q_required="on")  # fmt: skip
    html = edit(desk, script, op="add_branch", step="start", b_question="reason", b_value="bill", b_to="done")
    assert "The value to match: “Reason”: “bill” is not a choice" in html
    edit(desk, script, op="add_branch", step="start", b_question="reason", b_value="billing", b_to="done",
         b_label="billing")  # fmt: skip
    edit(desk, script, op="add_branch", step="start", b_condition='answers.reason == "card"', b_to="done")
    edit(
        desk, script, op="add_action", step="done", a_action="record_disposition", a_settings='{"code": "ok"}'
    )
    draft = services.draft_for(script_id=script.pk)
    start, done = draft.graph["steps"]
    assert start["questions"] == [{"key": "reason", "label": "Reason", "type": "single", "required": True,
                                   "choices": ["card", "billing"]}]  # fmt: skip
    assert [b["kind"] for b in start["branches"]] == ["match", "cel"]
    assert start["branches"][0]["value"] == "billing"
    assert done["actions"] == [{"action": "record_disposition", "settings": {"code": "ok"}}]


def test_an_item_of_a_step_is_removed_from_its_line(desk: Client, published: ScriptVersion) -> None:
    script = published.script
    html = desk.get(reverse("script-designer", args=[script.pk])).content.decode()
    assert "moving = yes → moving" in html and "Are you moving soon? (yes_no, required)" in html
    edit(desk, script, op="remove", step="greet", part="branches", index="0")
    draft = services.draft_for(script_id=script.pk)
    assert draft.graph["steps"][0]["branches"] == [] and published.graph["steps"][0]["branches"]
    html = edit(desk, script, op="remove", step="greet", part="branches", index="0")
    assert "That item is no longer there" in html
