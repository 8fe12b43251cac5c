"""The ingest path's JSON: orjson's speed, the standard library's answers."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.translation import gettext_lazy

from crm import json_codec

VALUES = [
    {"at": dt.datetime(2026, 3, 1, 14, 30, 5, 123456, tzinfo=dt.UTC)},
    {"at": dt.datetime(2026, 3, 1, 14, 30, tzinfo=ZoneInfo("Europe/Paris"))},
    {"at": dt.datetime(2026, 3, 1, 14, 30)},
    {"day": dt.date(2026, 3, 1), "time": dt.time(9, 5, 7, 250000)},
    {"amount": Decimal("12.30"), "id": uuid.UUID(int=7), "label": gettext_lazy("Inbound")},
    {"text": "Zoë, 東京 “quoted” \\ \n", "n": [1, 2.5, -3, True, None]},
    {1: "an integer key", "nested": {"k": [{"deep": dt.date(2026, 1, 2)}]}},
    {"big": 2**70, "small": -(2**64)},  # past 64 bits: orjson refuses, the standard library writes them
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_writes_the_document_djangos_encoder_writes(value):
    assert json.loads(json_codec.dumps(value)) == json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def test_dumps_formats_times_as_djangos_encoder_does_not_as_orjson_would():
    moment = dt.datetime(2026, 3, 1, 14, 30, 5, 123456, tzinfo=dt.UTC)
    assert json_codec.dumps({"at": moment}) == b'{"at":"2026-03-01T14:30:05.123Z"}'


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        '{"big": 123456789012345678901234567890}',
        '{"neg": -9223372036854775809}',
        '{"max": 9223372036854775807, "f": 1e400}',
        '{"x": NaN}',
        '[1, 2.5, "é"]',
        "null",
    ],
)
def test_loads_reads_what_the_standard_library_reads(text):
    # Compared written out: a big integer read as a float would compare equal to it.
    assert json.dumps(json_codec.loads(text)) == json.dumps(json.loads(text))
    assert json.dumps(json_codec.loads(text.encode())) == json.dumps(json.loads(text))
    assert json.dumps(json_codec.loads(memoryview(text.encode()))) == json.dumps(json.loads(text))


@pytest.mark.parametrize("text", ["", "{", '{"a": 1,}', "[1, 2", "{'a': 1}"])
def test_loads_refuses_malformed_json_with_the_standard_librarys_message(text):
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(ValueError) as refused:
        json_codec.loads(text)
    assert str(refused.value) == str(expected.value)
