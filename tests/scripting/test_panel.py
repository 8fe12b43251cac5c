"""The agent's script panel on the customer screen: start, answer, next, back,
a run that survives a reload, answers in the contact history, two queries at most."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agents import services as agents_services
from agents.models import Call, Queue
from crm.models import Customer, SourceSystem, User
from scripting import services
from scripting.models import Assignment, Run, RunStatus, ScriptVersion
from tests.agents.test_views import SCRIPT_PANEL_QUERIES
from tests.conftest import signed_in

pytestmark = pytest.mark.django_db


def screen(client: Client, customer: Customer) -> str:
    response = client.get(reverse("customer", args=[customer.pk]))
    assert response.status_code == 200
    return response.content.decode()


def panel_of(html: str) -> str:
    match = re.search(r'<section class="panel script-panel".*?</section>', html, re.DOTALL)
    assert match, "no script panel on the page"
    return match.group(0)


@pytest.fixture
def anywhere(published: ScriptVersion) -> ScriptVersion:
    """Off a call too (the screen opened from a search): assigned to any queue."""
    services.assignment_set(script_id=published.script_id)
    return published


def test_the_agent_starts_the_script_and_sees_the_first_step_filled_in(
    anywhere: ScriptVersion, alice: User, dave_customer: Customer
) -> None:
    client = signed_in(alice)
    assert "Start the script" in panel_of(screen(client, dave_customer))
    html = client.post(
        reverse("script-start", args=[dave_customer.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "Hello Dave, thanks for calling us." in html
    assert "Are you moving soon?" in html and "<kbd>j</kbd>" in html


def test_a_required_answer_is_asked_for_and_a_reload_keeps_the_run(
    anywhere: ScriptVersion, alice: User, dave_customer: Customer
) -> None:
    client = signed_in(alice)
    client.post(reverse("script-start", args=[dave_customer.pk]))
    run = Run.objects.get()
    html = client.post(reverse("script-next", args=[run.pk]), {}).content.decode()
    assert "“Are you moving soon?” needs an answer before you go on." in html
    saved = client.post(reverse("script-answer", args=[run.pk]), {"question": "moving", "moving": "yes"})
    assert "Saved" in saved.content.decode()
    # A reload (or a dropped connection) shows the same step with the answer given.
    panel = panel_of(screen(client, dave_customer))
    assert 'value="yes" checked' in panel and "Greeting" in panel
    html = client.post(reverse("script-next", args=[run.pk]), {"moving": "yes"}).content.decode()
    assert "Where to, Dave?" in html and 'aria-current="step">Moving' in html
    html = client.post(reverse("script-back", args=[run.pk])).content.decode()
    assert 'aria-current="step">Greeting' in html


def test_a_wrong_answer_is_shown_on_its_question_as_typed(
    anywhere: ScriptVersion, alice: User, dave_customer: Customer
) -> None:
    client = signed_in(alice)
    client.post(reverse("script-start", args=[dave_customer.pk]))
    run = Run.objects.get()
    client.post(reverse("script-next", args=[run.pk]), {"moving": "yes"})
    html = client.post(reverse("script-next", args=[run.pk]), {"new_city": "X"}).content.decode()
    assert "“New city”: needs at least 2 characters." in html and 'value="X"' in html


def test_another_agent_cannot_drive_my_run(
    anywhere: ScriptVersion, alice: User, bob: User, dave_customer: Customer
) -> None:
    signed_in(alice).post(reverse("script-start", args=[dave_customer.pk]))
    run = Run.objects.get()
    assert signed_in(bob).post(reverse("script-next", args=[run.pk]), {"moving": "no"}).status_code == 404


def test_the_panel_adds_at_most_two_queries_and_history_entries_show_their_answers(
    anywhere: ScriptVersion, alice: User, dave_customer: Customer
) -> None:
    # Two finished runs in the history (each its own entry, no call), one in progress.
    for reason in ("card", "other"):
        run = services.run_start(customer_id=dave_customer.pk, agent=alice)
        run = services.run_next(run_id=run.pk, agent=alice, answers={"moving": "no"})
        services.run_next(run_id=run.pk, agent=alice, answers={"reason": reason})
    services.run_start(customer_id=dave_customer.pk, agent=alice)
    client = signed_in(alice)
    client.get(reverse("home"))
    with CaptureQueriesContext(connection) as queries:
        html = screen(client, dave_customer)
    scripting = [q["sql"] for q in queries.captured_queries if "scripting_" in q["sql"]]
    assert len(scripting) <= SCRIPT_PANEL_QUERIES, scripting
    assert html.count('<span class="tag">Script</span> 2 answers') == 2
    assert "<dt>Reason</dt><dd>card</dd>" in html and "<dt>Reason</dt><dd>other</dd>" in html
    assert Run.objects.filter(status=RunStatus.COMPLETED).count() == 2


def test_agents_get_a_403_on_the_supervisor_pages(published: ScriptVersion, alice: User) -> None:
    client = signed_in(alice)
    for url in (reverse("script-list"), reverse("script-designer", args=[published.script_id]),
                reverse("script-assignments"), reverse("script-analytics", args=[published.pk])):  # fmt: skip
        assert client.get(url).status_code == 403, url
    assert client.post(reverse("script-publish", args=[published.script_id])).status_code == 403


def _answered_call(alice: User, ivr: SourceSystem, *, answer: bool = True) -> None:
    agents_services.agent_for(user=alice).queues.set([Queue.objects.get(code="service")])
    agents_services.agent_set_state(user=alice, state="available")
    call, _ = agents_services.call_arrive(
        source=ivr, telephony_id="c1", ani="+12025550143", queue_code="service"
    )
    if answer:
        agents_services.desk_call_control(user=alice, call_id=call.pk, kind="answered")


def auto_start(client: Client, customer: Customer) -> str:
    url = reverse("script-start", args=[customer.pk])
    return client.post(url, {"auto": "1"}, HTTP_HX_REQUEST="true").content.decode()


def test_answering_a_call_with_a_script_on_its_queue_starts_the_run(
    published: ScriptVersion, alice: User, ivr: SourceSystem, dave_customer: Customer, erin_customer: Customer
) -> None:
    client = signed_in(alice)
    assert "data-script-auto" in panel_of(screen(client, dave_customer))  # the panel can start by itself
    _answered_call(alice, ivr, answer=False)
    assert "Start the script" in auto_start(client, dave_customer)  # still ringing: nothing yet
    assert not Run.objects.exists()
    agents_services.desk_call_control(user=alice, call_id=Call.objects.get().pk, kind="answered")
    assert "Start the script" in auto_start(client, erin_customer)  # another customer's screen: no
    html = auto_start(client, dave_customer)
    assert "Hello Dave, thanks for calling Customer service." in html
    run = Run.objects.get()
    assert (run.customer_id, run.queue_code, run.call_id) == (
        dave_customer.pk,
        "service",
        Call.objects.get().pk,
    )
    assert f'data-run="{run.pk}"' in auto_start(client, dave_customer)  # asked again: the same run
    assert Run.objects.count() == 1


def test_a_call_on_a_queue_without_a_script_starts_nothing_and_says_nothing(
    published: ScriptVersion, alice: User, ivr: SourceSystem, dave_customer: Customer
) -> None:
    Assignment.objects.all().delete()
    _answered_call(alice, ivr)
    client = signed_in(alice)
    html = auto_start(client, dave_customer)
    assert "Start the script" in html and "alert" not in html
    assert not Run.objects.exists()
    # Asked for by the agent (s), the missing assignment is explained.
    html = client.post(
        reverse("script-start", args=[dave_customer.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "No published script is assigned to queue “service”" in html


def test_history_pages_loaded_as_the_agent_scrolls_show_their_runs_answers(
    anywhere: ScriptVersion, alice: User, dave_customer: Customer
) -> None:
    run = services.run_start(customer_id=dave_customer.pk, agent=alice)
    run = services.run_next(run_id=run.pk, agent=alice, answers={"moving": "no"})
    services.run_next(run_id=run.pk, agent=alice, answers={"reason": "card"})
    page = signed_in(alice).get(reverse("customer-history", args=[dave_customer.pk]) + "?channel=")
    html = page.content.decode()
    assert page.status_code == 200 and "<dt>Reason</dt><dd>card</dd>" in html


def test_the_panel_shows_my_run_finished_on_a_call_not_yet_wrapped_up_but_not_anothers(
    anywhere: ScriptVersion, alice: User, bob: User, dave_customer: Customer
) -> None:
    run = services.run_start(customer_id=dave_customer.pk, agent=alice)
    client = signed_in(alice)
    assert f'data-run="{run.pk}"' in panel_of(screen(client, dave_customer))
    # Completed on a call the agent has not wrapped up yet: still shown, as finished.
    Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED, call_id=4242)
    panel = panel_of(screen(client, dave_customer))
    assert f'data-run="{run.pk}"' in panel and "Script complete." in panel
    # Completed off a call: the panel offers a new run.
    Run.objects.filter(pk=run.pk).update(call_id=None)
    assert "Start the script" in panel_of(screen(client, dave_customer))
    # Another agent's run in progress is theirs alone.
    services.run_start(customer_id=dave_customer.pk, agent=bob)
    assert "Start the script" in panel_of(screen(client, dave_customer))
