"""Touchpoint sync, intake: results from source systems into the inbox.

``touchpoint_batch_receive`` checks each item on its own against its source's
mappings, stores the valid ones in one set-based INSERT and answers; it then
asks a worker to apply them (``touchpoint_apply_enqueue``), which
crm.services.touchpoint_apply does. Signed requests remember their signatures
here, so a replayed one is refused.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from crm import json_codec
from crm.mapping import apply_mappings
from crm.models import FieldMapping, SeenSignature, SourceSystem, TouchpointBatch, User
from crm.models.choices import BatchOrigin, RecordKind

logger = logging.getLogger(__name__)

MAX_BATCH_ITEMS = 1000
ITEM_FIELDS = ("external_id", "record_kind", "customer_key", "sequence", "occurred_at", "payload")
_ITEM_FIELDS = frozenset(ITEM_FIELDS)
# Read once: ``RecordKind.values`` builds its list anew on every access, twice per item.
_KINDS = frozenset(RecordKind.values)
_KINDS_HINT = f"Use one of: {', '.join(RecordKind.values)}."
_BIGINT = 2**63 - 1


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=json_codec.dumps)


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
    if not _ITEM_FIELDS.issuperset(item):
        for name in sorted(item.keys() - _ITEM_FIELDS):
            errors[name] = [f"Not a result field: use only {', '.join(ITEM_FIELDS)}."]
    external_id = item.get("external_id")
    if isinstance(external_id, int) and not isinstance(external_id, bool):
        external_id = str(external_id)
    external_id = external_id.strip() if isinstance(external_id, str) else ""
    if not external_id or len(external_id) > 120:
        errors["external_id"] = ["Give the source's own id of this result (text, 1-120 characters)."]
        external_id = ""
    kind = item.get("record_kind")
    if kind not in _KINDS:
        errors["record_kind"] = [_KINDS_HINT]
    customer_key = item.get("customer_key") or ""
    if isinstance(customer_key, int) and not isinstance(customer_key, bool):
        customer_key = str(customer_key)
    customer_key = customer_key.strip() if isinstance(customer_key, str) else None
    if customer_key is None or len(customer_key) > 120:
        errors["customer_key"] = ["Give the source's key of the customer as text of at most 120 characters."]
        customer_key = ""
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


def touchpoint_apply_enqueue(*, force: bool = False, successor: bool = False) -> bool:
    """Ask a worker to apply pending results, unless a run is already queued and
    has not started yet: a run claims whatever is pending when it runs, these
    results too. So a thousand batches received while workers are busy make a
    few messages, not a thousand (each of which would cost a worker a claim
    query). The mark is set here and cleared by the run as it starts
    (``touchpoint_apply_started``); ``force`` (the beat sweep) sends regardless.

    ``successor``: a run that stopped at its time budget with results still
    pending asks for the run that carries on from it, always, and outside the
    mark (that run's start leaves the mark alone). Through the mark, two runs
    stopping at once made one message between them, and the worker's pool went
    on with one process busy and the others idle until the backlog was gone
    (``bench/ingest.py`` at 1M: 4,465 results/s against 9,165).

    A broker that is away loses nothing: the results are in PostgreSQL and the
    beat sweep asks again."""
    from crm import tasks  # noqa: PLC0415  (tasks import the services)

    if not successor:
        key = _queued_key()
        try:
            if not cache.add(key, 1, QUEUED_MARK_SECONDS) and not force:
                return True  # a run that has not started yet will take these
        except Exception:
            logger.warning("could not read whether an apply run is queued; asking anyway", exc_info=True)
    try:
        options: dict[str, Any] = {"queue": settings.CRM_INGEST_QUEUE} if settings.CRM_INGEST_QUEUE else {}
        if successor:
            options["kwargs"] = {"successor": True}
        tasks.touchpoint_results_apply.apply_async(**options)
    except Exception:
        logger.warning("could not enqueue touchpoint apply; the sweep will", exc_info=True)
        if not successor:
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
