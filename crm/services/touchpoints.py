"""Touchpoint sync: results from source systems into the inbox, then into the record.

Intake (``touchpoint_batch_receive``) checks each item on its own, stores the
valid ones in one set-based INSERT and answers; applying
(``touchpoint_results_apply``, run by Celery workers) claims pending results in
batches and applies each through the same services as the rest of the product
(crm.services.touchpoint_effects). A result is applied once whatever the
redeliveries, replays or concurrent workers: it is unique per source and
external id, claimed with a conditional update, and re-checked under a row lock
before its effects are written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from crm import realtime
from crm.exceptions import Conflict, FieldAccessDenied
from crm.mapping import apply_mappings
from crm.models import FieldMapping, SeenSignature, SourceSystem, TouchpointBatch, TouchpointResult, User
from crm.models.choices import BatchOrigin, RecordKind, ResultStatus
from crm.services.sources import source_records_seen

logger = logging.getLogger(__name__)

MAX_BATCH_ITEMS = 1000
ITEM_FIELDS = ("external_id", "record_kind", "customer_key", "sequence", "occurred_at", "payload")
_ITEM_FIELDS = frozenset(ITEM_FIELDS)
# Read once: ``RecordKind.values`` builds its list anew on every access, twice per item.
_KINDS = frozenset(RecordKind.values)
_KINDS_HINT = f"Use one of: {', '.join(RecordKind.values)}."
_BIGINT = 2**63 - 1


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=partial(json.dumps, cls=DjangoJSONEncoder))


# --- Mappings ------------------------------------------------------------------------------


def source_mappings(source: SourceSystem) -> dict[str, list[FieldMapping]]:
    """The source's field mappings by record kind, in their order (one query)."""
    by_kind: dict[str, list[FieldMapping]] = {}
    for mapping in FieldMapping.objects.filter(source_system=source).order_by(
        "record_kind", "position", "id"
    ):
        by_kind.setdefault(mapping.record_kind, []).append(mapping)
    return by_kind


def result_map(
    *,
    source: SourceSystem,
    record_kind: str,
    payload: dict[str, Any],
    mappings: dict[str, list[FieldMapping]],
) -> dict[str, Any]:
    """Map one result's payload with the source's mappings of its kind; raise a
    ValidationError keyed ``payload.<source field>`` naming each bad value."""
    kind_mappings = mappings.get(record_kind)
    if not kind_mappings:
        raise ValidationError(
            {
                "record_kind": f"{source.code} has no field mappings for {record_kind} records: ask an "
                "administrator to map this kind's fields (admin, Source systems)."
            }
        )
    try:
        return apply_mappings(
            payload, kind_mappings, time_zone=source.time_zone, phone_region=source.phone_region
        )
    except ValidationError as exc:
        raise ValidationError(
            {f"payload.{name}": messages for name, messages in exc.message_dict.items()}
        ) from None


# --- Intake --------------------------------------------------------------------------------


