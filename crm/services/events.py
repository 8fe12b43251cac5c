"""Business events: the one way a fact enters the loop."""

from __future__ import annotations

import datetime as dt
import json
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.utils import timezone
from psycopg.types.json import Jsonb

from crm import events
from crm.models import BusinessEvent, Customer, SourceSystem


def business_event_record(
    *,
    type: str,  # noqa: A002  (the vocabulary's own word)
    occurred_at: dt.datetime,
    payload: dict[str, Any],
    source: SourceSystem,
    idempotency_key: str,
    customer: Customer | None = None,
    customer_id: int | None = None,
) -> tuple[BusinessEvent, bool]:
    """Record a business event once per idempotency key; a repeat returns the first."""
    event_type = events.get(type)
    event_type.validate(payload)
    if not idempotency_key or len(idempotency_key) > 200:
        raise ValidationError({"idempotency_key": "Give a key of 1-200 characters that is unique per fact."})
    subject_id = customer.pk if customer else customer_id
    recorded_at = timezone.now()
    # One round trip whether the key is new or a repeat; no savepoint needed.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO crm_businessevent (type, customer_id, occurred_at, payload, source_system_id,"
            " idempotency_key, recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            [type, subject_id, occurred_at, _jsonb(payload), source.pk, idempotency_key, recorded_at],
        )
        row = cursor.fetchone()
    if row is None:
        return BusinessEvent.objects.get(idempotency_key=idempotency_key), False
    event = BusinessEvent(
        id=row[0], type=type, customer_id=subject_id, occurred_at=occurred_at, payload=payload,
        source_system=source, idempotency_key=idempotency_key, recorded_at=recorded_at,
    )  # fmt: skip
    return event, True


def _jsonb(value: Any) -> Any:
    return Jsonb(value, dumps=partial(json.dumps, cls=DjangoJSONEncoder))
