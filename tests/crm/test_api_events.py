"""The events API's check of an item: the plainly valid ones skip the serializer and
come out exactly as it would return them; anything else goes through it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from crm.api.events import EventInSerializer, _plainly_valid

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
