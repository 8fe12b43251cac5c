"""Touchpoint sync, applying: Celery workers claim pending inbox results in
batches (crm.services.touchpoint_claims) and apply each through the same
services as the rest of the product (crm.services.touchpoint_effects, set-based
in crm.services.touchpoint_bulk), writing every outcome with the effects.

A result is applied once whatever the redeliveries, replays or concurrent
workers: it is unique per source and external id, and claimed by the row lock
the applying transaction takes on it until that transaction ends.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from crm import realtime
from crm.exceptions import Conflict, FieldAccessDenied
from crm.models.choices import ResultStatus
from crm.services.touchpoint_claims import (
    Claimed,
    _claim_forget,
    _claim_note,
    lease,
    lost_claims_count,
    touchpoint_results_claim,
)
from crm.services.touchpoints import _jsonb, touchpoint_apply_enqueue

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    status: str
    customer_id: int | None = None
    error: dict[str, Any] | None = None
    retry_at: dt.datetime | None = None


# Every outcome of a claim in one statement, with the claim itself: who took the
# result, when, and its attempts (this one included). The rows are this
# transaction's (its claim locked them); a release after the database went away
# (``only_free``) writes only those still pending and locked by nobody.
_UPDATE_OUTCOMES = """
UPDATE crm_touchpointresult t
SET status = x.status, error = x.error, customer_id = COALESCE(x.customer_id, t.customer_id),
    applied_at = x.applied_at, attempts = x.attempts, claimed_by = %(token)s,
    -- Pending again: the lease is set to end at the retry time, so the result waits out
    -- its backoff. Otherwise when it was claimed (how long it waited, how long it took).
    claimed_at = COALESCE(x.claimed_at, %(claimed_at)s)
FROM jsonb_to_recordset(%(rows)s) AS x(id bigint, status text, error jsonb, customer_id bigint,
    applied_at timestamptz, claimed_at timestamptz, attempts integer)
WHERE t.id = x.id
"""
_ONLY_FREE = """
  AND t.id IN (SELECT f.id FROM crm_touchpointresult f
               WHERE f.id = ANY(%(ids)s) AND (f.status || '') = 'pending' FOR NO KEY UPDATE SKIP LOCKED)
"""

# The status as a range, not an equality: "status = 'pending'" matches the partial
# indexes of pending rows, and the planner (statistics behind, see crm.services.touchpoint_claims) probed each
# batch by reading one of them whole, every pending row of the inbox (~50 ms a call,
# twice per claim). A range is no proof of their predicates, so the batch's own
# entries in (batch, status) are read, a handful.
_COMPLETE_BATCHES = """
UPDATE crm_touchpointbatch b SET completed_at = %(now)s
WHERE b.id = ANY(%(ids)s) AND b.completed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM crm_touchpointresult r WHERE r.batch_id = b.id
                  AND r.status >= 'pending' AND r.status <= 'pending')
