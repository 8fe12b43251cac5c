"""A real Celery worker decides the events the on-commit pass did not: the
engine's deferred listener, as config/settings.py lists it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.utils import timezone

from crm import listeners, services, tasks
from crm.models import BusinessEvent, Task, User
from policies import services as policy_services
from tests.conftest import make_customer
from tests.integration.conftest import COMMITTED, Worker, wait_until

pytestmark = [pytest.mark.integration, COMMITTED]


def test_the_worker_decides_a_platinum_withdrawal_once(celery_worker: Worker, settings: Any) -> None:
    # This process only records: the worker (project settings) is the one that decides.
    settings.CRM_EVENT_LISTENERS = {"realtime": [], "deferred": ["policies.engine.decide_events"]}
    listeners.forget()
    try:
        supervisor = User.objects.create(username="policy-author")
        policy = policy_services.policy_save(
            actor=supervisor, name="Large platinum withdrawal", status="active",
            trigger_types=["transaction.withdrawal"],
            condition='customer.tier == "platinum" && event.amount > 10000.0',
            actions=[{"action": "create_task", "settings": {"kind": "sales_call", "title": "Call today",
                                                            "due_in_hours": 24, "assign_to": "queue:sales"}}],
        )  # fmt: skip
        customer = make_customer(tier="platinum")
        event, _ = services.business_event_record(
            type="transaction.withdrawal", occurred_at=timezone.now(), source=services.crm_source(),
            payload={"amount": 25000, "account_number": "A-1", "channel": "branch"},
            idempotency_key="worker-1", customer=customer,
        )  # fmt: skip
        task_id = str(uuid.uuid4())
        for _ in range(2):  # a redelivered message decides nothing twice
            tasks.business_events_dispatch.apply_async(
                args=([event.pk],), queue=celery_worker.queue, task_id=task_id
            )
        wait_until(
            lambda: celery_worker.succeeded(task_id) >= 2,
            what="the worker to run both deliveries",
            process=celery_worker.process,
        )
        assert BusinessEvent.objects.filter(pk=event.pk, dispatched_at__isnull=False).exists()
        task = Task.objects.get(customer=customer)
        assert task.origin == f"policy:{policy.pk}" and task.kind == "sales_call"
    finally:
        listeners.forget()
