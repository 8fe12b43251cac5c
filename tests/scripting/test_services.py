"""Authoring (publish, clone, retire, compare, assignments) and the runner
(start, answers, branches, back, actions, the call's contact-history entry)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, InternalError, connection, transaction
from django.utils import timezone

from agents import services as agents_services
from agents.models import Disposition, Queue
from crm.exceptions import StaleVersion
from crm.models import BusinessEvent, Customer, SourceSystem, Task, User
from scripting import demo, selectors, services
from scripting.models import Answer, Assignment, Run, RunStatus, ScriptVersion, VersionStatus
from tests.scripting.conftest import graph

pytestmark = pytest.mark.django_db

ON_SERVICE_CALL = {"queue_code": "service", "queue": "Customer service", "direction": "inbound"}


def start(agent: User, customer: Customer) -> Run:
    return services.run_start(customer_id=customer.pk, agent=agent, call=ON_SERVICE_CALL)


# --- Versions ---------------------------------------------------------------------------------------


def test_a_published_version_cannot_be_changed_even_by_raw_sql(published: ScriptVersion) -> None:
    with pytest.raises((IntegrityError, InternalError), match="is published"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE scripting_scriptversion SET graph = jsonb_set(graph, '{start}', '\"close\"')"
                " WHERE id = %s",
                [published.pk],
            )
    with pytest.raises((IntegrityError, InternalError), match="cannot be deleted"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM scripting_scriptversion WHERE id = %s", [published.pk])
    published.refresh_from_db()
    assert published.graph["start"] == "greet"


def test_retiring_is_the_only_change_a_published_version_takes(published: ScriptVersion) -> None:
    services.version_retire(version_id=published.pk)
    published.refresh_from_db()
    assert published.status == VersionStatus.RETIRED
    with pytest.raises((IntegrityError, InternalError)), transaction.atomic():
        ScriptVersion.objects.filter(pk=published.pk).update(status=VersionStatus.PUBLISHED)


def test_a_draft_that_fails_validation_cannot_be_published(bob: User) -> None:
    script = services.script_create(code="broken", name="Broken", actor=bob)
    g = graph()
    g["steps"][4]["end"] = False  # no end step, and "close" has no way forward
    services.draft_save(script_id=script.pk, graph=g)
    with pytest.raises(ValidationError) as caught:
        services.version_publish(script_id=script.pk, actor=bob)
    assert "close" in caught.value.message_dict and "script" in caught.value.message_dict
    assert not ScriptVersion.objects.filter(script=script).exclude(status=VersionStatus.DRAFT).exists()


def test_editing_a_published_script_works_on_a_new_draft_and_publishes_v2(
    published: ScriptVersion, bob: User
) -> None:
    def retitle(g: dict) -> None:
        g["steps"][0]["title"] = "Hello"

    draft = services.draft_edit(script_id=published.script_id, change=retitle)
    assert draft.pk != published.pk and draft.status == VersionStatus.DRAFT
    v2 = services.version_publish(script_id=published.script_id, actor=bob)
    assert v2.number == 2
    published.refresh_from_db()
    assert published.graph["steps"][0]["title"] == "Greeting"
    (diff,) = [d for d in services.versions_compare(old=published.graph, new=v2.graph) if d.change != "same"]
    assert (diff.key, diff.change, diff.fields) == ("greet", "changed", ("title",))


def test_a_clone_starts_as_a_draft_copy(published: ScriptVersion, bob: User) -> None:
    clone = services.script_clone(
        script_id=published.script_id, code="service-call-2", name="Copy", actor=bob
    )
    (draft,) = clone.versions.all()
    assert draft.status == VersionStatus.DRAFT and draft.graph == published.graph


# --- The runner ------------------------------------------------------------------------------------


def test_the_assigned_version_starts_and_a_reload_resumes_it(
    published: ScriptVersion, alice: User, dave_customer: Customer
) -> None:
    run = start(alice, dave_customer)
    assert (run.version_id, run.current_step, run.path) == (published.pk, "greet", ["greet"])
    assert start(alice, dave_customer).pk == run.pk


def test_no_assigned_script_is_a_clear_error(
    published: ScriptVersion, alice: User, dave_customer: Customer
) -> None:
    with pytest.raises(ValidationError, match="No published script is assigned to queue “sales”"):
        services.run_start(customer_id=dave_customer.pk, agent=alice, call={"queue_code": "sales"})


def test_a_required_answer_is_enforced_and_a_wrong_type_names_the_question(
    published: ScriptVersion, alice: User, dave_customer: Customer
) -> None:
    run = start(alice, dave_customer)
    with pytest.raises(ValidationError, match="needs an answer"):
        services.run_next(run_id=run.pk, agent=alice, answers={})
    with pytest.raises(ValidationError) as caught:
        services.run_answer(run_id=run.pk, agent=alice, question="moving", raw="perhaps")
    assert caught.value.message_dict["moving"] == ["“Are you moving soon?”: answer yes or no."]
    run.refresh_from_db()
    assert run.current_step == "greet"


def test_the_branch_follows_the_answer_and_back_keeps_it(
    published: ScriptVersion, alice: User, dave_customer: Customer
) -> None:
    run = start(alice, dave_customer)
    services.run_answer(run_id=run.pk, agent=alice, question="moving", raw="yes")
    run = services.run_next(run_id=run.pk, agent=alice, answers={})
    assert run.current_step == "moving"
    run = services.run_back(run_id=run.pk, agent=alice)
    assert (run.current_step, run.path) == ("greet", ["greet"])
    assert Answer.objects.get(run=run, question="moving").value is True
    run = services.run_next(run_id=run.pk, agent=alice, answers={"moving": "no"})
    assert run.current_step == "reason"


def test_a_cel_branch_reads_answers_and_customer_fields(
    published: ScriptVersion, alice: User, dave_customer: Customer, erin_customer: Customer
) -> None:
    for customer, expected in ((dave_customer, "billing"), (erin_customer, "close")):  # erin is platinum
        run = start(alice, customer)
        run = services.run_next(run_id=run.pk, agent=alice, answers={"moving": "no"})
        run = services.run_next(run_id=run.pk, agent=alice, answers={"reason": "billing"})
        assert run.current_step == expected


def test_an_end_step_closes_the_run_and_its_actions_run(
    published: ScriptVersion, alice: User, dave_customer: Customer
) -> None:
    run = start(alice, dave_customer)
    run = services.run_next(run_id=run.pk, agent=alice, answers={"moving": "no"})
    run = services.run_next(run_id=run.pk, agent=alice, answers={"reason": "billing"})
    run = services.run_next(run_id=run.pk, agent=alice, answers={"amount": "120.50"})
    assert (run.status, run.disposition, run.path) == (RunStatus.COMPLETED, "resolved",
                                                       ["greet", "reason", "billing", "close"])  # fmt: skip
    task = Task.objects.get(customer=dave_customer)
    assert (task.title, task.origin) == ("Check the disputed bill", f"script:{run.pk}")
    # Without a call, the run is its own contact-history entry.
    entry = dave_customer.interactions.get()
    assert (entry.script_run_id, entry.disposition) == (run.pk, "resolved")
    with pytest.raises(ValidationError, match="has ended"):
        services.run_back(run_id=run.pk, agent=alice)


def test_raising_an_event_carries_the_answers(
    published: ScriptVersion, alice: User, dave_customer: Customer
) -> None:
    run = start(alice, dave_customer)
    run = services.run_next(run_id=run.pk, agent=alice, answers={"moving": "yes"})
    services.run_next(run_id=run.pk, agent=alice, answers={"new_city": "Denver"})
    event = BusinessEvent.objects.get(type="script.answered")
    assert event.payload == {"moving": True, "new_city": "Denver", "script": "service-call", "version": 1,
                             "run_id": run.pk, "step": "moving"}  # fmt: skip
    assert event.actor_id == alice.pk


def test_a_customer_field_is_updated_with_the_version_check(
    bob: User, alice: User, dave_customer: Customer
) -> None:
    script = services.script_create(code="lang", name="Language", actor=bob)
    g = {"start": "ask", "steps": [
        {"key": "ask", "title": "Ask", "text": "", "end": False, "next": "done", "branches": [],
         "questions": [{"key": "lang", "label": "Language", "type": "single", "choices": ["fr", "de"]}],
         "actions": [{"action": "update_customer_field",
                      "settings": {"field": "language", "question": "lang"}}]},
        {"key": "done", "title": "Done", "text": "", "end": True, "next": "", "branches": [], "questions": [],
         "actions": []}]}  # fmt: skip
    services.draft_save(script_id=script.pk, graph=g)
    services.version_publish(script_id=script.pk, actor=bob)
    services.assignment_set(script_id=script.pk)
    run = services.run_start(customer_id=dave_customer.pk, agent=alice)
    with pytest.raises(StaleVersion):  # the agent's screen showed an older version
        services.run_next(run_id=run.pk, agent=alice, answers={"lang": "fr"}, customer_version=0)
    assert Answer.objects.get(run=run).value == "fr"  # the answer given is kept
    services.run_next(run_id=run.pk, agent=alice, answers={}, customer_version=dave_customer.version)
    dave_customer.refresh_from_db()
    assert dave_customer.language == "fr"


def test_a_retired_version_finishes_the_runs_on_it_and_new_runs_take_the_next(
    published: ScriptVersion, alice: User, bob: User, dave_customer: Customer, erin_customer: Customer
) -> None:
    run = start(alice, dave_customer)
    services.draft_edit(script_id=published.script_id, change=lambda g: g["steps"][0].update(title="v2"))
    v2 = services.version_publish(script_id=published.script_id, actor=bob)
    services.version_retire(version_id=published.pk)
    run = services.run_next(run_id=run.pk, agent=alice, answers={"moving": "no"})
    assert (run.version_id, run.current_step) == (published.pk, "reason")
    assert start(alice, erin_customer).version_id == v2.pk


def test_wrap_up_links_the_run_to_the_calls_history_entry(
    published: ScriptVersion, alice: User, ivr: SourceSystem, dave_customer: Customer
) -> None:
    queue = Queue.objects.get(code="service")  # made with the published script's assignment
    Disposition.objects.create(code="resolved", label="Resolved")
    agents_services.agent_for(user=alice).queues.set([queue])
    agents_services.agent_set_state(user=alice, state="available")
    call, _ = agents_services.call_arrive(
        source=ivr, telephony_id="c1", ani="+12025550143", queue_code="service"
    )
    agents_services.desk_call_control(user=alice, call_id=call.pk, kind="answered")
    facts = services.call_facts_for(alice)
    assert facts["call_id"] == call.pk and facts["queue_code"] == "service"
    run = services.run_start(customer_id=dave_customer.pk, agent=alice, call=facts)
    services.run_next(run_id=run.pk, agent=alice, answers={"moving": "yes"})
    agents_services.desk_call_control(user=alice, call_id=call.pk, kind="ended")
    agents_services.call_wrap_up(user=alice, disposition="resolved")
    entry = dave_customer.interactions.get()
    run.refresh_from_db()
    assert entry.script_run_id == run.pk and run.interaction_id == entry.pk
    assert run.status == RunStatus.ABANDONED  # dropped at "moving", counted as such


def test_the_demo_script_is_seeded_once_and_runs_on_any_queue(alice: User, dave_customer: Customer) -> None:
    assert demo.seed() == ["  Call script “Service call” (published, runs on every queue)"]
    assert demo.seed() == []
    run = services.run_start(customer_id=dave_customer.pk, agent=alice, call={"queue_code": "sales"})
    assert run.version.script.code == demo.CODE


def test_the_demo_script_moves_from_every_queue_to_the_demo_queues_once_they_exist() -> None:
    assert demo.seed() == ["  Call script “Service call” (published, runs on every queue)"]
    Queue.objects.create(code="service", name="Customer service")
    Queue.objects.create(code="sales", name="Sales")
    assert demo.seed() == ["  Call script “Service call” (published, runs on queues service, sales)"]
    assert sorted(Assignment.objects.values_list("queue_code", flat=True)) == ["sales", "service"]
    assert demo.seed() == []


def test_the_demo_script_is_assigned_to_the_demo_queues_when_they_exist() -> None:
    Queue.objects.create(code="sales", name="Sales")
    Queue.objects.create(code="billing", name="Billing")  # not a demo queue: left alone
    assert demo.seed() == ["  Call script “Service call” (published, runs on queue sales)"]
    assert sorted(Assignment.objects.values_list("queue_code", flat=True)) == ["sales"]
    Queue.objects.create(code="service", name="Customer service")
    assert demo.seed() == ["  Call script “Service call” (published, runs on queues service, sales)"]
    assert sorted(Assignment.objects.values_list("queue_code", flat=True)) == ["sales", "service"]


def test_the_offer_on_screen_is_a_merge_field_and_a_yes_accepts_it(
    bob: User, alice: User, dave_customer: Customer
) -> None:
    from policies.models import Offer, OfferPresentation

    offer = Offer.objects.create(code="home-mortgage", name="A mortgage for your new home",
                                 channels=["agent_screen"], value=500)  # fmt: skip
    presented = OfferPresentation.objects.create(
        offer=offer, customer=dave_customer, channel="agent_screen", sequence=1,
        expires_at=timezone.now() + dt.timedelta(hours=1),
    )  # fmt: skip
    script = services.script_create(code="offer", name="Offer", actor=bob)
    g = {"start": "pitch", "steps": [
        {"key": "pitch", "title": "Pitch", "text": 'May I tell you about {{ offer.name | "our offers" }}?',
         "end": False, "next": "done", "branches": [],
         "questions": [{"key": "wants", "label": "Interested?", "type": "yes_no", "required": True}],
         "actions": [{"action": "record_offer_response",
                      "settings": {"offer": "home-mortgage", "question": "wants"}},
                     {"action": "add_do_not_call", "settings": {}}]},
        {"key": "done", "title": "Done", "text": "", "end": True, "next": "", "branches": [], "questions": [],
         "actions": []}]}  # fmt: skip
    services.draft_save(script_id=script.pk, graph=g)
    services.version_publish(script_id=script.pk, actor=bob)
    services.assignment_set(script_id=script.pk)
    run = services.run_start(customer_id=dave_customer.pk, agent=alice)
    panel = selectors.panel(customer=dave_customer, agent=alice, offers=[presented])
    assert panel.text == "May I tell you about A mortgage for your new home?"
    run = services.run_next(run_id=run.pk, agent=alice, answers={"wants": "yes"})
    presented.refresh_from_db()
    assert (presented.status, run.offers_accepted) == ("accepted", ["home-mortgage"])
    dave_customer.refresh_from_db()
    assert dave_customer.do_not_call


def test_a_scripts_task_for_a_queue_is_checked_against_the_queues_and_carries_it(
    alice: User, dave_customer: Customer
) -> None:
    from types import SimpleNamespace

    from scripting import actions

    Queue.objects.create(code="sales", name="Sales")
    assert actions._task({"title": "Call about the mortgage", "queue": "sales"}) == []
    assert "“nope” is not a queue" in actions._task({"title": "Call about the mortgage", "queue": "nope"})[0]
    context: Any = SimpleNamespace(run=SimpleNamespace(customer_id=dave_customer.pk, pk=7), agent=alice)
    services.action_create_task(
        context, {"title": "Call about the mortgage", "kind": "sales_call", "queue": "sales"}
    )
    task = Task.objects.get(customer=dave_customer)
    assert (task.queue, task.assigned_to_id, task.origin) == ("sales", None, "script:7")
