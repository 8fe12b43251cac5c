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
