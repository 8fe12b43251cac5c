"""Touchpoint sync, retention: the inbox keeps what it applied for a while, then lets it go.

Applied and rejected results stay in the inbox for CRM_TOUCHPOINT_RETENTION_DAYS
after their batch completed, so a source can read a batch's progress (and an
administrator its reasons) all that time; then a beat task deletes them, and the
batch row once nothing of it is left. Pending results, results in review and
dead-lettered ones are never purged: they still wait for a worker or a person.

Deleting a result also forgets its external id, so a source that sends that id
again after the retention has it stored and applied again. That is harmless: each
effect is idempotent on its own (contacts by source and external id, events by
source and key), and a profile value is written only if no later result of the
customer key set it already (the key's recorded order), so an old replay never
overwrites a newer value.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

# Rows per DELETE, each in its own short transaction: the purge never holds many
# row locks, nor one lock for long, and workers and intake carry on meanwhile.
PURGE_CHUNK = 2000
# Batches looked at per round (their results are found by the (batch, status) index).
PURGE_BATCHES = 50

_DONE_BATCHES = """
SELECT id FROM crm_touchpointbatch
WHERE completed_at < %(cutoff)s AND id > %(after)s
ORDER BY id
LIMIT %(limit)s
"""

# Only results that left the queue for good, and long enough ago themselves (one an
# administrator retried lately, in an old batch, keeps its own retention); SKIP
# LOCKED leaves a row someone is changing right now to the next run. The ids are
# picked once, as an array (an InitPlan): as ``id IN (SELECT … LIMIT n FOR UPDATE
# SKIP LOCKED)`` the planner may rescan the subquery for each outer row, each rescan
# skipping the rows this statement already deleted and taking n more, so one
# chunk could delete the whole batch.
_PURGE_RESULTS = """
DELETE FROM crm_touchpointresult
WHERE id = ANY(ARRAY(
    SELECT id FROM crm_touchpointresult
    WHERE batch_id = ANY(%(batches)s) AND status IN ('applied', 'rejected')
      AND COALESCE(applied_at, claimed_at, received_at) < %(cutoff)s
    LIMIT %(chunk)s
    FOR UPDATE SKIP LOCKED
))
"""

_PURGE_BATCHES = """
DELETE FROM crm_touchpointbatch b
WHERE b.id = ANY(%(batches)s)
  AND NOT EXISTS (SELECT 1 FROM crm_touchpointresult r WHERE r.batch_id = b.id)
"""


def touchpoint_retention_cutoff(*, now: dt.datetime | None = None) -> dt.datetime:
    """Batches completed before this have had their retention."""
    return (now or timezone.now()) - dt.timedelta(days=settings.CRM_TOUCHPOINT_RETENTION_DAYS)


def touchpoint_results_purge(
    *, now: dt.datetime | None = None, chunk: int = PURGE_CHUNK, budget_seconds: float = 60.0
) -> int:
    """Delete the applied and rejected results of batches completed more than the
    retention ago, in chunks of ``chunk`` rows (one short transaction each), and
    the batches left empty; stop after ``budget_seconds`` (the next run goes on).
    Returns how many results were deleted."""
    cutoff = touchpoint_retention_cutoff(now=now)
    deadline = time.monotonic() + budget_seconds
    deleted = 0
    after = 0
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(_DONE_BATCHES, {"cutoff": cutoff, "after": after, "limit": PURGE_BATCHES})
            batch_ids = [row[0] for row in cursor.fetchall()]
        if not batch_ids:
            break
        finished = True
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(_PURGE_RESULTS, {"batches": batch_ids, "chunk": chunk, "cutoff": cutoff})
                count = cursor.rowcount
            deleted += count
            if count < chunk:
                break
            if time.monotonic() >= deadline:
                finished = False
                break
        if not finished:
            break
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_PURGE_BATCHES, {"batches": batch_ids})
        after = batch_ids[-1]
    if deleted:
        logger.info("purged %s touchpoint results of batches completed before %s", deleted, cutoff)
    return deleted
