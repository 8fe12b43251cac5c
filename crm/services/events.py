"""Business events: the one way a fact enters the loop."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import psycopg
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.backends.utils import CursorWrapper
from django.utils import timezone
from psycopg.types.json import Jsonb

from crm import events
from crm.exceptions import Conflict
from crm.models import BusinessEvent, Customer, SourceSystem, User
from crm.services.event_dispatch import events_dispatch_on_commit


@contextmanager
def server_bound_cursor() -> Iterator[CursorWrapper]:
    """A cursor of the current connection for the few statements every event runs.

    Django's cursors bind on the client: each value is quoted into the SQL text in
    Python (a tenth of an event's CPU went there), and PostgreSQL parses and plans
    the text afresh each time. This one sends the values apart from the SQL
    (dumped in C) and psycopg prepares a statement once it has run it five times
    on a connection (pooled connections keep them). It is wrapped as Django wraps
    its own, so the statements are counted and logged like any other."""
    connection.ensure_connection()
    raw: Any = psycopg.Cursor(connection.connection)  # Django's wrappers take any DB-API cursor
    wrapped = connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)
    try:
        with connection.wrap_database_errors:
            yield wrapped
    finally:
        raw.close()


def business_event_record(
    *,
    type: str,  # noqa: A002  (the vocabulary's own word)
    occurred_at: dt.datetime,
    payload: dict[str, Any],
    source: SourceSystem,
    idempotency_key: str,
    customer: Customer | None = None,
    customer_id: int | None = None,
    actor: User | None = None,
    customer_must_exist: bool = False,
) -> tuple[BusinessEvent, bool]:
    """Record a business event once per (source, idempotency key); a repeat of the
    same fact returns the first. A key the source already used for another
    customer or another type of event is a Conflict: two facts, one key, and
    returning the first would answer about the wrong one.

    ``actor`` is the user whose action raised the event (an agent, an
    integration's user, a self-service customer's log-in); None for the system.
    ``customer_must_exist``: a customer id a caller was given and has not read
    (an integration's): the insert itself checks it (no round trip of its own),
    and a ValidationError names an unknown one, before any conflict of its key."""
    event_type = events.get(type)
    if timezone.is_naive(occurred_at):
        raise ValidationError({"occurred_at": "Give the time with its zone (Z or an offset such as +02:00)."})
    event_type.validate(payload)
    if not idempotency_key or len(idempotency_key) > 200:
        raise ValidationError({"idempotency_key": "Give a key of 1-200 characters that is unique per fact."})
    subject_id = customer.pk if customer else customer_id
    recorded_at = timezone.now()
    values = [type, subject_id, occurred_at, _jsonb(payload), source.pk, idempotency_key,
              actor.pk if actor else None, recorded_at]  # fmt: skip
    with server_bound_cursor() as cursor:
        if customer_must_exist:
            cursor.execute(_INSERT_IF_CUSTOMER, [*values, subject_id])
        else:
            cursor.execute(_INSERT, values)
        row = cursor.fetchone()
    if row is None:
        first = BusinessEvent.objects.filter(source_system=source, idempotency_key=idempotency_key).first()
        if customer_must_exist and (
            first is None or (first.customer_id != subject_id and not _customer_exists(subject_id))
        ):
            raise ValidationError({"customer": f"There is no customer {subject_id}."})
        assert first is not None  # noqa: S101  (the key's row stopped the insert)
        if first.customer_id != subject_id or first.type != type:
            raise Conflict(
                {
                    "idempotency_key": (
                        f"Your source system already used the key “{idempotency_key}” for a different "
                        "fact (another customer or another event type): give each fact its own key."
                    )
                }
            )
        return first, False
    event = BusinessEvent(
        id=row[0], type=type, customer_id=subject_id, occurred_at=occurred_at, payload=payload,
        source_system=source, idempotency_key=idempotency_key, actor=actor, recorded_at=recorded_at,
    )  # fmt: skip
    events_dispatch_on_commit([event.pk], recorded=[event])
    return event, True


_COLUMNS = (
    "INSERT INTO crm_businessevent (type, customer_id, occurred_at, payload, source_system_id,"
    " idempotency_key, actor_id, recorded_at)"
)
_ON_CONFLICT = " ON CONFLICT (source_system_id, idempotency_key) DO NOTHING RETURNING id"
# One round trip whether the key is new or a repeat; no savepoint needed.
_INSERT = f"{_COLUMNS} VALUES (%s, %s, %s, %s, %s, %s, %s, %s){_ON_CONFLICT}"
_INSERT_IF_CUSTOMER = (
    f"{_COLUMNS} SELECT %s, %s::bigint, %s::timestamptz, %s, %s::bigint, %s, %s::bigint, %s::timestamptz"
    f" WHERE EXISTS (SELECT 1 FROM crm_customer WHERE id = %s){_ON_CONFLICT}"
)


def _customer_exists(customer_id: int | None) -> bool:
    return customer_id is not None and Customer.objects.filter(pk=customer_id).exists()


def business_events_record_new(
    *, items: list[tuple[str, int, dt.datetime, dict[str, Any], str]], source: SourceSystem | str
) -> list[BusinessEvent]:
    """Record several events of the system itself (the CRM's own facts, such as each
    offer presented) in one statement; return those that were new.

    ``items``: (type, customer id, occurred at, payload, idempotency key). The keys
    are derived from the rows the events describe, so a repeat is the same fact
    again and is skipped without the conflict check ``business_event_record``
    makes for keys an integrator chose. ``source``: the source system, or its code
    (looked up in the same statement: no round trip for the CRM's own source)."""
    if not items:
        return []
    for event_type, _, occurred_at, payload, _ in items:
        events.get(event_type).validate(payload)
        if timezone.is_naive(occurred_at):
            raise ValidationError({"occurred_at": "Give the time with its zone."})
    recorded_at = timezone.now()
    source_sql = "(SELECT id FROM crm_sourcesystem WHERE code = %s)" if isinstance(source, str) else "%s"
    with server_bound_cursor() as cursor:
        cursor.execute(
            "INSERT INTO crm_businessevent (type, customer_id, occurred_at, payload, source_system_id,"
            " idempotency_key, recorded_at)"
            f" SELECT i.type, i.customer_id, i.occurred_at, i.payload, {source_sql}, i.key, %s"
            " FROM unnest(%s::text[], %s::bigint[], %s::timestamptz[], %s::jsonb[], %s::text[])"
            " WITH ORDINALITY AS i(type, customer_id, occurred_at, payload, key, n) ORDER BY i.n"
            " ON CONFLICT (source_system_id, idempotency_key) DO NOTHING"
            " RETURNING id, idempotency_key, source_system_id",
            [source if isinstance(source, str) else source.pk, recorded_at, [i[0] for i in items],
             [i[1] for i in items], [i[2] for i in items], [_jsonb(i[3]) for i in items],
             [i[4] for i in items]],
        )  # fmt: skip
        rows = cursor.fetchall()
    ids = {key: pk for pk, key, _ in rows}
    source_id: int = rows[0][2] if rows else 0  # no row: no event to build
    new = [
        BusinessEvent(
            id=ids[key],
            type=event_type,
            customer_id=customer_id,
            occurred_at=occurred_at,
            payload=payload,
            source_system_id=source_id,
            idempotency_key=key,
            recorded_at=recorded_at,
        )
        for event_type, customer_id, occurred_at, payload, key in items
        if key in ids
    ]
    events_dispatch_on_commit([e.pk for e in new], recorded=new)
    return new


def _jsonb(value: Any) -> Any:
    return Jsonb(value, dumps=partial(json.dumps, cls=DjangoJSONEncoder))