def _item_check(
    item: Any, *, source: SourceSystem, mappings: dict[str, list[FieldMapping]]
) -> tuple[dict[str, Any] | None, dict[str, list[str]]]:
    """One item as a row to store, or the errors by field (never both)."""
    if not isinstance(item, dict):
        return None, {
            "item": ["Each result must be a JSON object with external_id, record_kind and payload."]
        }
    errors: dict[str, list[str]] = {}
    unknown = sorted(item.keys() - _ITEM_FIELDS)
    for name in unknown:
        errors[name] = [f"Not a result field: use only {', '.join(ITEM_FIELDS)}."]
    external_id = item.get("external_id")
    if isinstance(external_id, int) and not isinstance(external_id, bool):
        external_id = str(external_id)
    if not isinstance(external_id, str) or not external_id.strip() or len(external_id.strip()) > 120:
        errors["external_id"] = ["Give the source's own id of this result (text, 1-120 characters)."]
        external_id = ""
    external_id = external_id.strip()
    kind = item.get("record_kind")
    if kind not in _KINDS:
        errors["record_kind"] = [_KINDS_HINT]
    customer_key = item.get("customer_key") or ""
    if isinstance(customer_key, int) and not isinstance(customer_key, bool):
        customer_key = str(customer_key)
    if not isinstance(customer_key, str) or len(customer_key.strip()) > 120:
        errors["customer_key"] = ["Give the source's key of the customer as text of at most 120 characters."]
        customer_key = ""
    customer_key = customer_key.strip()
    sequence = item.get("sequence")
    if sequence is not None and (
        not isinstance(sequence, int) or isinstance(sequence, bool) or not -_BIGINT <= sequence <= _BIGINT
    ):
        errors["sequence"] = ["Must be a whole number (the source's order of its results)."]
    occurred_at = _moment(item.get("occurred_at"), errors)
    payload = item.get("payload")
    if not isinstance(payload, dict):
        errors["payload"] = ["Must be a JSON object of the source's fields."]
    elif kind in _KINDS:
        try:
            mapped = result_map(source=source, record_kind=kind, payload=payload, mappings=mappings)
        except ValidationError as exc:
            errors.update(exc.message_dict)
        else:
            # A source may send its customer key inside the record instead of beside it.
            customer_key = customer_key or str(mapped.get("customer.external_key") or "")[:120]
    if errors:
        return None, errors
    row = {
        "external_id": external_id,
        "record_kind": kind,
        "customer_key": customer_key,
        "sequence": sequence,
        "occurred_at": occurred_at.isoformat() if occurred_at else None,
        "payload": payload,
    }
    return row, {}


def _moment(value: Any, errors: dict[str, list[str]]) -> dt.datetime | None:
    if value in (None, ""):
        return None
    message = "Give an ISO 8601 date and time with its offset, e.g. 2026-03-01T14:30:00Z or …+02:00."
    if not isinstance(value, str):
        errors["occurred_at"] = [message]
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        errors["occurred_at"] = [message]
        return None
    if moment.tzinfo is None:
        errors["occurred_at"] = [f"“{value}” has no time zone: add Z or an offset such as +02:00."]
        return None
    return moment.astimezone(dt.UTC)


_INSERT_RESULTS = """
INSERT INTO crm_touchpointresult (batch_id, source_system_id, external_id, record_kind, customer_key,
    sequence, occurred_at, payload, status, attempts, error, customer_id, received_at, enqueued_at,
    claimed_at, claimed_by, applied_at)
SELECT %(batch)s, %(source)s, x.external_id, x.record_kind, x.customer_key, x.sequence, x.occurred_at,
    x.payload, 'pending', 0, NULL, NULL, %(now)s, %(now)s, NULL, '', NULL
FROM jsonb_to_recordset(%(rows)s) AS x(external_id text, record_kind text, customer_key text,
    sequence bigint, occurred_at timestamptz, payload jsonb)
ON CONFLICT (source_system_id, external_id) DO NOTHING
"""


