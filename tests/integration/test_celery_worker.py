"""A real Celery worker, on the real Redis, runs crm.tasks against the test database."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from config.celery import app as celery_app
from crm import selectors, services, tasks
from crm.models import ApiToken, BusinessEvent, Customer, User
from tests.conftest import make_customer
from tests.integration.conftest import COMMITTED, Worker, wait_until

pytestmark = [pytest.mark.integration, COMMITTED]

SEARCH_KEYS = ("display_name", "sort_name", "name_phonetic", "search_vector", "phone_keys", "email_keys")


def stored_keys(customer_id: int) -> dict[str, Any]:
    """The search keys as stored, plus what a reindex must never touch."""
    return Customer.objects.values(*SEARCH_KEYS, "version", "updated_at").get(pk=customer_id)


def blank_search_keys(*customer_ids: int) -> None:
    # A queryset update, bypassing the services on purpose: it stands for keys
    # computed by older folding rules that a reindex has to repair.
    Customer.objects.filter(pk__in=customer_ids).update(
        display_name="", sort_name="", name_phonetic=[], search_vector=None, phone_keys=[], email_keys=[]
    )


def found_by_name_and_phone(customer: Customer, name: str) -> bool:
    by_name = selectors.customer_search(queryset=Customer.objects.all(), q=name)
    by_phone = selectors.customers_by_phone(customer.primary_phone)
    return by_name.filter(pk=customer.pk).exists() and by_phone.filter(pk=customer.pk).exists()


def test_the_worker_restores_blanked_search_keys_so_the_customer_is_found_again(
    celery_worker: Worker, dave_customer: Customer
) -> None:
    expected = stored_keys(dave_customer.pk)
    blank_search_keys(dave_customer.pk)
    assert not found_by_name_and_phone(dave_customer, "Miller")

    tasks.customers_reindex_search.apply_async(args=([dave_customer.pk],), queue=celery_worker.queue)

    wait_until(
        lambda: stored_keys(dave_customer.pk)["sort_name"],
        what="the worker to rewrite the search keys",
        process=celery_worker.process,
    )
    assert stored_keys(dave_customer.pk) == expected  # same keys; version and updated_at untouched
    assert found_by_name_and_phone(dave_customer, "Miller")
    assert found_by_name_and_phone(dave_customer, "Dave Miler")  # the phonetic keys are back too


def test_a_reindex_message_delivered_twice_leaves_the_same_result(
    celery_worker: Worker, dave_customer: Customer
) -> None:
    expected = stored_keys(dave_customer.pk)
    events_before = BusinessEvent.objects.filter(customer=dave_customer).count()
    blank_search_keys(dave_customer.pk)

    # A redelivery (acks_late, a worker lost mid-task) is the same message with
    # the same task id arriving again.
    task_id = str(uuid.uuid4())
    for _ in range(2):
        tasks.customers_reindex_search.apply_async(
            args=([dave_customer.pk],), queue=celery_worker.queue, task_id=task_id
        )

    wait_until(
        lambda: celery_worker.succeeded(task_id) >= 2,
        what="both deliveries to run",
        process=celery_worker.process,
    )
    assert celery_worker.succeeded(task_id) == 2
    assert stored_keys(dave_customer.pk) == expected
    assert BusinessEvent.objects.filter(customer=dave_customer).count() == events_before


def test_reindex_customers_sends_chunks_that_the_worker_completes(
    celery_worker: Worker, dave_customer: Customer, erin_customer: Customer
) -> None:
    grace = make_customer(given_name="Grace", family_name="Hopper", phones=[], emails=[])
    customers = [dave_customer, erin_customer, grace]
    expected = {c.pk: stored_keys(c.pk) for c in customers}
    blank_search_keys(*expected)
    out = io.StringIO()

    call_command("reindex_customers", chunk_size=2, queue=celery_worker.queue, stdout=out)

    assert out.getvalue().splitlines() == [
        "Enqueued 2 of 3 customers (task 1 of 2)",
        "Enqueued 3 of 3 customers (task 2 of 2)",
        "Done: 3 customers in 2 tasks.",
    ]
    wait_until(
        lambda: all(stored_keys(pk)["sort_name"] for pk in expected),
        what="the worker to reindex all three customers",
        process=celery_worker.process,
    )
    assert {pk: stored_keys(pk) for pk in expected} == expected


def test_the_beat_schedule_purges_expired_tokens_through_a_worker(celery_worker: Worker, alice: User) -> None:
    expired, _ = services.api_token_create(user=alice, name="old laptop")
    current, _ = services.api_token_create(user=alice, name="desk", ttl=dt.timedelta(days=1))
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - dt.timedelta(days=31))

    # Sent by the name beat uses, so a typo in CELERY_BEAT_SCHEDULE fails here.
    name = str(settings.CELERY_BEAT_SCHEDULE["purge-expired-api-tokens"]["task"])
    celery_app.send_task(name, queue=celery_worker.queue)

    wait_until(
        lambda: not ApiToken.objects.filter(pk=expired.pk).exists(),
        what="the worker to purge the expired token",
        process=celery_worker.process,
    )
    assert ApiToken.objects.filter(pk=current.pk).exists()


def _worker_backends() -> list[int]:
    """The PostgreSQL backends the test database has for Celery processes."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'crm-celery' ORDER BY pid"
        )
        return [row[0] for row in cursor.fetchall()]


def _purge_tokens_through(worker: Worker) -> None:
    name = str(settings.CELERY_BEAT_SCHEDULE["purge-expired-api-tokens"]["task"])
    result = celery_app.send_task(name, queue=worker.queue)
    wait_until(lambda: worker.succeeded(result.id) == 1, what="the task to succeed", process=worker.process)


def test_the_worker_keeps_its_database_connection_from_task_to_task(celery_worker: Worker) -> None:
    _purge_tokens_through(celery_worker)
    first = _worker_backends()
    assert len(first) == 1  # the solo pool's one connection, still open after its task

    for _ in range(3):
        _purge_tokens_through(celery_worker)
    assert _worker_backends() == first


def test_a_connection_that_broke_between_tasks_is_replaced_and_the_next_task_runs(
    celery_worker: Worker,
) -> None:
    _purge_tokens_through(celery_worker)
    (backend,) = _worker_backends()
    with connection.cursor() as cursor:  # as a PostgreSQL restart or a failover would
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
    wait_until(lambda: backend not in _worker_backends(), what="the backend to go")

    _purge_tokens_through(celery_worker)
    (replacement,) = _worker_backends()
    assert replacement != backend
