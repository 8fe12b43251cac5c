"""The access log's monthly partitions: made ahead of the rows, dropped past retention.

The table is partitioned by month on ``at`` (migration 0007): ``crm_accesslogentry_YYYY_MM``
holds that month (UTC), and ``crm_accesslogentry_default`` catches a row whose month
has no partition yet, so that an insert never fails. Creating months is the SQL
function ``crm_accesslog_ensure_partitions`` (SECURITY DEFINER, so the application's
role, which does not own the table, can run it daily from Celery beat). Dropping
months needs the table's owner: an operator runs ``manage.py access_log_retention``
with the owner's credentials. Rows themselves are never updated or deleted.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

logger = logging.getLogger("crm.access_log")

TABLE = "crm_accesslogentry"
DEFAULT_PARTITION = f"{TABLE}_default"
# Beat runs daily; three months of slack means an outage of the scheduler for
# weeks still leaves every row a partition of its own.
MONTHS_AHEAD = 3
# Below a year, a mistyped --keep-months could destroy an audit trail that
# regulators expect (PCI DSS asks for a year of audit history): ask for --force.
MIN_KEEP_MONTHS = 12
_MONTHLY_RE = re.compile(rf"^{TABLE}_(\d{{4}})_(\d{{2}})$")
# DETACH waits for every reader of the log and makes inserts queue behind it:
# give up after a few seconds rather than stall screen pops (run it again later).
_LOCK_TIMEOUT = "5s"


@dataclass(frozen=True)
class CreatedPartition:
    name: str
    rows_moved: int  # rows routed into it out of the DEFAULT partition


@dataclass(frozen=True)
class MonthlyPartition:
    name: str
    month: dt.date  # first day of the month it holds (UTC)
    estimated_rows: int | None  # the planner's estimate; None before the first ANALYZE
    bytes: int

    @property
    def label(self) -> str:
        rows = (
            "rows not yet counted" if self.estimated_rows is None else f"about {self.estimated_rows:,} rows"
        )
        return f"{self.name} ({self.month:%Y-%m}, {rows}, {self.bytes / 2**20:,.1f} MB)"


@dataclass(frozen=True)
class RetentionOutcome:
    cutoff: dt.datetime  # every row older than this is gone (or would be, in a dry run)
    dropped: list[MonthlyPartition]  # dropped, or to drop in a dry run
    kept: list[MonthlyPartition]
    moved: list[CreatedPartition]  # months made for rows found in the DEFAULT partition
    expired_in_default: int  # dry run only: rows past the cutoff waiting in DEFAULT


def access_log_partitions_ensure(
    *, months_ahead: int = MONTHS_AHEAD, since: dt.datetime | None = None
) -> list[CreatedPartition]:
    """Create the partitions of this month and the next ``months_ahead`` (and of every
    month from ``since``, for loading older rows), idempotently.

    Rows that landed in the DEFAULT partition get their month created and are moved
    into it (the DEFAULT partition is set aside meanwhile; no row is deleted)."""
    if not 0 <= months_ahead <= 120:
        raise ValidationError({"months_ahead": "Give a number of months from 0 to 120."})
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT partition_name, rows_moved FROM crm_accesslog_ensure_partitions(%s, %s)",
            [months_ahead, since],
        )
        created = [CreatedPartition(name, moved) for name, moved in cursor.fetchall()]
    for partition in created:
        logger.info(
            "access log: created partition %s (%d rows moved in from %s)",
            partition.name,
            partition.rows_moved,
            DEFAULT_PARTITION,
        )
    return created


def access_log_partitions() -> list[MonthlyPartition]:
    """The monthly partitions, oldest first (others attached by hand are left out)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid)
            FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
            WHERE i.inhparent = %s::regclass
            """,
            [TABLE],
        )
        rows = cursor.fetchall()
    partitions = []
    for name, estimate, size in rows:
        match = _MONTHLY_RE.match(name)
        if match:
            month = dt.date(int(match.group(1)), int(match.group(2)), 1)
            partitions.append(MonthlyPartition(name, month, estimate if estimate >= 0 else None, size))
    return sorted(partitions, key=lambda p: p.month)


def access_log_retention_cutoff(*, keep_months: int, now: dt.datetime | None = None) -> dt.datetime:
    """The start of the month ``keep_months`` before the current one (UTC): rows from
    then on are kept, so every row stays at least ``keep_months`` whole months."""
    return _months_after((now or timezone.now()).astimezone(dt.UTC).date(), -keep_months)


def access_log_retention_apply(
    *, keep_months: int, dry_run: bool = False, force: bool = False, now: dt.datetime | None = None
) -> RetentionOutcome:
    """Drop the access log's months that ended before the retention cutoff.

    1. Refuse a ``keep_months`` below one, or below MIN_KEEP_MONTHS unless ``force``.
    2. Give rows waiting in the DEFAULT partition their months (they are moved, so
       that expired ones are dropped with their month instead of lingering there).
    3. For each monthly partition that ended on or before the cutoff: DETACH it and
       DROP the table, in a transaction of its own, and log it.

    Never deletes a row: a whole month goes or stays. Needs the table's owner."""
    if keep_months < 1:
        raise ValidationError({"keep_months": "Keep at least the last month: give 1 or more."})
    if keep_months < MIN_KEEP_MONTHS and not force:
        raise ValidationError(
            {
                "keep_months": (
                    f"{keep_months} is below the {MIN_KEEP_MONTHS} months kept at least; if a "
                    "shorter retention is really decided, confirm it with --force."
                )
            }
        )
    cutoff = access_log_retention_cutoff(keep_months=keep_months, now=now)
    moved: list[CreatedPartition] = []
    expired_in_default = 0
    if dry_run:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {DEFAULT_PARTITION} WHERE at < %s", [cutoff])
            expired_in_default = cursor.fetchone()[0]  # type: ignore[index]
    else:
        moved = [p for p in access_log_partitions_ensure() if p.rows_moved]
    dropped: list[MonthlyPartition] = []
    kept: list[MonthlyPartition] = []
    for partition in access_log_partitions():
        if _months_after(partition.month, 1) > cutoff:
            kept.append(partition)
            continue
        dropped.append(partition)
        if dry_run:
            continue
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
            # Rows written earlier in the same transaction (a script, a test) still
            # owe their deferred foreign-key check, and a table with pending checks
            # cannot be dropped: check them now, then defer the constraint again.
            deferred = _deferred_foreign_keys(cursor)
            for name in deferred:
                cursor.execute(f'SET CONSTRAINTS "{name}" IMMEDIATE')
            cursor.execute(f'ALTER TABLE {TABLE} DETACH PARTITION "{partition.name}"')
            cursor.execute(f'DROP TABLE "{partition.name}"')
            for name in deferred:
                cursor.execute(f'SET CONSTRAINTS "{name}" DEFERRED')
        logger.warning(
            "access log retention: dropped %s; rows before %s are gone (keeping %d months)",
            partition.label,
            cutoff.date().isoformat(),
            keep_months,
        )
    return RetentionOutcome(cutoff, dropped, kept, moved, expired_in_default)


def _deferred_foreign_keys(cursor: CursorWrapper) -> list[str]:
    cursor.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f' AND condeferred",
        [TABLE],
    )
    return [name for (name,) in cursor.fetchall()]


def _months_after(day: dt.date, months: int) -> dt.datetime:
    """The first instant (UTC) of the month ``months`` after the month of ``day``."""
    index = day.year * 12 + day.month - 1 + months
    return dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.UTC)
