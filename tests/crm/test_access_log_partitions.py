"""The access log, partitioned by month: rows find their month, the append-only rule
holds in every partition, months are made ahead and dropped whole past retention."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from crm import services, tasks
from crm.models import AccessLogEntry, User
from crm.services.access_partitions import DEFAULT_PARTITION, MONTHS_AHEAD

pytestmark = pytest.mark.django_db


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def months_ago(n: int) -> dt.datetime:
    """Mid-month, n months before this one (UTC)."""
    now = timezone.now()
    index = now.year * 12 + now.month - 1 - n
    return dt.datetime(index // 12, index % 12 + 1, 15, 12, tzinfo=dt.UTC)


def partition_name(at: dt.datetime) -> str:
    return f"crm_accesslogentry_{at:%Y_%m}"


def exists(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        return bool(cursor.fetchone()[0])  # type: ignore[index]


def partitions_of_rows() -> dict[int, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT customer_id, tableoid::regclass::text FROM crm_accesslogentry")
        return dict(cursor.fetchall())


def log_read_at(user: User, customer_id: int, at: dt.datetime) -> None:
    """A read written at a given time, as a log loaded from an older system would be."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO crm_accesslogentry (user_id, customer_id, channel, path, at)"
            " VALUES (%s, %s, 'api', '/import', %s)",
            [user.pk, customer_id, at],
        )


def test_the_migration_leaves_this_month_and_the_next_ones_partitioned(db: Any) -> None:
    for n in range(0, MONTHS_AHEAD + 1):
        assert exists(partition_name(months_ago(-n))), n
    assert exists(DEFAULT_PARTITION)
    assert services.access_log_partitions_ensure() == []


def test_a_read_lands_in_the_partition_of_its_month(alice: User) -> None:
    services.access_log_partitions_ensure(since=months_ago(2))
    services.access_log_record(user=alice, customer_ids=[1], channel="page")
    log_read_at(alice, 2, months_ago(2))
    assert partitions_of_rows() == {1: partition_name(timezone.now()), 2: partition_name(months_ago(2))}
    # Django still reads the rows by id alone, as the admin does.
    entry = AccessLogEntry.objects.get(customer_id=2)
    assert AccessLogEntry.objects.get(pk=entry.pk).at == months_ago(2)


def test_the_database_refuses_to_rewrite_or_delete_a_row_in_any_partition(alice: User) -> None:
    services.access_log_partitions_ensure(since=months_ago(1))
    services.access_log_record(user=alice, customer_ids=[1], channel="page")
    log_read_at(alice, 2, months_ago(1))
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AccessLogEntry.objects.update(path="/rewritten")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AccessLogEntry.objects.filter(customer_id=2).delete()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"DELETE FROM {partition_name(months_ago(1))}")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        # Moving a row to another month is an UPDATE too.
        AccessLogEntry.objects.filter(customer_id=1).update(at=months_ago(1))
    assert AccessLogEntry.objects.count() == 2


def test_the_partition_command_is_idempotent() -> None:
    later = months_ago(-(MONTHS_AHEAD + 2))
    first = run("access_log_partitions", "--months-ahead", str(MONTHS_AHEAD + 2))
    assert f"Created {partition_name(later)}." in first
    assert not exists(partition_name(months_ago(-(MONTHS_AHEAD + 3))))
    again = run("access_log_partitions", "--months-ahead", str(MONTHS_AHEAD + 2))
    assert again.strip() == "Nothing to create: every month asked for has its partition."


def test_a_row_without_a_month_waits_in_the_default_partition_and_is_moved_into_its_month(
    alice: User,
) -> None:
    far = months_ago(-30)
    log_read_at(alice, 7, far)
    assert partitions_of_rows() == {7: DEFAULT_PARTITION}
    out = run("access_log_partitions")
    assert f"Created {partition_name(far)}, moved 1 row into it from {DEFAULT_PARTITION}." in out
    assert partitions_of_rows() == {7: partition_name(far)}
    # Inserts still have a DEFAULT partition to fall into.
    log_read_at(alice, 8, months_ago(-40))
    assert partitions_of_rows()[8] == DEFAULT_PARTITION


def test_the_beat_runs_the_partition_task_daily() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["create-access-log-partitions"]
    assert entry == {"task": "crm.tasks.access_log_partitions_ensure", "schedule": 86_400.0}
    assert tasks.access_log_partitions_ensure() == 0  # the migration made them already