def touchpoint_batch_receive(
    *,
    source: SourceSystem,
    items: Sequence[Any],
    origin: str = BatchOrigin.API,
    file_name: str = "",
    actor: User | None = None,
) -> TouchpointBatch:
    """Store a batch of results from ``source`` in the inbox, durably, and have it applied.

    1. refuse a batch that is not a list of 1-1,000 items (nothing is stored);
    2. check each item on its own, with the source's mappings of its record kind:
       a bad item is refused with its errors by field, the others go on;
    3. in one transaction: the batch row, then every valid item in one INSERT
       that skips external ids the source sent before (stored once, applied once),
       then the counts;
    4. once that commits, enqueue the apply task (the beat sweep catches up if
       the broker is away).

    ``actor`` is who sent it (the source's integration user; kept for the log);
    a file import passes ``origin=BatchOrigin.FILE`` and the file's name."""
    if not isinstance(items, list | tuple) or not items:
        raise ValidationError({"results": "Send a list of 1 to 1,000 results."})
    if len(items) > MAX_BATCH_ITEMS:
        raise ValidationError(
            {"results": f"{len(items)} results in one batch: send at most {MAX_BATCH_ITEMS} per batch."}
        )
    if origin not in BatchOrigin.values:
        raise ValidationError({"origin": f"Use one of: {', '.join(BatchOrigin.values)}."})
    mappings = source_mappings(source)
    rows: list[dict[str, Any]] = []
    intake_errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        row, errors = _item_check(item, source=source, mappings=mappings)
        if row is not None:
            rows.append(row)
        else:
            external_id = item.get("external_id") if isinstance(item, dict) else None
            intake_errors.append(
                {"index": index, "external_id": external_id if isinstance(external_id, str) else None,
                 "errors": errors}
            )  # fmt: skip
    now = timezone.now()
    with transaction.atomic():
        batch = TouchpointBatch.objects.create(
            source_system=source, origin=origin, file_name=file_name[:255], received_at=now,
            submitted=len(items), refused=len(intake_errors), intake_errors=intake_errors,
        )  # fmt: skip
        accepted = 0
        if rows:
            params: dict[str, Any] = {
                "batch": batch.pk,
                "source": source.pk,
                "now": now,
                "rows": _jsonb(rows),
            }
            with connection.cursor() as cursor:
                cursor.execute(_INSERT_RESULTS, params)
                accepted = cursor.rowcount
        batch.accepted = accepted
        batch.duplicates = len(rows) - accepted
        if accepted == 0:
            batch.completed_at = now  # nothing of it is left to apply
        batch.save(update_fields=["accepted", "duplicates", "completed_at"])
        if accepted:
            transaction.on_commit(touchpoint_apply_enqueue)
    logger.info(
        "touchpoint batch %s from %s by %s: %s sent, %s new, %s duplicates, %s refused",
        batch.pk, source.code, actor or "the system", batch.submitted, batch.accepted, batch.duplicates,
        batch.refused,
    )  # fmt: skip
    return batch


def _queued_key() -> str:
    return f"touchpoint-apply-queued:{settings.CRM_INGEST_QUEUE or settings.CELERY_TASK_DEFAULT_QUEUE}"


# How long a run counts as queued without having started (a message lost with a
# worker that had reserved it): after this, intake asks again.
QUEUED_MARK_SECONDS = 60


def touchpoint_apply_enqueue(*, force: bool = False) -> bool:
    """Ask a worker to apply pending results, unless a run is already queued and
    has not started yet: a run claims whatever is pending when it runs, these
    results too. So a thousand batches received while workers are busy make a
    few messages, not a thousand (each of which would cost a worker a claim
    query). The mark is set here and cleared by the run as it starts
    (``touchpoint_apply_started``); ``force`` (the beat sweep) sends regardless.

    A broker that is away loses nothing: the results are in PostgreSQL and the
    beat sweep asks again."""
    from crm import tasks  # noqa: PLC0415  (tasks import the services)

    key = _queued_key()
    try:
        if not cache.add(key, 1, QUEUED_MARK_SECONDS) and not force:
            return True  # a run that has not started yet will take these
    except Exception:
        logger.warning("could not read whether an apply run is queued; asking anyway", exc_info=True)
    try:
        options: dict[str, Any] = {"queue": settings.CRM_INGEST_QUEUE} if settings.CRM_INGEST_QUEUE else {}
        tasks.touchpoint_results_apply.apply_async(**options)
    except Exception:
        logger.warning("could not enqueue touchpoint apply; the sweep will", exc_info=True)
        _queued_clear()
        return False
    return True


def _queued_clear() -> None:
    try:
        cache.delete(_queued_key())
    except Exception:
        logger.warning("could not clear the queued mark; it expires", exc_info=True)


def touchpoint_apply_started() -> None:
    """An apply run starts: results received from now on need a run of their own
    (this one may have claimed its last batch before they commit)."""
    _queued_clear()


# --- Signed requests ------------------------------------------------------------------------

# A signature is remembered this long: past the 5 minutes either side of our clock
# in which its request is accepted at all, so a copy can never pass once it is forgotten.
SIGNATURE_MEMORY = dt.timedelta(minutes=11)


