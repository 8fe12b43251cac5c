"""The events API's check of an item: the plainly valid ones skip the serializer and
come out exactly as it would return them; anything else goes through it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crm.api.events import EventInSerializer, _plainly_valid
from crm.models import BusinessEvent, Customer, User
from tests.conftest import api_as

WITHDRAWAL: dict[str, Any] = {
    "type": "transaction.withdrawal",
    "occurred_at": "2026-03-01T16:30:00+02:00",
    "idempotency_key": "atm-1",
    "customer": 7,
    "payload": {"amount": 12500.0, "account_number": "CHK-1", "channel": "atm"},
}


@pytest.mark.parametrize(
    "item",
    [
        WITHDRAWAL,
        {**WITHDRAWAL, "occurred_at": "2026-03-01T14:30:00Z", "idempotency_key": "a key with spaces"},
        {**WITHDRAWAL, "occurred_at": "2026-03-01T14:30:00.123456-05:00", "payload": {**WITHDRAWAL["payload"],
                                                                                       "amount": 12}},
        {key: value for key, value in WITHDRAWAL.items() if key != "customer"} | {"customer_key": "IVR-77"},
        {"type": "web.page_view", "occurred_at": "2026-03-01T14:30:00Z", "idempotency_key": "p",
         "customer": 1, "payload": {"url": "/"}},
    ],
)  # fmt: skip
def test_a_plainly_valid_event_comes_out_as_the_serializer_makes_it(item: dict[str, Any]) -> None:
    serializer = EventInSerializer(data=item)
    assert serializer.is_valid(), serializer.errors
    plain = _plainly_valid(item)
    assert plain == dict(serializer.validated_data)
    assert plain is not None and plain["occurred_at"].tzinfo is dt.UTC


@pytest.mark.parametrize(
    "change",
    [
        {"type": "money.moved"},
        {"type": " transaction.withdrawal"},
        {"occurred_at": "2026-03-01T14:30:00"},
        {"occurred_at": " 2026-03-01T14:30:00Z"},
        {"occurred_at": "2026-02-30T14:30:00Z"},
        {"occurred_at": 1772375400},
        {"idempotency_key": " atm-1"},
        {"idempotency_key": ""},
        {"idempotency_key": "x" * 201},
        {"idempotency_key": "nul\x00"},
        {"idempotency_key": 12},
        {"customer": True},
        {"customer": "7"},
        {"customer": 0},
        {"customer": None},
        {"customer_key": "IVR-77"},
        {"payload": None},
        {"payload": {"amount": "lots", "account_number": "CHK-1", "channel": "atm"}},
        {"payload": {**WITHDRAWAL["payload"], "acount": "x"}},
        {"unknown_field": "the serializer ignores it"},
    ],
)
def test_anything_else_is_left_to_the_serializer(change: dict[str, Any]) -> None:
    """Each of these the serializer refuses or changes (trims, converts): its answer stands."""
    assert _plainly_valid({**WITHDRAWAL, **change}) is None


def test_an_item_naming_no_customer_or_not_an_object_is_left_to_the_serializer() -> None:
    assert _plainly_valid({k: v for k, v in WITHDRAWAL.items() if k != "customer"}) is None
    assert _plainly_valid([WITHDRAWAL]) is None
    assert _plainly_valid("event") is None


def test_an_unknown_customer_is_named_before_any_conflict_of_its_key(
    frank: User, erin_customer: Customer
) -> None:
    """One event's insert checks its customer itself: the answers stay those of a check made first."""
    client = api_as(frank)
    event = {**WITHDRAWAL, "occurred_at": "2026-03-01T14:30:00Z"}
    unknown = client.post("/api/v1/events", {**event, "customer": 999999}, format="json")
    assert unknown.status_code == 400 and unknown.json() == {"customer": ["There is no customer 999999."]}
    assert not BusinessEvent.objects.filter(source_system=frank.source_system).exists()
    first = client.post("/api/v1/events", {**event, "customer": erin_customer.pk}, format="json")
    assert first.status_code == 201
    # The same key again for an unknown customer: the customer is named, as before any conflict.
    again = client.post("/api/v1/events", {**event, "customer": 999999}, format="json")
    assert again.status_code == 400 and again.json() == {"customer": ["There is no customer 999999."]}
    repeat = client.post("/api/v1/events", {**event, "customer": erin_customer.pk}, format="json")
    assert repeat.status_code == 200 and repeat.json()["id"] == first.json()["id"]
    other_type = {**event, "type": "web.page_view", "payload": {"url": "/"}, "customer": erin_customer.pk}
    assert client.post("/api/v1/events", other_type, format="json").status_code == 409


def test_one_event_costs_the_token_and_its_insert(frank: User, erin_customer: Customer) -> None:
    """No policy listens: the token's look-up, the insert that checks the customer (no
    statement of its own) and the on-commit hook's nothing (the test's transaction)."""
    client = api_as(frank)
    body = {**WITHDRAWAL, "customer": erin_customer.pk}
    client.post("/api/v1/events", {**body, "idempotency_key": "warm"}, format="json")  # caches warm
    with CaptureQueriesContext(connection) as queries:
        response = client.post("/api/v1/events", body, format="json")
    assert response.status_code == 201, response.json()
    statements = [q["sql"] for q in queries.captured_queries]
    assert not any(sql.startswith("SELECT id FROM crm_customer") for sql in statements)
    assert sum("INSERT INTO crm_businessevent" in sql for sql in statements) == 1
    assert len(statements) == EVENT_STATEMENTS, statements


# The token's look-up and the insert: a single event is its own transaction (no savepoint
# either, inside the test's).
EVENT_STATEMENTS = 2
