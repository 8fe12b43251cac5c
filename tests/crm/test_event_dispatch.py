"""The business-event outbox: each event reaches its listeners, once, across crashes."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from config.celery import app as celery_app
from crm import listeners, realtime, services
from crm.models import BusinessEvent, Customer, SourceSystem, Task
from crm.services import event_dispatch
from tests.crm import event_listeners

LISTENERS = "tests.crm.event_listeners"


@pytest.fixture
def configured(settings: Any) -> Iterator[Any]:
    """Listeners as a project would list them; Celery runs tasks in this process,
    so a dispatch enqueued on commit runs at once."""

    def configure(*, realtime: list[str] | None = None, deferred: list[str] | None = None) -> None:
        settings.CRM_EVENT_LISTENERS = {
            "realtime": [f"{LISTENERS}.{name}" for name in realtime or []],
            "deferred": [f"{LISTENERS}.{name}" for name in deferred or []],
        }
        listeners.forget()
        # The fixtures' own events (customer.created) were recorded in the test's
        # transaction, which never commits: its hook would collect every later event
        # of the test too, exactly as one transaction should. Start without it.
        connection.run_on_commit.clear()
        BusinessEvent.objects.update(dispatched_at=timezone.now())

    event_listeners.seen.clear()
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield configure
    celery_app.conf.task_always_eager = eager
    event_listeners.seen.clear()
    listeners.forget()


def _record(
    customer: Customer, source: SourceSystem, key: str, event_type: str = "customer.created"
) -> BusinessEvent:
    payload = {"account_number": "ACC-1", "amount": 10} if event_type.startswith("account.") else {}
    event, _ = services.business_event_record(
        type=event_type, occurred_at=timezone.now(), payload=payload, source=source, idempotency_key=key,
        customer=customer,
    )  # fmt: skip
    return event


def test_the_events_of_one_transaction_reach_each_listener_once_together_after_commit(
    configured: Any, dave_customer: Customer, ivr: SourceSystem, django_capture_on_commit_callbacks: Any
) -> None:
    configured(realtime=["remember_realtime"], deferred=["writes_a_task"])
    with django_capture_on_commit_callbacks(execute=True) as hooks, transaction.atomic():
        first = _record(dave_customer, ivr, "e1")
        second = _record(dave_customer, ivr, "e2")
        assert event_listeners.seen == []  # nothing before the commit
    assert len(hooks) == 1  # one hook, one task, however many events
    assert event_listeners.seen == [("realtime", [first.pk, second.pk]), ("deferred", [first.pk, second.pk])]
    assert (
        BusinessEvent.objects.filter(pk__in=[first.pk, second.pk], dispatched_at__isnull=False).count() == 2
    )
    assert Task.objects.filter(customer=dave_customer).count() == 2


def test_a_rolled_back_transaction_tells_no_listener(
    configured: Any, dave_customer: Customer, ivr: SourceSystem, django_capture_on_commit_callbacks: Any
) -> None:
    configured(realtime=["remember_realtime"], deferred=["writes_a_task"])
    with django_capture_on_commit_callbacks(execute=True) as hooks:
        try:
            with transaction.atomic():
                _record(dave_customer, ivr, "e1")
                raise RuntimeError("the request failed")
        except RuntimeError:
            pass
    assert hooks == []
    assert event_listeners.seen == []


def test_a_repeated_fact_is_not_dispatched_again(
    configured: Any, dave_customer: Customer, ivr: SourceSystem, django_capture_on_commit_callbacks: Any
) -> None:
    configured(deferred=["writes_a_task"])
    with django_capture_on_commit_callbacks(execute=True):
        event = _record(dave_customer, ivr, "same-key")
    with django_capture_on_commit_callbacks(execute=True) as hooks:
        assert _record(dave_customer, ivr, "same-key").pk == event.pk
    assert hooks == []
    assert services.business_events_dispatch(event_ids=[event.pk]) == 0  # a redelivered task
    assert event_listeners.seen == [("deferred", [event.pk])]


def test_without_deferred_listeners_events_are_dispatched_at_commit(
    configured: Any, dave_customer: Customer, ivr: SourceSystem, django_capture_on_commit_callbacks: Any
) -> None:
    configured()
    with django_capture_on_commit_callbacks(execute=True):
        event = _record(dave_customer, ivr, "e1")
    event.refresh_from_db()
    assert event.dispatched_at is not None


def test_one_failing_event_does_not_hold_up_the_others_and_keeps_its_error(
    configured: Any, dave_customer: Customer, ivr: SourceSystem, settings: Any
) -> None:
    configured(deferred=["writes_a_task", "refuses_deposits"])
    good = _record(dave_customer, ivr, "good")
    poison = _record(dave_customer, ivr, "poison", event_type=event_listeners.POISON)
    assert services.business_events_dispatch(event_ids=[good.pk, poison.pk]) == 1
    good.refresh_from_db()
    poison.refresh_from_db()
    assert good.dispatched_at is not None
    assert poison.dispatched_at is None
    assert poison.dispatch_attempts == 1
    assert "deposits are refused" in poison.dispatch_error
    # The failed event's own writes were undone with it; the good one's were kept.
    assert list(Task.objects.values_list("title", flat=True)) == [f"Follow up event {good.pk}"]
    # Retried until the attempts run out, then left for an administrator.
    for _ in range(settings.CRM_EVENT_DISPATCH_MAX_ATTEMPTS):
        services.business_events_dispatch(event_ids=[poison.pk])
    poison.refresh_from_db()
    assert poison.dispatch_attempts == settings.CRM_EVENT_DISPATCH_MAX_ATTEMPTS
    assert services.business_events_sweep(older_than_seconds=0) == 0
    assert services.business_events_dispatch(event_ids=[poison.pk]) == 0


def test_the_sweep_sends_again_what_a_lost_message_left_behind(
    configured: Any, dave_customer: Customer, ivr: SourceSystem
) -> None:
    configured(deferred=["writes_a_task"])
    # Recorded without its on-commit hook ever running: the process died after the commit.
    lost = _record(dave_customer, ivr, "lost")
    recent = _record(dave_customer, ivr, "recent")
    BusinessEvent.objects.filter(pk=lost.pk).update(recorded_at=timezone.now() - dt.timedelta(minutes=5))
    assert services.business_events_sweep(older_than_seconds=60) == 1
    lost.refresh_from_db()
    recent.refresh_from_db()
    assert lost.dispatched_at is not None
    assert recent.dispatched_at is None  # still within its grace period
    assert event_listeners.seen == [("deferred", [lost.pk])]


def test_a_listener_that_is_not_a_real_name_stops_start_up(settings: Any) -> None:
    settings.CRM_EVENT_LISTENERS = {"realtime": [f"{LISTENERS}.no_such_function"], "deferred": []}
    with pytest.raises(SystemCheckError, match="no_such_function"):
        call_command("check")
    settings.CRM_EVENT_LISTENERS = {"realtime": [], "deferred": [f"{LISTENERS}.not_callable"]}
    with pytest.raises(SystemCheckError, match="not callable"):
        call_command("check")
    settings.CRM_EVENT_LISTENERS = {"later": []}
    with pytest.raises(SystemCheckError, match="realtime and deferred"):
        call_command("check")


@pytest.mark.django_db(transaction=True)
def test_a_web_process_hands_the_events_of_several_requests_to_the_worker_together(
    configured: Any, dave_customer: Customer, ivr: SourceSystem, settings: Any, monkeypatch: Any
) -> None:
    configured(realtime=["remember_realtime"], deferred=["writes_a_task"])
    settings.CRM_EVENT_DISPATCH_BATCH_SECONDS = 0.5
    monkeypatch.setattr(realtime, "in_server_thread", lambda: True)
    # Two requests, each its own transaction: the real-time listeners run at each commit.
    first = _record(dave_customer, ivr, "e1")
    second = _record(dave_customer, ivr, "e2")
    assert event_listeners.seen[:2] == [("realtime", [first.pk]), ("realtime", [second.pk])]
    deadline = time.monotonic() + 30
    while BusinessEvent.objects.filter(pk__in=[first.pk, second.pk], dispatched_at__isnull=True).exists():
        assert time.monotonic() < deadline, "the batch never reached the worker"
        time.sleep(0.05)
    # One task for both: the worker's listener saw them together.
    assert event_listeners.seen[2:] == [("deferred", [first.pk, second.pk])]
    assert Task.objects.filter(customer=dave_customer).count() == 2


def _counting_tasks(monkeypatch: Any) -> list[list[int]]:
    """The dispatch tasks enqueued from now on (each still runs: Celery is eager)."""
    enqueued: list[list[int]] = []
    enqueue = event_dispatch._enqueue

    def counted(event_ids: Any) -> None:
        enqueued.append(list(event_ids))
        enqueue(event_ids)

    monkeypatch.setattr(event_dispatch, "_enqueue", counted)
    return enqueued


@pytest.mark.django_db(transaction=True)
def test_the_events_a_dispatch_records_are_dispatched_by_it_without_a_task_of_their_own(
    configured: Any, dave_customer: Customer, ivr: SourceSystem, monkeypatch: Any
) -> None:
    configured(realtime=["remember_realtime"], deferred=["answers_each_creation"])
    enqueued = _counting_tasks(monkeypatch)
    first = _record(dave_customer, ivr, "e1")  # its own transaction: the task runs on its commit
    answer = BusinessEvent.objects.get(type=event_listeners.ANSWER, idempotency_key=f"answer-{first.pk}")
    assert enqueued == [[first.pk]]  # the answer took no task: the first one's dispatch took it next
    assert event_listeners.seen == [
        ("realtime", [first.pk]), ("deferred", [first.pk]),
        ("realtime", [answer.pk]), ("deferred", [answer.pk]),
    ]  # fmt: skip
    assert BusinessEvent.objects.filter(pk__in=[first.pk, answer.pk], dispatched_at__isnull=True).count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_events_a_dispatch_records_past_its_rounds_get_a_task(
    configured: Any, dave_customer: Customer, ivr: SourceSystem, monkeypatch: Any
) -> None:
    configured(deferred=["answers_each_creation"])
    monkeypatch.setattr(event_dispatch, "FOLLOW_UP_ROUNDS", 0)
    enqueued = _counting_tasks(monkeypatch)
    first = _record(dave_customer, ivr, "e1")
    answer = BusinessEvent.objects.get(type=event_listeners.ANSWER, idempotency_key=f"answer-{first.pk}")
    assert enqueued == [[first.pk], [answer.pk]]
    assert not BusinessEvent.objects.filter(pk__in=[first.pk, answer.pk], dispatched_at__isnull=True).exists()


def test_a_dispatch_locks_and_marks_its_batch_in_one_statement_whatever_its_size(
    configured: Any, dave_customer: Customer, ivr: SourceSystem
) -> None:
    configured(deferred=["remember_deferred"])
    events = [_record(dave_customer, ivr, f"e{n}") for n in range(20)]
    ids = [e.pk for e in events]
    with CaptureQueriesContext(connection) as queries:
        assert services.business_events_dispatch(event_ids=ids) == 20
    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    # The lock with the mark, between the savepoint the test's transaction makes of
    # the dispatch's own (in a worker: BEGIN and COMMIT).
    assert statements == ["SAVEPOINT", "UPDATE", "RELEASE"]
    assert event_listeners.seen == [("deferred", ids)]
    assert not BusinessEvent.objects.filter(pk__in=ids, dispatched_at__isnull=True).exists()
    assert services.business_events_dispatch(event_ids=ids) == 0  # a redelivered task


@pytest.mark.django_db(transaction=True)
def test_the_events_a_dispatch_recorded_get_a_task_when_their_round_fails(
    configured: Any, dave_customer: Customer, ivr: SourceSystem, monkeypatch: Any
) -> None:
    configured(deferred=["answers_each_creation"])
    enqueued = _counting_tasks(monkeypatch)
    batches: list[list[int]] = []
    dispatch_batch = event_dispatch._dispatch_batch

    def database_gone_on_the_second(event_ids: Any) -> int:
        batches.append(list(event_ids))
        if len(batches) == 2:
            raise OperationalError("the database went away")
        return dispatch_batch(event_ids)

    monkeypatch.setattr(event_dispatch, "_dispatch_batch", database_gone_on_the_second)
    first = _record(dave_customer, ivr, "e1")
    answer = BusinessEvent.objects.get(type=event_listeners.ANSWER, idempotency_key=f"answer-{first.pk}")
    assert batches[:3] == [[first.pk], [answer.pk], [answer.pk]]  # its round failed; its own task took it
    assert enqueued[:2] == [[first.pk], [answer.pk]]
    assert not BusinessEvent.objects.filter(pk__in=[first.pk, answer.pk], dispatched_at__isnull=True).exists()


def test_the_batcher_hands_an_event_over_no_sooner_than_half_its_period_after_its_commit(
    settings: Any, monkeypatch: Any
) -> None:
    """The recording process decides its events on commit (and the events that
    records in turn) meanwhile: a worker handed them at once would decide them too."""
    settings.CRM_EVENT_DISPATCH_BATCH_SECONDS = 0.4
    handed: list[tuple[float, list[int]]] = []
    monkeypatch.setattr(event_dispatch, "_enqueue", lambda ids: handed.append((time.monotonic(), list(ids))))
    monkeypatch.setattr(event_dispatch.connections, "close_all", lambda: None)
    batcher = event_dispatch._DispatchBatcher()
    added: dict[int, float] = {}
    for pk, pause in enumerate((0.0, 0.1, 0.15, 0.1, 0.2, 0.3), start=1):
        time.sleep(pause)
        added[pk] = time.monotonic()
        batcher.add([pk])
    deadline = time.monotonic() + 10
    while sum(len(ids) for _, ids in handed) < len(added):
        assert time.monotonic() < deadline, f"not all handed over: {handed}"
        time.sleep(0.02)
    assert sorted(pk for _, ids in handed for pk in ids) == sorted(added)
    for at, ids in handed:
        assert all(at - added[pk] >= 0.2 for pk in ids), (at, ids, added)
    assert len(handed) < len(added)  # still batched
