"""Trying a source's mappings on a pasted sample: the mapped result or each error by field, nothing saved."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from crm.mapping_preview import mapping_preview, sample_parse
from crm.models import FieldMapping, SourceSystem, TouchpointBatch, TouchpointResult
from tests.touchpoint_data import web_source

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(db: None) -> SourceSystem:
    return web_source()


def page_url(source: SourceSystem) -> str:
    return f"/admin/crm/sourcesystem/{source.pk}/try-mappings/"


def test_a_json_sample_is_mapped_target_by_target(web):
    preview = mapping_preview(source=web, record_kind="customer", sample=json.dumps(
        {"first": " Ana ", "email": "ANA@Example.COM", "phone": "(202) 555-0143", "no_calls": "Y",
         "tier": "G", "shoe_size": "9"}))  # fmt: skip
    assert preview.ok
    mapped = {m.target: (m.value, m.source_field) for m in preview.mapped}
    assert mapped == {
        "customer.given_name": ("Ana", "first"),
        "customer.email": ("ANA@example.com", "email"),
        "customer.phone": ("+12025550143", "phone"),
        "customer.do_not_call": ("yes", "no_calls"),
        "customer.tier": ("gold", "tier"),
    }
    assert preview.unmapped == ["shoe_size"]


def test_each_bad_field_is_named_with_its_reason(web):
    preview = mapping_preview(source=web, record_kind="customer",
                              sample='{"no_calls": "perhaps", "tier": "Z", "first": "Ana"}')  # fmt: skip
    assert not preview.ok and not preview.mapped
    errors = dict(preview.errors)
    assert "yes or no" in errors["no_calls"]
    assert "“Z” is not one of the mapped values" in errors["tier"]


def test_a_csv_header_and_row_is_a_sample_too_with_any_delimiter():
    assert sample_parse("first;last\nJosé;Núñez") == {"first": "José", "last": "Núñez"}
    assert sample_parse('\ufeffa,b\n"x, y",2\n') == {"a": "x, y", "b": "2"}


@pytest.mark.parametrize(
    ("sample", "expected"),
    [("", "Paste a sample record"), ("{nope", "Not valid JSON"), ("[1, 2]", "not a list"),
     ("a,b\n1,2\n3,4", "exactly one row"), ("a,b,c\n1,2", "2 values where the header has 3 columns")],
)  # fmt: skip
def test_a_sample_that_cannot_be_read_says_why(sample, expected):
    with pytest.raises(ValidationError, match=expected):
        sample_parse(sample)


def test_a_kind_without_mappings_says_to_map_it(web):
    FieldMapping.objects.filter(source_system=web, record_kind="event").delete()
    preview = mapping_preview(source=web, record_kind="event", sample='{"type": "x"}')
    assert "no field mappings for event records" in dict(preview.errors)["record_kind"]


def test_the_page_shows_the_mapped_result_to_an_administrator(carol, web):
    client = Client()
    client.force_login(carol)
    change = client.get(f"/admin/crm/sourcesystem/{web.pk}/change/").content.decode()
    assert page_url(web) in change and "Try the mappings" in change

    sample = "email,channel,direction,seconds\nA@x.org,mail,Inbound,42"
    response = client.post(page_url(web), {"record_kind": "interaction", "sample": sample})
    html = response.content.decode()
    assert response.status_code == 200
    assert "Mapped result: 4 fields" in html
    assert "<code>interaction.channel</code>" in html and ">email</td>" in html
    assert ">inbound</td>" in html and ">42</td>" in html
    assert not TouchpointBatch.objects.exists() and not TouchpointResult.objects.exists()


def test_the_page_lists_the_errors_by_source_field(carol, web):
    client = Client()
    client.force_login(carol)
    sample = '{"channel": "fax", "seconds": "soon"}'
    html = client.post(page_url(web), {"record_kind": "interaction", "sample": sample}).content.decode()
    assert "2 errors: intake would refuse this record" in html
    assert "<code>channel</code>" in html and "<code>seconds</code>" in html
    assert "is not a whole number" in html
    bad = client.post(page_url(web), {"record_kind": "interaction", "sample": "{oops"}).content.decode()
    assert "Not valid JSON" in bad


def test_an_agent_cannot_try_mappings(alice, web):
    client = Client()
    client.force_login(alice)
    assert client.get(page_url(web)).status_code == 302