"""


def _outcomes_save(
    outcomes: dict[int, Outcome],
    *,
    claimed: list[Claimed],
    token: str,
    claimed_at: dt.datetime,
    only_free: bool = False,
) -> None:
    applied_at = timezone.now().isoformat()
    attempts = {c.id: c.attempts for c in claimed}
    rows = [
        {
            "id": pk,
            "status": o.status,
            "error": o.error,
            "customer_id": o.customer_id,
            "applied_at": applied_at if o.status == ResultStatus.APPLIED else None,
            "claimed_at": (o.retry_at - lease()).isoformat() if o.retry_at else None,
            "attempts": attempts[pk],
        }
        for pk, o in outcomes.items()
    ]
    with connection.cursor() as cursor:
        params: dict[str, Any] = {
            "rows": _jsonb(rows), "token": token, "claimed_at": claimed_at, "ids": sorted(outcomes),
        }  # fmt: skip
        cursor.execute(_UPDATE_OUTCOMES + (_ONLY_FREE if only_free else ""), params)
    ids = sorted({c.batch_id for c in claimed})
    _batches_complete(ids)
    # Once more after the commit: two workers finishing the last results of one
    # batch at once each still see the other's as pending inside their own
    # transaction, so neither marks it there; after its commit, the later sees both.
    transaction.on_commit(lambda: _batches_complete(ids))


def _batches_complete(batch_ids: list[int]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_COMPLETE_BATCHES, {"now": timezone.now(), "ids": batch_ids})


def _backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(5 * 2 ** max(attempts - 1, 0), settings.CRM_INGEST_LEASE_SECONDS))


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ValidationError):
        detail: Any = exc.message_dict if hasattr(exc, "error_dict") else {"result": exc.messages}
        return {"reason": "invalid", "fields": detail}
    if isinstance(exc, Conflict):
        return {"reason": "conflict", "fields": exc.errors}
    if isinstance(exc, FieldAccessDenied):
        return {"reason": "field_access", "fields": exc.errors}
    return {"reason": "error", "message": f"{type(exc).__name__}: {exc}"[:1000]}


# Errors in the result's own data: applying it again gives the same answer.
DATA_ERRORS = (ValidationError, Conflict, FieldAccessDenied)
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


# The customers the batch's keys were linked to, and their source records' last_seen_at
# refreshed (at most once a day per key, as source_records_seen): one pass over the
# keys' index instead of a look-up and an update that each probed it.
_SOURCE_KEYS_SEEN = """
WITH found AS MATERIALIZED (
    SELECT id, external_key, customer_id, last_seen_at FROM crm_sourcerecord
    WHERE source_system_id = %(source)s
      AND external_key = ANY(ARRAY(SELECT jsonb_array_elements_text(%(keys)s::jsonb)))
), seen AS (
    UPDATE crm_sourcerecord r SET last_seen_at = %(now)s
    FROM found WHERE r.id = found.id AND found.last_seen_at < %(stale)s
)
SELECT external_key, customer_id FROM found
"""


def _source_keys_seen(source_id: int, keys: list[str]) -> dict[str, int]:
    wanted = sorted({k for k in keys if k})
    if not wanted:
        return {}
    now = timezone.now()
    with connection.cursor() as cursor:
        params: dict[str, Any] = {
            "source": source_id, "keys": json.dumps(wanted), "now": now, "stale": now - dt.timedelta(days=1),
        }  # fmt: skip
        cursor.execute(_SOURCE_KEYS_SEEN, params)
        return dict(cursor.fetchall())


def _claimed_batch_apply(claimed: list[Claimed], *, token: str, claimed_at: dt.datetime) -> int:
    """Apply one claimed batch in the claim's transaction; return how many were applied.

    1. dead-letter the results past their attempts; 2. apply each of the others
       (set-based where it can, else in a savepoint of its own: a data error
       rejects that result only, with its reason; any other error leaves it
       pending to retry with a backoff); 3. write every outcome in one statement
       and mark batches with nothing left pending."""
    from crm.services.touchpoint_bulk import bulk_candidates, results_apply_bulk  # noqa: PLC0415
    from crm.services.touchpoint_effects import ApplyContext, result_apply  # noqa: PLC0415

    max_attempts = settings.CRM_INGEST_MAX_ATTEMPTS
    context = ApplyContext()
    outcomes: dict[int, Outcome] = {}
    live: list[Claimed] = []
    for result in claimed:
        if result.attempts > max_attempts:
            outcomes[result.id] = Outcome(
                ResultStatus.DEAD,
                error={"reason": "attempts", "message": f"Not applied after {max_attempts} attempts "
                       "(the worker was lost each time): check the worker's log, then retry it."},
            )  # fmt: skip
        else:
            live.append(result)
    for source_id in {r.source_system_id for r in live}:
        keys = [r.customer_key for r in live if r.source_system_id == source_id]
        context.keys.setdefault(source_id, {}).update(_source_keys_seen(source_id, keys))
    bulk, one_by_one = bulk_candidates(live, context=context)
    if bulk:
        try:
            with transaction.atomic():
                done, deferred = results_apply_bulk(bulk, context=context)
            outcomes.update(done)
            one_by_one = deferred + one_by_one
        except TRANSIENT_ERRORS:
            raise
        except Exception:
            # A row the set-based statements refuse (or a bug there): the savepoint
            # is rolled back and each result goes the slow way, where an error
            # stays with its own result.
            logger.warning("bulk apply of %s results failed; applying one by one", len(bulk), exc_info=True)
            one_by_one = bulk + one_by_one
    for result in one_by_one:
        try:
            with transaction.atomic():
                outcome = result_apply(result, context=context)
        except DATA_ERRORS as exc:
            outcome = Outcome(ResultStatus.REJECTED, error=_error(exc))
        except TRANSIENT_ERRORS:
            raise  # the connection is gone, and the claim with it
        except Exception as exc:  # a bug in one result must not stop the rest of the batch
            logger.exception("touchpoint result %s failed", result.id)
            if result.attempts >= max_attempts:
                outcome = Outcome(ResultStatus.DEAD, error=_error(exc))
            else:
                outcome = Outcome(
                    ResultStatus.PENDING, error=_error(exc),
                    retry_at=timezone.now() + _backoff(result.attempts),
                )  # fmt: skip
        outcomes[result.id] = outcome
    applied = sum(o.status == ResultStatus.APPLIED for o in outcomes.values())
    if outcomes:
        _outcomes_save(outcomes, claimed=claimed, token=token, claimed_at=claimed_at)
    return applied


def _release_after_transient(
    claimed: list[Claimed], *, token: str, claimed_at: dt.datetime, exc: BaseException
) -> bool:
    """After the database went away mid-batch (the claim's transaction with it):
    note the error and a backoff on each result still pending and not taken by
    another worker since (dead past its attempts). False if that failed too (the
    database still away): the attempt is then counted from the claim's note."""
    max_attempts = settings.CRM_INGEST_MAX_ATTEMPTS
    now = timezone.now()
    outcomes = {
        c.id: Outcome(ResultStatus.DEAD, error=_error(exc))
        if c.attempts >= max_attempts
        else Outcome(ResultStatus.PENDING, error=_error(exc), retry_at=now + _backoff(c.attempts))
        for c in claimed
    }
    try:
        with transaction.atomic():
            _outcomes_save(outcomes, claimed=claimed, token=token, claimed_at=claimed_at, only_free=True)
    except DatabaseError:
        logger.warning("could not note the error on %s touchpoint results; they stay pending", len(claimed))
        return False
    return True


def touchpoint_results_apply(
    *, limit: int = 500, worker: str = "", budget_seconds: float | None = None
) -> int:
    """Claim and apply pending results until none is left or the time budget is
    spent; return how many were applied.

    Each batch is one transaction: the claim (row locks: a redelivered task or a
    second worker takes other rows, never the same ones), the effects, the
    outcomes. A database that went away ends the run with the error (the task
    retries); the results claimed then wait for their backoff."""
    budget = settings.CRM_INGEST_TASK_BUDGET_SECONDS if budget_seconds is None else budget_seconds
    deadline = time.monotonic() + budget
    total = 0
    while True:
        token = f"{worker[:40]}:{uuid.uuid4().hex[:12]}"
        claimed: list[Claimed] = []
        noted = False
        lost_claims_count(token=token)
        claimed_at = timezone.now()
        try:
            # Real-time messages of the whole batch leave together, after the commit.
            with transaction.atomic(), realtime.batched():
                claimed = touchpoint_results_claim(limit=limit, token=token)
                if claimed:
                    noted = _claim_note(token, claimed)
                    total += _claimed_batch_apply(claimed, token=token, claimed_at=claimed_at)
        except TRANSIENT_ERRORS as exc:
            released = claimed and _release_after_transient(
                claimed, token=token, claimed_at=claimed_at, exc=exc
            )
            if released and noted:
                _claim_forget(token)
            raise
        # Any other error leaves the note: the attempt is counted as a lost one.
        if noted:
            _claim_forget(token)
        if not claimed or time.monotonic() >= deadline:
            return total


# Pending results free to take: not in a retry's backoff, not locked by a claim in
# progress (a probe with the lock a claim's lock conflicts with, held for the
# statement only; a claim that meets it passes that row over until its next window).
_FREE_PENDING = """
SELECT 1 FROM crm_touchpointresult
WHERE status = 'pending' AND received_at < %(before)s AND (claimed_at IS NULL OR claimed_at < %(stale)s)
LIMIT 1 FOR SHARE SKIP LOCKED
"""


def _free_pending(before: dt.datetime) -> bool:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_FREE_PENDING, {"before": before, "stale": timezone.now() - lease()})
        return cursor.fetchone() is not None


def touchpoint_results_overdue(*, older_than: dt.timedelta | None = None) -> bool:
    """Whether a result has waited longer than ``older_than`` (by default
    CRM_INGEST_SWEEP_AFTER_SECONDS) for a worker: its message was lost, or
    every worker was down."""
    if older_than is None:
        older_than = dt.timedelta(seconds=settings.CRM_INGEST_SWEEP_AFTER_SECONDS)
    return _free_pending(timezone.now() - older_than)


def touchpoint_results_pending() -> bool:
    """Whether some result is pending and free to claim now."""
    return _free_pending(timezone.now() + dt.timedelta(days=1))


def touchpoint_results_sweep() -> bool:
    """The beat sweep: enqueue an apply run when results are overdue."""
    if touchpoint_results_overdue():
        return touchpoint_apply_enqueue(force=True)
    return False
