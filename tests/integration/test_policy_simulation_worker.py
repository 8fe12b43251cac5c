"""A supervisor's simulation runs in a real Celery worker; its progress and its
tallies reach the page through the shared cache."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from crm import services
from crm.models import User
from policies import services as policy_services
from policies import simulation, tasks
from tests.conftest import make_customer
from tests.integration.conftest import COMMITTED, Worker, wait_until

pytestmark = [pytest.mark.integration, COMMITTED]


class NotSent(Exception):
    pass


def test_the_worker_replays_a_draft_and_the_page_shows_its_tallies(celery_worker: Worker, bob: User) -> None:
    policy_services.offer_save(code="savings", name="Savings", channels=["agent_screen"], status="active")
    policy = policy_services.policy_save(
        actor=bob, name="Big deposits", status="draft", trigger_types=["transaction.deposit"],
        condition="event.amount > 5000.0",
        actions=[{"action": "present_offer", "settings": {"offer": "savings", "channels": ["agent_screen"]}}],
    )  # fmt: skip
    for n in range(12):
        customer = make_customer(given_name=f"D{n}", phones=[], emails=[], marketing_opt_in=n % 3 != 0)
        services.business_event_record(
            type="transaction.deposit", occurred_at=timezone.now() - dt.timedelta(days=n % 5 + 1),
            payload={"amount": 9000.0 if n < 10 else 100.0, "account_number": "A-1", "channel": "branch"},
            source=services.crm_source(), idempotency_key=f"dep-{n}", customer=customer,
        )  # fmt: skip
    # The run is stored at once; its message would leave on commit for the default
    # queue: roll that back and send it to this test's own worker instead.
    with pytest.raises(NotSent), transaction.atomic():
        state = simulation.simulation_start(policy_id=policy.pk, days=7)
        raise NotSent
    task_id = f"simulate-{state.id}"
    tasks.policy_simulate.apply_async(args=(state.id,), queue=celery_worker.queue, task_id=task_id)
    wait_until(
        lambda: celery_worker.succeeded(task_id) >= 1, what="the simulation", process=celery_worker.process
    )
    done = simulation.simulation_get(state.id)
    assert done is not None and done.status == "done"
    assert (done.total, done.matched) == (12, 10)
    assert done.offers == {"savings": {"agent_screen": 6}}  # 4 of the 10 gave no marketing consent
    assert dict(done.reasons) == {"No marketing consent": 4}
    client = Client()
    client.force_login(bob)
    page = client.get(f"/policies/{policy.pk}/?run={state.id}").content.decode()
    assert "the condition held on <strong>10</strong>" in page
