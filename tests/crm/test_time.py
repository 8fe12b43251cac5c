"""Time is an instant with a zone: naive times are refused, and "today" is read
on a named calendar, never in the zone a request happened to activate."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from crm import clock, events, services
from crm.models import Customer, Product, SourceSystem, User
from crm.validation import validate_birth_date
from tests.conftest import api_as


def test_a_timeline_filter_without_a_zone_is_refused_naming_it(bob: User, dave_customer: Customer) -> None:
    client = api_as(bob)
    url = f"/api/v1/customers/{dave_customer.pk}/timeline/"
    response = client.get(url, {"since": "2026-03-01T09:00:00"})
    assert response.status_code == 400
    assert "no time zone" in response.json()["since"][0]
    assert client.get(url, {"since": "2026-03-01T09:00:00+02:00"}).status_code == 200


def test_a_contact_without_a_zone_is_refused_and_one_with_an_offset_is_stored_in_utc(
    frank: User, dave_customer: Customer
) -> None:
    client = api_as(frank)
    url = f"/api/v1/customers/{dave_customer.pk}/timeline/"
    body = {"channel": "ivr", "direction": "inbound", "external_id": "call-1"}
    refused = client.post(url, {**body, "occurred_at": "2026-03-01T09:00:00"}, format="json")
    assert refused.status_code == 400
    assert "occurred_at" in refused.json()
    assert not dave_customer.interactions.exists()
    accepted = client.post(url, {**body, "occurred_at": "2026-03-01T09:00:00-05:00"}, format="json")
    assert accepted.status_code == 201
    assert dave_customer.interactions.get().occurred_at == dt.datetime(2026, 3, 1, 14, 0, tzinfo=dt.UTC)


@pytest.fixture
def meeting_event() -> Iterator[events.EventType]:
    event_type = events.register(
        events.EventType("test.meeting_booked", "A meeting was booked.", {"starts_at": ("datetime", True)})
    )
    yield event_type
    del events.CATALOG[event_type.name]


def test_an_event_payload_time_without_a_zone_is_refused(
    meeting_event: events.EventType, ivr: SourceSystem, dave_customer: Customer
) -> None:
    record: dict[str, Any] = {
        "type": meeting_event.name,
        "occurred_at": timezone.now(),
        "source": ivr,
        "customer": dave_customer,
    }
    with pytest.raises(ValidationError) as refused:
        services.business_event_record(
            payload={"starts_at": "2026-03-01T09:00:00"}, idempotency_key="m1", **record
        )
    assert "no time zone" in refused.value.message_dict["payload.starts_at"][0]
    _event, created = services.business_event_record(
        payload={"starts_at": "2026-03-01T09:00:00Z"}, idempotency_key="m2", **record
    )
    assert created


def test_an_event_that_happened_at_a_naive_time_is_refused(
    ivr: SourceSystem, dave_customer: Customer
) -> None:
    with pytest.raises(ValidationError) as refused:
        services.business_event_record(
            type="customer.created",
            occurred_at=dt.datetime(2026, 3, 1, 9, 0),
            payload={},
            source=ivr,
            customer=dave_customer,
            idempotency_key="c1",
        )
    assert "occurred_at" in refused.value.message_dict


def test_an_account_opens_on_the_customers_calendar_whatever_zone_the_request_activated(
    dave_customer: Customer, checking: Product
) -> None:
    dave_customer.time_zone = "Pacific/Kiritimati"  # UTC+14: a different date than UTC most of the day
    dave_customer.save(update_fields=["time_zone"])
    expected = dt.datetime.now(zoneinfo.ZoneInfo("Pacific/Kiritimati")).date()
    with timezone.override(zoneinfo.ZoneInfo("Pacific/Pago_Pago")):  # UTC-11, a day behind
        account = services.account_open(
            customer_id=dave_customer.pk, product_code=checking.code, account_number="ACC-7001"
        )
        closed = services.account_close(account_id=account.pk)
    assert account.opened_on == expected
    assert closed.closed_on == expected


def test_today_is_read_in_the_zone_named() -> None:
    now = timezone.now()
    assert clock.today_utc() == now.astimezone(dt.UTC).date()
    assert clock.today_in("Asia/Tokyo") == now.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo")).date()
    assert clock.today_in("Not/AZone") == clock.today_utc()
    assert clock.today_in("") == clock.today_utc()


def test_a_birth_date_is_in_the_future_only_when_no_place_on_earth_has_reached_it() -> None:
    latest = (timezone.now() + dt.timedelta(hours=14)).astimezone(dt.UTC).date()
    validate_birth_date(latest)
    with (
        pytest.raises(ValidationError, match="future"),
        timezone.override(zoneinfo.ZoneInfo("Pacific/Pago_Pago")),
    ):
        validate_birth_date(latest + dt.timedelta(days=1))
