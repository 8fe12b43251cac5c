"""Retention of the touchpoint inbox: applied and rejected results go after
CRM_TOUCHPOINT_RETENTION_DAYS, in chunks; nothing still waiting is ever touched."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crm import services, tasks
from crm.models import Interaction, TouchpointBatch, TouchpointResult
from tests.config.test_settings import environment, manage
from tests.touchpoint_data import apply_all, receive, visit

pytestmark = pytest.mark.django_db


def _applied_batch(web, prefix: str, n: int, *, days_ago: float) -> TouchpointBatch:
    """A batch of ``n`` visits, applied, that completed ``days_ago`` days ago."""
    batch = receive(web, [visit(f"{prefix}-{i}", "dave@example.com") for i in range(n)])
    apply_all()
    when = timezone.now() - dt.timedelta(days=days_ago)
    TouchpointBatch.objects.filter(pk=batch.pk).update(received_at=when, completed_at=when)
    TouchpointResult.objects.filter(batch=batch).update(received_at=when, claimed_at=when, applied_at=when)
    return batch


def _left(batch: TouchpointBatch) -> dict[str, str]:
    return dict(TouchpointResult.objects.filter(batch=batch).values_list("external_id", "status"))


def test_results_past_the_retention_go_with_their_batch_and_recent_ones_stay(web, dave_customer, settings):
    settings.CRM_TOUCHPOINT_RETENTION_DAYS = 30
    old = _applied_batch(web, "old", 3, days_ago=31)
    TouchpointResult.objects.filter(external_id="old-2").update(status="rejected", applied_at=None)
    recent = _applied_batch(web, "recent", 2, days_ago=29)

    assert services.touchpoint_results_purge() == 3

    assert not TouchpointBatch.objects.filter(pk=old.pk).exists()
    assert _left(recent) == {"recent-0": "applied", "recent-1": "applied"}
    assert TouchpointBatch.objects.filter(pk=recent.pk).exists()
    # The effects are the customer record's, not the inbox's: they stay.
    assert Interaction.objects.filter(external_id__startswith="old-").count() == 3


@pytest.mark.parametrize("status", ["pending", "review", "dead"])
def test_what_still_waits_is_never_purged_nor_its_batch(web, dave_customer, status):
    old = _applied_batch(web, "old", 3, days_ago=400)
    TouchpointResult.objects.filter(external_id="old-1").update(status=status, applied_at=None)

    assert services.touchpoint_results_purge() == 2

    assert _left(old) == {"old-1": status}
    assert TouchpointBatch.objects.filter(pk=old.pk).exists()  # its progress still tells of it


def test_a_batch_not_completed_keeps_everything(web, dave_customer):
    old = _applied_batch(web, "old", 2, days_ago=400)
    TouchpointBatch.objects.filter(pk=old.pk).update(completed_at=None)

    assert services.touchpoint_results_purge() == 0
    assert len(_left(old)) == 2


def test_a_result_retried_lately_in_an_old_batch_keeps_its_own_retention(web, dave_customer):
    old = _applied_batch(web, "old", 2, days_ago=400)
    TouchpointResult.objects.filter(external_id="old-0").update(applied_at=timezone.now())

    assert services.touchpoint_results_purge() == 1
    assert _left(old) == {"old-0": "applied"}


def test_the_purge_deletes_in_bounded_chunks_each_in_its_own_transaction(web, dave_customer):
    old = _applied_batch(web, "old", 7, days_ago=40)
    with CaptureQueriesContext(connection) as queries:
        assert services.touchpoint_results_purge(chunk=3) == 7
    deletes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().startswith("DELETE FROM crm_touchpointresult")
    ]
    assert len(deletes) == 3  # 3 + 3 + 1
    assert all("LIMIT 3" in sql for sql in deletes)
    assert not TouchpointBatch.objects.filter(pk=old.pk).exists()


def test_a_run_out_of_time_stops_and_the_next_run_finishes(web, dave_customer):
    _applied_batch(web, "old", 4, days_ago=40)
    assert services.touchpoint_results_purge(chunk=2, budget_seconds=0) == 0
    assert services.touchpoint_results_purge(chunk=2) == 4
    assert not TouchpointResult.objects.exists()


def test_a_replay_after_the_purge_is_stored_again_and_changes_nothing(web, dave_customer):
    _applied_batch(web, "old", 2, days_ago=40)
    services.touchpoint_results_purge()
    before = Interaction.objects.count()

    batch = receive(web, [visit("old-0", "dave@example.com"), visit("old-1", "dave@example.com")])
    apply_all()

    assert batch.accepted == 2  # the inbox forgot them...
    assert set(_left(batch).values()) == {"applied"}
    assert Interaction.objects.count() == before  # ...the contact history did not


def test_beat_runs_the_purge_hourly_through_its_task(web, dave_customer):
    entry = next(
        e
        for e in django_settings.CELERY_BEAT_SCHEDULE.values()
        if e["task"] == tasks.touchpoint_results_purge.name
    )
    assert entry["schedule"] == 3600.0
    _applied_batch(web, "old", 2, days_ago=40)
    assert tasks.touchpoint_results_purge.apply().get() == 2


@pytest.mark.parametrize("value", ["0", "thirty"])
def test_a_bad_retention_stops_start_up_naming_the_variable(value):
    result = manage("check", env=environment(CRM_TOUCHPOINT_RETENTION_DAYS=value))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CRM_TOUCHPOINT_RETENTION_DAYS" in result.stderr


def test_a_chunk_deletes_no_more_than_its_size_whatever_plan_the_delete_gets(web, dave_customer):
    """With the chunk's subquery on the inner side of a nested loop (the plan a small
    or freshly analysed inbox can get), each rescan skipped the rows the statement had
    just deleted and took more: one chunk emptied the batch."""
    _applied_batch(web, "old", 7, days_ago=40)
    # The plan found in CI: a nested-loop semi join, the chunk rescanned per inbox row.
    planner = ("enable_hashagg", "enable_hashjoin", "enable_mergejoin", "enable_material", "enable_sort")
    with connection.cursor() as cursor:
        for name in planner:
            cursor.execute(f"SET {name} = off")
    try:
        with CaptureQueriesContext(connection) as queries:
            assert services.touchpoint_results_purge(chunk=3) == 7
    finally:
        with connection.cursor() as cursor:
            for name in planner:
                cursor.execute(f"RESET {name}")
    deletes = [
        q
        for q in queries.captured_queries
        if q["sql"].lstrip().startswith("DELETE FROM crm_touchpointresult")
    ]
    assert len(deletes) == 3  # 3 + 3 + 1, never one statement for all