def touchpoint_signature_remember(*, source: SourceSystem, digest: str) -> bool:
    """Note a signed request's signature; False when it was seen before (a replay).

    One INSERT that skips a digest already stored for the source (its own
    transaction, committed before the request goes on): of two copies sent at
    once exactly one gets through, and a Redis restart forgets nothing."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO crm_seensignature (source_system_id, digest, seen_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (source_system_id, digest) DO NOTHING",
            [source.pk, digest[:64], timezone.now()],
        )
        return cursor.rowcount == 1


def touchpoint_signatures_prune(*, now: dt.datetime | None = None) -> int:
    """Forget signatures older than SIGNATURE_MEMORY (beat, every few minutes);
    return how many."""
    cutoff = (now or timezone.now()) - SIGNATURE_MEMORY
    deleted, _ = SeenSignature.objects.filter(seen_at__lt=cutoff).delete()
    return deleted


# --- Applying -------------------------------------------------------------------------------


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
#    that claimed them is gone), oldest first. A result waits while an earlier
#    result of the same source and customer key is still pending (claimed or not)
#    or waits in the review queue, so one customer's results apply in the source's
#    order across batches and workers, and nothing of theirs passes a result an
#    administrator has yet to place. The order (``result_order``): by sequence, then
#    occurred_at, then arrival; a result without a sequence comes before the
#    numbered ones of its key, one without a time before the timed ones (a missing
#    value is never read as 0). SKIP LOCKED lets concurrent workers take disjoint
#    sets without waiting on each other. The LIMIT 1 keeps the NOT EXISTS a per-row
#    probe of the pending-order index.
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
_CLAIM_WINDOW = """
SELECT r.id, r.received_at FROM crm_touchpointresult r
WHERE r.status = 'pending' AND (r.received_at, r.id) > (%(after_at)s, %(after_id)s)
ORDER BY r.received_at, r.id
LIMIT %(window)s
"""

_CLAIM = """
WITH picked AS (
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
    ORDER BY r.received_at, r.id
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
    after: tuple[dt.datetime, int] = (dt.datetime.min.replace(tzinfo=dt.UTC), 0)
    rows: list[Any] = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")  # a claim lost in a crash is no claim
        # With statistics that say "a few rows" (they always lag, see above), the
        # planner may sort instead of reading the pending index in order, and read
        # the whole inbox for it; neither a sort nor a sequential scan has a place here.
        cursor.execute("SET LOCAL enable_seqscan TO OFF")
        while len(rows) < limit:
            cursor.execute("SET LOCAL enable_sort TO OFF")
            cursor.execute(_CLAIM_WINDOW, {"after_at": after[0], "after_id": after[1], "window": window})
            candidates = cursor.fetchall()
            if not candidates:
                break
            # The window's few thousand rows are sorted; the pending index is not read again.
            cursor.execute("SET LOCAL enable_sort TO ON")
            params: dict[str, Any] = {
                "ids": json.dumps([pk for pk, _ in candidates]), "stale": now - lease(),
                "limit": limit - len(rows), "now": now, "token": token,
            }  # fmt: skip
            cursor.execute(_CLAIM, params)
            rows.extend(cursor.fetchall())
            if len(candidates) < window:
                break
            after = (candidates[-1][1], candidates[-1][0])
    claimed = [Claimed(*row) for row in rows]
    for result in claimed:
        if isinstance(result.payload, str):  # a driver without the jsonb loader
            result.payload = json.loads(result.payload)
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

_COMPLETE_BATCHES = """
UPDATE crm_touchpointbatch b SET completed_at = %(now)s
WHERE b.id = ANY(%(ids)s) AND b.completed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM crm_touchpointresult r WHERE r.batch_id = b.id AND r.status = 'pending')
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
            cursor.execute(
                "SELECT id FROM crm_touchpointresult"
                " WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)::bigint))"
                " AND claimed_by = %s"
                " AND status = 'pending' ORDER BY id FOR UPDATE",
                [json.dumps([c.id for c in claimed]), token],
            )
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
            context.prefetch_keys(context.source(source_id), keys)
            source_records_seen(source=context.source(source_id), keys=keys)
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