def test_retention_drops_old_months_whole_and_keeps_recent_ones(alice: User) -> None:
    services.access_log_partitions_ensure(since=months_ago(30))
    log_read_at(alice, 30, months_ago(30))
    log_read_at(alice, 25, months_ago(25))
    log_read_at(alice, 24, months_ago(24))
    services.access_log_record(user=alice, customer_ids=[0], channel="page")
    out = run("access_log_retention", "--keep-months", "24")
    for gone in (30, 25):
        assert f"Dropped {partition_name(months_ago(gone))} ({months_ago(gone):%Y-%m}" in out
        assert not exists(partition_name(months_ago(gone)))
    assert f"Dropped {partition_name(months_ago(24))}" not in out
    assert sorted(partitions_of_rows()) == [0, 24]
    assert exists(partition_name(months_ago(24))) and exists(DEFAULT_PARTITION)
    assert run("access_log_retention", "--keep-months", "24").startswith("Nothing to drop")


def test_a_dry_run_says_what_it_would_drop_and_drops_nothing(alice: User) -> None:
    services.access_log_partitions_ensure(since=months_ago(26))
    log_read_at(alice, 26, months_ago(26))
    log_read_at(alice, 40, months_ago(40))  # no month of its own: in DEFAULT
    out = run("access_log_retention", "--keep-months", "24", "--dry-run")
    assert f"Would drop {partition_name(months_ago(26))}" in out
    assert f"In {DEFAULT_PARTITION}: 1 row from before {months_ago(24):%Y-%m}-01;" in out
    assert sorted(partitions_of_rows()) == [26, 40]


def test_retention_also_drops_expired_rows_that_waited_in_the_default_partition(alice: User) -> None:
    log_read_at(alice, 40, months_ago(40))
    log_read_at(alice, 1, months_ago(-20))  # far ahead: waits in DEFAULT, and is kept
    out = run("access_log_retention", "--keep-months", "24")
    assert f"Moved 1 row out of {DEFAULT_PARTITION} into {partition_name(months_ago(40))}." in out
    assert f"Dropped {partition_name(months_ago(40))}" in out
    assert partitions_of_rows() == {1: partition_name(months_ago(-20))}


def test_retention_below_a_year_needs_force(alice: User) -> None:
    services.access_log_partitions_ensure(since=months_ago(8))
    log_read_at(alice, 8, months_ago(8))
    with pytest.raises(CommandError, match="--keep-months: 6 is below the 12 months kept at least"):
        run("access_log_retention", "--keep-months", "6")
    with pytest.raises(CommandError, match="Keep at least the last month"):
        run("access_log_retention", "--keep-months", "0", "--force")
    assert exists(partition_name(months_ago(8)))
    out = run("access_log_retention", "--keep-months", "6", "--force")
    assert f"Dropped {partition_name(months_ago(8))}" in out
    assert not partitions_of_rows()


def test_the_cutoff_keeps_whole_months() -> None:
    now = dt.datetime(2026, 11, 23, 15, tzinfo=dt.UTC)
    cutoff = services.access_log_retention_cutoff(keep_months=24, now=now)
    assert cutoff == dt.datetime(2024, 11, 1, tzinfo=dt.UTC)
    assert services.access_log_retention_cutoff(keep_months=11, now=now) == dt.datetime(
        2025, 12, 1, tzinfo=dt.UTC
    )


def test_the_admin_lists_the_log_and_opens_a_row_by_its_id(carol: User, alice: User) -> None:
    services.access_log_record(user=alice, customer_ids=[5], channel="page")
    entry = AccessLogEntry.objects.get()
    client = Client()
    client.force_login(carol)
    listing = client.get(reverse("admin:crm_accesslogentry_changelist"))
    assert listing.status_code == 200 and b"alice" in listing.content
    detail = client.get(reverse("admin:crm_accesslogentry_change", args=[entry.pk]))
    assert detail.status_code == 200 and b"alice" in detail.content


def test_the_admin_list_never_counts_the_whole_log(carol: User, alice: User) -> None:
    services.access_log_record(user=alice, customer_ids=[1, 2, 3], channel="page")
    client = Client()
    client.force_login(carol)
    with CaptureQueriesContext(connection) as queries:
        listing = client.get(reverse("admin:crm_accesslogentry_changelist"), {"q": "2"})
    assert listing.status_code == 200
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "crm_accesslogentry" in q["sql"]]
    # Only the capped count of the filtered rows: no full count, no min/max of dates.
    assert len(counts) == 1 and "LIMIT" in counts[0], counts
    assert not [q for q in queries if "MIN(" in q["sql"].upper() or "MAX(" in q["sql"].upper()]
    assert b"alice" in listing.content
