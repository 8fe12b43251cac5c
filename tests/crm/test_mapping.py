from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from crm.mapping import apply_mappings, validate_mapping
from crm.models import FieldMapping


def _mapping(source_field: str, target: str, transform: str = "text", **args) -> FieldMapping:
    return FieldMapping(source_field=source_field, target=target, transform=transform,
                        transform_args=args, required=True)  # fmt: skip


def test_a_source_record_maps_onto_the_common_definitions():
    mappings = [
        _mapping("CUST_TEL", "customer.phone", "phone_e164"),
        _mapping("CH", "interaction.channel", "map", values={"V": "phone", "W": "web"}),
        _mapping("WHEN", "interaction.occurred_at", "datetime"),
        _mapping("AMT", "event.amount", "decimal"),
        _mapping("DOB", "customer.date_of_birth", "date", format="%m/%d/%Y"),
    ]
    record = {"CUST_TEL": "202.555.0143", "CH": "V", "WHEN": "2026-03-01T14:30:00Z", "AMT": "12,000.50",
              "DOB": "05/17/1980"}  # fmt: skip
    mapped = apply_mappings(record, mappings)
    assert mapped["customer.phone"] == "+12025550143"
    assert mapped["interaction.channel"] == "phone"
    assert mapped["interaction.occurred_at"] == dt.datetime(2026, 3, 1, 14, 30, tzinfo=dt.UTC)
    assert mapped["event.amount"] == Decimal("12000.50")
    assert mapped["customer.date_of_birth"] == dt.date(1980, 5, 17)


def test_every_bad_source_field_is_named_with_the_problem():
    mappings = [
        _mapping("TEL", "customer.phone", "phone_e164"),
        _mapping("WHEN", "interaction.occurred_at", "datetime"),
        _mapping("NAME", "customer.family_name"),
    ]
    with pytest.raises(ValidationError) as caught:
        apply_mappings({"TEL": "nope", "WHEN": "2026-03-01 14:30"}, mappings)
    errors = caught.value.message_dict
    assert set(errors) == {"TEL", "WHEN", "NAME"}
    assert "time zone" in errors["WHEN"][0] and "Required" in errors["NAME"][0]


def test_a_mapping_is_checked_against_the_registries_when_saved():
    with pytest.raises(ValidationError) as caught:
        validate_mapping("customer.shoe_size", "rot13", {})
    assert set(caught.value.message_dict) == {"target", "transform"}
    with pytest.raises(ValidationError) as caught:
        validate_mapping("interaction.channel", "map", {"values": {"V": "pigeon"}})
    assert "pigeon" in caught.value.message_dict["transform_args"][0]
    validate_mapping("interaction.channel", "map", {"values": {"V": "phone"}})


@pytest.mark.django_db
def test_naive_times_and_national_numbers_are_read_as_the_source_says(web):
    """The source's time zone and phone region fill what its values leave out; a
    mapping's own arguments win; a value with an offset or a country code is
    taken as it is."""
    from crm.services.touchpoints import result_map, source_mappings

    web.time_zone, web.phone_region = "America/Chicago", "GB"
    web.save(update_fields=["time_zone", "phone_region"])
    FieldMapping.objects.create(source_system=web, record_kind="interaction", source_field="when",
                                target="interaction.occurred_at", transform="datetime")  # fmt: skip
    phone = FieldMapping.objects.get(source_system=web, record_kind="customer", target="customer.phone")
    phone.transform_args = {}
    phone.save()

    def mapped(kind: str, **payload: str) -> dict:
        return result_map(source=web, record_kind=kind, payload=payload, mappings=source_mappings(web))

    # 14:30 in Chicago in winter is 20:30 UTC; in summer (CDT) 19:30.
    assert mapped("interaction", when="2026-03-01 14:30")["interaction.occurred_at"] == dt.datetime(
        2026, 3, 1, 20, 30, tzinfo=dt.UTC
    )
    assert mapped("interaction", when="2026-07-01T14:30:00")["interaction.occurred_at"] == dt.datetime(
        2026, 7, 1, 19, 30, tzinfo=dt.UTC
    )
    assert mapped("interaction", when="2026-03-01T14:30:00+01:00")["interaction.occurred_at"] == dt.datetime(
        2026, 3, 1, 13, 30, tzinfo=dt.UTC
    )
    assert mapped("customer", phone="020 7946 0958")["customer.phone"] == "+442079460958"  # GB
    assert mapped("customer", phone="+1 202 555 0143")["customer.phone"] == "+12025550143"
    phone.transform_args = {"region": "US"}
    phone.save()
    assert mapped("customer", phone="202-555-0199")["customer.phone"] == "+12025550199"  # its own: US

    web.time_zone = "UTC"
    assert mapped("interaction", when="2026-03-01 14:30")["interaction.occurred_at"].hour == 14


def test_a_mappings_own_time_zone_must_be_a_real_one():
    with pytest.raises(ValidationError) as caught:
        validate_mapping("interaction.occurred_at", "datetime", {"time_zone": "Mars/Olympus"})
    assert "Mars/Olympus" in caught.value.message_dict["transform_args"][0]
    validate_mapping("interaction.occurred_at", "datetime", {"time_zone": "Europe/Paris"})
    paris = _mapping("W", "interaction.occurred_at", "datetime", time_zone="Europe/Paris")
    mapped = apply_mappings({"W": "2026-03-01 14:30"}, [paris], time_zone="America/Chicago")
    assert mapped["interaction.occurred_at"] == dt.datetime(2026, 3, 1, 13, 30, tzinfo=dt.UTC)
