"""Touchpoint sync, applying: Celery workers claim pending inbox results in
batches and apply each through the same services as the rest of the product
(crm.services.touchpoint_effects, set-based in crm.services.touchpoint_bulk).

A result is applied once whatever the redeliveries, replays or concurrent
workers: it is unique per source and external id, claimed with a conditional
update, and re-checked under a row lock before its effects are written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from crm import json_codec, realtime
from crm.exceptions import Conflict, FieldAccessDenied
from crm.models import TouchpointResult
from crm.models.choices import ResultStatus
from crm.services.touchpoints import _jsonb, touchpoint_apply_enqueue

logger = logging.getLogger(__name__)


@dataclass
class Claimed:
    """A pending result this worker claimed, as the claim returned it."""

    id: int
    batch_id: int
    source_system_id: int
    external_id: str
    record_kind: str
    customer_key: str
    sequence: int | None
    occurred_at: dt.datetime | None
    payload: dict[str, Any]
    attempts: int
    customer_id: int | None


# The claim, in two steps per window of the inbox, both in one transaction.
#
# 1. ``_CLAIM_WINDOW``: the next pending results by arrival, read off the pending
#    index in its own order (a range scan that stops after ``window`` rows).
# 2. ``_CLAIM``: of those, the ones whose lease is free (never claimed, or the worker
#    that claimed them is gone), first come first (by id: see the statement). A
#    result waits while an earlier result of the same source and customer key is
#    still pending (claimed or not) or waits in the review queue, so one customer's
#    results apply in the source's order across batches and workers, and nothing
#    of theirs passes a result an administrator has yet to place. The order
#    (``result_order``): by sequence, then occurred_at, then arrival; a result
#    without a sequence comes before the numbered ones of its key, one without a
#    time before the timed ones (a missing value is never read as 0). SKIP LOCKED
#    lets concurrent workers take disjoint sets without waiting on each other. The
#    LIMIT 1 keeps the NOT EXISTS a per-row probe of the pending-order index.
#
# Why the window: in one statement, the planner (whose statistics of the inbox are
# always stale: thousands of rows arrive and leave the pending state between two
# analyses) scanned every pending and waiting row of the inbox, probed the order
# of each, then sorted them to keep the oldest thousand: a claim cost grew with the
# backlog (EXPLAIN ANALYZE: 20,000 probes and 95,000 buffers for 1,000 rows with a
# backlog of 20,000; minutes with a backlog of a million). A window bounds each
# statement to ``window`` probes whatever the backlog; the next window starts after
# the last row of this one, so a backlog whose head is held (claimed by another
# worker, waiting behind a review) is passed over, never waited on.
#
# The window comes back as one row: how many, their ids as the JSON array the claim
# takes, and where the next window starts (its last row by arrival, the time as
# text). Fetched as rows, a window's two thousand times parsed into datetimes in
# Python were a sixth of a worker's samples while it applied.
_CLAIM_WINDOW = """
WITH w AS MATERIALIZED (
    SELECT r.id, r.received_at FROM crm_touchpointresult r
    WHERE r.status = 'pending' AND (r.received_at, r.id) > (%(after_at)s::timestamptz, %(after_id)s)
    ORDER BY r.received_at, r.id
    LIMIT %(window)s
)
SELECT count(*), COALESCE(json_agg(w.id), '[]')::text, max(w.received_at)::text,
    max(w.id) FILTER (WHERE w.received_at = (SELECT max(received_at) FROM w))
