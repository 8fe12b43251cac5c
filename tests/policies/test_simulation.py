"""Simulation before go-live: a draft replayed over recorded events with the
engine's own conditions and contact rules, its progress and its tallies."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from crm import services
from crm.models import Customer, SourceSystem, User
from policies import simulation
from policies.models import Decision, Offer, OfferPresentation, Policy
from tests.conftest import make_customer
from tests.policies.conftest import make_offer, make_policy, present


@pytest.fixture
def draft(bob: User) -> Policy:
    make_offer("home-mortgage")
    return make_policy(
        bob, name="Mortgage pages", status="draft", trigger_types=["web.page_view"],
        condition='event.page_category == "mortgage"', actions=present("home-mortgage", "agent_screen"),
    )  # fmt: skip


def view(ivr: SourceSystem, customer: Customer, days_ago: float, category: str, key: str) -> None:
    services.business_event_record(
        type="web.page_view", occurred_at=timezone.now() - dt.timedelta(days=days_ago), source=ivr,
        payload={"url": f"/{category}", "page_category": category}, idempotency_key=key, customer=customer,
    )  # fmt: skip


def test_a_draft_is_replayed_with_the_engines_rules_and_nothing_is_written(
    bob: User, draft: Policy, ivr: SourceSystem, django_capture_on_commit_callbacks: Any
) -> None:
    consenting = [
        make_customer(given_name=f"C{n}", phones=[], emails=[], marketing_opt_in=True) for n in range(3)
    ]
    refusing = make_customer(given_name="R", phones=[], emails=[], marketing_opt_in=False)
    for n, customer in enumerate(consenting):
        view(ivr, customer, 3, "mortgage", f"m-{n}")
    view(ivr, consenting[0], 2, "mortgage", "m-again")  # the first offer is still waiting then
    view(ivr, consenting[1], 2, "savings", "s-1")  # the condition does not hold
    view(ivr, refusing, 1, "mortgage", "m-r")
    view(ivr, consenting[2], 45, "mortgage", "m-old")  # before the window

    with django_capture_on_commit_callbacks(execute=False) as queued:
        state = simulation.simulation_start(policy_id=draft.pk, days=30)
    assert len(queued) == 1  # the task leaves only once the request commits
    assert simulation.simulation_get(state.id).status == "queued"  # type: ignore[union-attr]

    simulation.simulation_run(state.id)
    done = simulation.simulation_get(state.id)
    assert done is not None and done.status == "done" and done.percent == 100
    assert done.total == 6 and done.matched == 5
    assert done.offers == {"home-mortgage": {"agent_screen": 3}}
    assert done.customers_reached == 3 and done.customers_stopped == 2
    reasons = dict(done.reasons)
    assert reasons["No marketing consent"] == 1
    assert reasons["The offer home-mortgage is already waiting for an answer on agent_screen"] == 1
    # A question, not a record: no presentation, no decision.
    assert not OfferPresentation.objects.exists() and not Decision.objects.exists()


def test_a_run_that_finished_is_not_run_again(bob: User, draft: Policy, ivr: SourceSystem) -> None:
    customer = make_customer(phones=[], emails=[], marketing_opt_in=True)
    view(ivr, customer, 1, "mortgage", "m-1")
    state = simulation.simulation_start(policy_id=draft.pk, days=7)
    simulation.simulation_run(state.id)
    view(ivr, customer, 0.5, "mortgage", "m-2")
    simulation.simulation_run(state.id)  # a redelivered task
    assert simulation.simulation_get(state.id).total == 1  # type: ignore[union-attr]


def test_days_out_of_range_are_refused(draft: Policy) -> None:
    with pytest.raises(ValueError, match="between 1 and 90"):
        simulation.simulation_start(policy_id=draft.pk, days=365)


def test_the_page_shows_progress_then_the_tallies(
    bob: User, draft: Policy, ivr: SourceSystem, django_capture_on_commit_callbacks: Any
) -> None:
    view(ivr, make_customer(phones=[], emails=[], marketing_opt_in=True), 1, "mortgage", "m-1")
    client = Client()
    client.force_login(bob)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(f"/policies/{draft.pk}/simulate/", {"days": "7"})
    assert response.status_code == 302
    run_id = response["Location"].split("run=")[1].split("#")[0]
    waiting = client.get(f"/policies/simulations/{run_id}/").content.decode()
    assert "Waiting for a worker" in waiting and 'hx-trigger="every 1s"' in waiting
    simulation.simulation_run(run_id)
    finished = client.get(response["Location"]).content.decode()
    assert "customers would have received an offer" in finished and "every 1s" not in finished
    bad = client.post(f"/policies/{draft.pk}/simulate/", {"days": "many"})
    assert "sim_error=1" in bad["Location"]
    assert "Give a number of days from 1 to 90" in client.get(bad["Location"]).content.decode()
    gone = client.get("/policies/simulations/no-such-run/").content.decode()
    assert "no longer kept" in gone


def test_an_offer_that_is_not_live_stops_every_presentation(bob: User, ivr: SourceSystem) -> None:
    make_offer("later", status="draft")
    policy = make_policy(bob, name="Later", status="draft", trigger_types=["web.page_view"],
                         actions=present("later", "agent_screen"))  # fmt: skip
    view(ivr, make_customer(phones=[], emails=[], marketing_opt_in=True), 1, "any", "k")
    state = simulation.simulation_start(policy_id=policy.pk, days=7)
    done = simulation.simulation_run(state.id)
    assert done is not None and done.customers_reached == 0
    assert dict(done.reasons) == {"The offer later is not live": 1}
    assert Offer.objects.get(code="later").status == "draft"
