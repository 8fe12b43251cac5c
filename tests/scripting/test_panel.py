"""The agent's script panel on the customer screen: start, answer, next, back,
a run that survives a reload, answers in the contact history, two queries at most."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from crm.models import Customer, User
from scripting import services
from scripting.models import Run, RunStatus, ScriptVersion
from tests.agents.test_views import SCRIPT_PANEL_QUERIES

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


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