FROM w
"""

_CLAIM = """
WITH picked AS MATERIALIZED (  -- evaluated once: a rescan would skip its own rows and pick more
    SELECT r.id FROM crm_touchpointresult r
    WHERE r.id = ANY(ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)::bigint))
      -- Written so no partial index of pending rows matches it: their statistics (see
      -- above) make a scan of a whole one look cheaper than the window's primary-key probes.
      AND (r.status || '') = 'pending'
      AND (r.claimed_at IS NULL OR r.claimed_at < %(stale)s)
      AND (r.customer_key = '' OR NOT EXISTS (
            SELECT 1 FROM crm_touchpointresult e
            WHERE e.source_system_id = r.source_system_id AND e.customer_key = r.customer_key
              AND e.status IN ('pending', 'review') AND e.id <> r.id
              AND (e.sequence IS NOT NULL, COALESCE(e.sequence, 0), e.occurred_at IS NOT NULL,
                   COALESCE(e.occurred_at, '-infinity'::timestamptz), e.id)
                < (r.sequence IS NOT NULL, COALESCE(r.sequence, 0), r.occurred_at IS NOT NULL,
                   COALESCE(r.occurred_at, '-infinity'::timestamptz), r.id)
            LIMIT 1))
    -- By id within the window (its rows arrived in about that order): the primary key's
    -- scan of the window's ids is in that order, so it stops once ``limit`` rows qualify,
    -- where ordering by arrival time probed every row of the window and sorted them.
    ORDER BY r.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE crm_touchpointresult t
SET claimed_at = %(now)s, claimed_by = %(token)s, attempts = t.attempts + 1
FROM picked WHERE t.id = picked.id
RETURNING t.id, t.batch_id, t.source_system_id, t.external_id, t.record_kind, t.customer_key, t.sequence,
    t.occurred_at, t.payload, t.attempts, t.customer_id
"""


def result_order(sequence: int | None, occurred_at: dt.datetime | None, pk: int) -> tuple[Any, ...]:
    """A result's place in its source's order for one customer key, as the claim
    compares them: sequence, then occurred_at, then arrival (the id); a missing
    sequence or time sorts before any given one."""
    return (
        sequence is not None, sequence or 0, occurred_at is not None,
        occurred_at or dt.datetime.min.replace(tzinfo=dt.UTC), pk,
    )  # fmt: skip


def lease() -> dt.timedelta:
    return dt.timedelta(seconds=settings.CRM_INGEST_LEASE_SECONDS)


def touchpoint_results_claim(*, limit: int, token: str) -> list[Claimed]:
    """Claim up to ``limit`` pending results for ``token`` (its own transaction:
    the claim must be visible to other workers at once), window by window of the
    pending results in arrival order until ``limit`` are claimed or none is left."""
    now = timezone.now()
    window = max(2 * limit, 100)
    after: tuple[str, int] = ("-infinity", 0)
    rows: list[Any] = []
    with transaction.atomic(), connection.cursor() as cursor:
        # A claim lost in a crash is no claim: its commit need not wait for the disk.
        # With statistics that say "a few rows" (they always lag, see above), the
        # planner may sort instead of reading the pending index in order, and read
        # the whole inbox for it; neither a sort nor a sequential scan has a place here
        # (the claim takes the window's rows in primary-key order). One statement for
        # the three settings: each is a round trip.
        cursor.execute(
            "SELECT set_config('synchronous_commit', 'off', true), set_config('enable_seqscan', 'off', true),"
            " set_config('enable_sort', 'off', true)"
        )
        while len(rows) < limit:
            cursor.execute(_CLAIM_WINDOW, {"after_at": after[0], "after_id": after[1], "window": window})
            found, ids, last_at, last_id = cursor.fetchone()
            if not found:
                break
            params: dict[str, Any] = {
                "ids": ids, "stale": now - lease(), "limit": limit - len(rows), "now": now, "token": token,
            }  # fmt: skip
            cursor.execute(_CLAIM, params)
            rows.extend(cursor.fetchall())
            if found < window:
                break
            after = (last_at, last_id)
    claimed = [Claimed(*row) for row in rows]
    for result in claimed:
        if isinstance(result.payload, str):  # a driver without the jsonb loader
            result.payload = json_codec.loads(result.payload)
    return sorted(claimed, key=lambda r: r.id)


@dataclass
class Outcome:
    status: str
    customer_id: int | None = None
    error: dict[str, Any] | None = None
    retry_at: dt.datetime | None = None


_UPDATE_OUTCOMES = """
UPDATE crm_touchpointresult t
SET status = x.status, error = x.error, customer_id = COALESCE(x.customer_id, t.customer_id),
    applied_at = x.applied_at,
    -- A result that left the queue keeps when it was claimed (how long it waited, how long it took).
    claimed_at = CASE WHEN x.status = 'pending' THEN x.claimed_at ELSE t.claimed_at END
