"""A web-site source system with field mappings for every record kind, and
results shaped the way it sends them: shared by the touchpoint tests."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from crm import services
from crm.models import (
    Account,
    BusinessEvent,
    Customer,
    CustomerChange,
    FieldMapping,
    Interaction,
    SourceRecord,
    SourceSystem,
    TouchpointBatch,
    TouchpointResult,
)

# (record kind, source field, target, transform, transform args)
WEB_MAPPINGS: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("customer", "first", "customer.given_name", "text", {}),
    ("customer", "last", "customer.family_name", "text", {}),
    ("customer", "email", "customer.email", "email", {}),
    ("customer", "phone", "customer.phone", "phone_e164", {"region": "US"}),
    ("customer", "street", "address.line1", "text", {}),
    ("customer", "city", "address.city", "text", {}),
    ("customer", "country", "address.country", "upper", {}),
    ("customer", "no_calls", "customer.do_not_call", "boolean", {}),
    ("customer", "tier", "customer.tier", "map", {"values": {"G": "gold", "S": "silver", "B": "standard"}}),
    ("interaction", "email", "customer.email", "email", {}),
    ("interaction", "channel", "interaction.channel", "map", {"values": {"web": "web", "mail": "email"}}),
    ("interaction", "direction", "interaction.direction", "lower", {}),
    ("interaction", "outcome", "interaction.disposition", "text", {}),
    ("interaction", "seconds", "interaction.duration_seconds", "integer", {}),
    ("purchase", "amount", "purchase.amount", "decimal", {}),
    ("purchase", "currency", "purchase.currency", "upper", {}),
    ("purchase", "sku", "purchase.product", "text", {}),
    ("account", "number", "account.number", "upper", {}),
    ("account", "product", "account.product", "text", {}),
    ("account", "status", "account.status", "lower", {}),
    ("event", "type", "event.type", "text", {}),
    ("event", "amount", "event.amount", "decimal", {}),
    ("event", "account", "event.account_number", "upper", {}),
]


def web_source(code: str = "web", *, signing_secret: str = "") -> SourceSystem:
    source = services.source_system_create(code=code, name=f"Web site {code}", kind="web")
    if signing_secret:
        source.signing_secret = signing_secret
        source.save(update_fields=["signing_secret"])
    for position, (kind, field, target, transform, args) in enumerate(WEB_MAPPINGS):
        mapping = FieldMapping(
            source_system=source, record_kind=kind, source_field=field, target=target,
            transform=transform, transform_args=args, position=position,
        )  # fmt: skip
        mapping.full_clean()
        mapping.save()
    return source


def visit(external_id: str, email: str, *, key: str = "", sequence: int | None = None,
          at: str = "2026-03-01T10:00:00Z", outcome: str = "browsed") -> dict[str, Any]:  # fmt: skip
    item: dict[str, Any] = {
        "external_id": external_id, "record_kind": "interaction", "occurred_at": at,
        "payload": {"email": email, "channel": "web", "direction": "Inbound", "outcome": outcome,
                    "seconds": "42"},
    }  # fmt: skip
    if key:
        item["customer_key"] = key
    if sequence is not None:
        item["sequence"] = sequence
    return item


def profile(external_id: str, key: str, *, sequence: int | None = None, **payload: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"external_id": external_id, "record_kind": "customer", "customer_key": key,
                            "payload": payload}  # fmt: skip
    if sequence is not None:
        item["sequence"] = sequence
    return item


def signed_headers(secret: str, body: bytes, *, at: int | None = None) -> dict[str, str]:
    timestamp = str(int(time.time()) if at is None else at)
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"HTTP_X_SIGNATURE_TIMESTAMP": timestamp, "HTTP_X_SIGNATURE": f"sha256={digest}"}


def body_of(items: list[dict[str, Any]]) -> bytes:
    return json.dumps({"results": items}).encode()


def receive(source: SourceSystem, items: list[Any]) -> TouchpointBatch:
    return services.touchpoint_batch_receive(source=source, items=items)


def apply_all() -> int:
    return services.touchpoint_results_apply(limit=500, worker="test", budget_seconds=60)


class _Lost(Exception):
    pass


def lost_claim(token: str, *, limit: int = 10) -> list[Any]:
    """A worker claims results, notes its claim as the apply does, and is lost
    before it writes anything: its transaction ends without a commit (here a
    savepoint rolled back, which drops its row and advisory locks as the end of
    a killed worker's transaction does)."""
    from crm.services import touchpoint_claims

    claimed: list[Any] = []
    touchpoint_claims.lost_claims_count(token=token)  # as a run does before each claim
    try:
        with transaction.atomic():
            claimed = touchpoint_claims.touchpoint_results_claim(limit=limit, token=token)
            touchpoint_claims._claim_note(token, claimed)
            raise _Lost
    except _Lost:
        pass
    return claimed


@contextmanager
def held_claim(token: str, *, limit: int) -> Iterator[list[Any]]:
    """Another worker's claim in progress: a thread with its own connection holds
    the claim's transaction open until the block ends (the test must commit its
    data: ``django_db(transaction=True)``)."""
    from crm.services import touchpoint_claims

    claimed: list[Any] = []
    ready, done = threading.Event(), threading.Event()
    errors: list[Exception] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                claimed.extend(touchpoint_claims.touchpoint_results_claim(limit=limit, token=token))
                touchpoint_claims._claim_note(token, claimed)
                ready.set()
                done.wait(60)
            touchpoint_claims._claim_forget(token)
        except Exception as exc:  # noqa: BLE001  (reported in the test's thread)
            errors.append(exc)
            ready.set()
        finally:
            connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    ready.wait(60)
    try:
        if errors:
            raise errors[0]
        yield claimed
    finally:
        done.set()
        thread.join(60)


def statuses(source: SourceSystem) -> dict[str, str]:
    return dict(TouchpointResult.objects.filter(source_system=source).values_list("external_id", "status"))


def row_counts() -> dict[str, int]:
    return {
        "customers": Customer.objects.count(),
        "interactions": Interaction.objects.count(),
        "events": BusinessEvent.objects.count(),
        "changes": CustomerChange.objects.count(),
        "accounts": Account.objects.count(),
        "source_records": SourceRecord.objects.count(),
    }


def time_ago(seconds: int) -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=seconds)
