from __future__ import annotations

import pytest

from crm import services
from crm.identity import customer_resolve, source_keys_resolve
from crm.models import SourceSystem
from tests.conftest import make_customer

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(db: None) -> SourceSystem:
    source = services.source_system_create(code="web", name="Web", kind="web")
    source.phone_region = "GB"
    source.save()
    return source


def test_the_sources_own_key_wins_over_contact_points(web, dave_customer, erin_customer):
    services.source_record_link(source=web, external_key="K1", customer_id=erin_customer.pk)
    found = customer_resolve(source=web, customer_key="K1", email="dave@example.com")
    assert (found.customer_id, found.by) == (erin_customer.pk, "source_key")


def test_it_matches_one_customer_by_a_normalised_email_or_phone(web, dave_customer, erin_customer):
    assert customer_resolve(source=web, email="  dave@EXAMPLE.com ").customer_id == dave_customer.pk
    # A national number is read in the source's region (GB here).
    found = customer_resolve(source=web, phone="020 7946 0958")
    assert (found.customer_id, found.by) == (erin_customer.pk, "phone")


def test_an_unknown_key_falls_back_to_contact_points(web, dave_customer):
    found = customer_resolve(source=web, customer_key="never-seen", email="dave@example.com")
    assert (found.customer_id, found.by) == (dave_customer.pk, "email")


def test_several_matches_are_candidates_never_a_guess(web, dave_customer):
    partner = make_customer(given_name="Dana", emails=[])  # shares dave's phone line
    found = customer_resolve(source=web, phone="+12025550143")
    assert found.ambiguous
    assert found.customer_id is None
    assert found.candidates == sorted([dave_customer.pk, partner.pk])


def test_the_email_tells_apart_two_people_sharing_a_line(web, dave_customer):
    make_customer(given_name="Dana", emails=[{"address": "dana@example.com", "kind": "personal"}])
    found = customer_resolve(source=web, phone="+12025550143", email="dana@example.com")
    assert found.customer_id is not None
    assert found.customer_id != dave_customer.pk


def test_email_and_phone_naming_two_different_people_go_to_review(web, dave_customer, erin_customer):
    found = customer_resolve(source=web, email="dave@example.com", phone="+442079460958")
    assert found.ambiguous
    assert found.candidates == sorted([dave_customer.pk, erin_customer.pk])


def test_nobody_matches_an_unreadable_or_unknown_contact_point(web, dave_customer):
    assert customer_resolve(source=web, email="not an address", phone="12").unmatched
    assert customer_resolve(source=web, email="someone@else.com").unmatched


def test_keys_of_a_batch_resolve_in_one_query(web, dave_customer, erin_customer, django_assert_num_queries):
    services.source_record_link(source=web, external_key="A", customer_id=dave_customer.pk)
    services.source_record_link(source=web, external_key="B", customer_id=erin_customer.pk)
    with django_assert_num_queries(1):
        keys = source_keys_resolve(source=web, keys=["A", "B", "C", ""])
    assert keys == {"A": dave_customer.pk, "B": erin_customer.pk}