FROM jsonb_to_recordset(%(rows)s) AS x(id bigint, status text, error jsonb, customer_id bigint,
    applied_at timestamptz, claimed_at timestamptz)
WHERE t.id = x.id AND t.claimed_by = %(token)s
"""

# The status as a range, not an equality: "status = 'pending'" matches the partial
# indexes of pending rows, and the planner (statistics behind, see above) probed each
# batch by reading one of them whole, every pending row of the inbox (~50 ms a call,
# twice per claim). A range is no proof of their predicates, so the batch's own
# entries in (batch, status) are read, a handful.
_COMPLETE_BATCHES = """
UPDATE crm_touchpointbatch b SET completed_at = %(now)s
WHERE b.id = ANY(%(ids)s) AND b.completed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM crm_touchpointresult r WHERE r.batch_id = b.id
                  AND r.status >= 'pending' AND r.status <= 'pending')
"""


def _outcomes_save(outcomes: dict[int, Outcome], *, token: str, batch_ids: set[int]) -> None:
    now = timezone.now()
    rows = [
        {
            "id": pk,
            "status": o.status,
            "error": o.error,
            "customer_id": o.customer_id,
            "applied_at": now.isoformat() if o.status == ResultStatus.APPLIED else None,
            # Pending again: the lease is set to end at the retry time, so the
            # result waits out its backoff instead of being taken at once.
            "claimed_at": (o.retry_at - lease()).isoformat() if o.retry_at else None,
        }
        for pk, o in outcomes.items()
    ]
    with connection.cursor() as cursor:
        params: dict[str, Any] = {"rows": _jsonb(rows), "token": token}
        cursor.execute(_UPDATE_OUTCOMES, params)
    ids = sorted(batch_ids)
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


# The claimed rows still ours and pending, locked. The status is written so that no
# partial index of pending rows matches it (as in _CLAIM): with the inbox's
# statistics always behind, the planner read a whole one (every pending row; with
# 60,000: 465 ms) instead of probing the primary key for the claimed thousand (3 ms).
_LOCK_CLAIMED = """
SELECT id FROM crm_touchpointresult
WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)::bigint)) AND claimed_by = %s
  AND (status || '') = 'pending'
ORDER BY id FOR UPDATE
"""


def _claimed_batch_apply(claimed: list[Claimed], *, token: str) -> int:
    """Apply one claimed batch in one transaction; return how many were applied.

    1. lock the claimed rows and keep those still ours and pending: a worker whose
       lease ran out while it was slow finds another worker's token and skips them;
    2. dead-letter the results past their attempts; 3. apply each of the others
       in a savepoint (a data error rejects that result only, with its reason;
       any other error leaves it pending to retry with a backoff); 4. write every
       outcome in one statement and mark batches with nothing left pending."""
    from crm.services.touchpoint_bulk import bulk_candidates, results_apply_bulk  # noqa: PLC0415
    from crm.services.touchpoint_effects import ApplyContext, result_apply  # noqa: PLC0415

    max_attempts = settings.CRM_INGEST_MAX_ATTEMPTS
    # Real-time messages of the whole batch leave together, after the commit.
    with transaction.atomic(), realtime.batched():
        with connection.cursor() as cursor:
            # The commit does not wait for its WAL to reach the disk: a database crash
            # may forget the last fraction of a second of applied batches, whole (their
            # results and effects together), and those results are simply applied
            # again. Intake, which answers 202 to the source, still commits durably.
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
            cursor.execute(_LOCK_CLAIMED, [json.dumps([c.id for c in claimed]), token])
            mine = {row[0] for row in cursor.fetchall()}
        context = ApplyContext()
        outcomes: dict[int, Outcome] = {}
        live: list[Claimed] = []
        for result in claimed:
            if result.id not in mine:
                continue
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
                logger.warning(
                    "bulk apply of %s results failed; applying one by one", len(bulk), exc_info=True
                )
                one_by_one = bulk + one_by_one
        for result in one_by_one:
            try:
                with transaction.atomic():
                    outcome = result_apply(result, context=context)
            except DATA_ERRORS as exc:
                outcome = Outcome(ResultStatus.REJECTED, error=_error(exc))
            except TRANSIENT_ERRORS:
                raise  # the connection is gone: the whole claim waits for its lease
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
            _outcomes_save(outcomes, token=token, batch_ids={c.batch_id for c in claimed})
    return applied


def _release_after_transient(claimed: list[Claimed], *, token: str, exc: BaseException) -> None:
    """After the database went away mid-batch: note the error and a backoff on
    each result (dead past its attempts). If the database is still away this
    fails too, and the results simply wait for their lease to end."""
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
            _outcomes_save(outcomes, token=token, batch_ids={c.batch_id for c in claimed})
    except DatabaseError:
        logger.warning("could not release %s touchpoint results; their lease will", len(claimed))


def touchpoint_results_apply(
    *, limit: int = 500, worker: str = "", budget_seconds: float | None = None
) -> int:
    """Claim and apply pending results until none is left or the time budget is
    spent; return how many were applied.

    1. claim up to ``limit`` results (a conditional update: a redelivered task or a
       second worker takes other rows, never the same ones);
    2. apply them in one transaction (``_claimed_batch_apply``);
    3. repeat. A database that went away ends the run with the error (the task
       retries); the results claimed then wait for their backoff."""
    import time  # noqa: PLC0415

    budget = settings.CRM_INGEST_TASK_BUDGET_SECONDS if budget_seconds is None else budget_seconds
    deadline = time.monotonic() + budget
    total = 0
    while True:
        token = f"{worker[:40]}:{uuid.uuid4().hex[:12]}"
        claimed = touchpoint_results_claim(limit=limit, token=token)
        if not claimed:
            return total
        try:
            total += _claimed_batch_apply(claimed, token=token)
        except TRANSIENT_ERRORS as exc:
            _release_after_transient(claimed, token=token, exc=exc)
            raise
        if time.monotonic() >= deadline:
            return total


def touchpoint_results_overdue(*, older_than: dt.timedelta | None = None) -> bool:
    """Whether a result has waited longer than ``older_than`` (by default
    CRM_INGEST_SWEEP_AFTER_SECONDS) for a worker: its message was lost, or
    every worker was down."""
    now = timezone.now()
    if older_than is None:
        older_than = dt.timedelta(seconds=settings.CRM_INGEST_SWEEP_AFTER_SECONDS)
    return (
        TouchpointResult.objects.filter(status=ResultStatus.PENDING, received_at__lt=now - older_than)
        .exclude(claimed_at__gte=now - lease())
        .exists()
    )


def touchpoint_results_pending() -> bool:
    """Whether some result is pending and free to claim now."""
    return (
        TouchpointResult.objects.filter(status=ResultStatus.PENDING)
        .exclude(claimed_at__gte=timezone.now() - lease())
        .exists()
    )


def touchpoint_results_sweep() -> bool:
    """The beat sweep: enqueue an apply run when results are overdue."""
    if touchpoint_results_overdue():
        return touchpoint_apply_enqueue(force=True)
    return False
