from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from crm import services
from crm.exceptions import FieldAccessDenied
from crm.field_access import (
    CUSTOMER_FIELDS,
    customer_field_refusals,
    customer_fields_writable_by,
)
from crm.mapping import apply_mappings, validate_mapping
from crm.models import Customer, FieldMapping, SourceSystem, User
from tests.conftest import api_as

pytestmark = pytest.mark.django_db

STANDING = {"tier", "lifetime_value", "status"}
CONSENTS = {"do_not_call", "do_not_email", "marketing_opt_in"}


def _map_onto(source: SourceSystem, target: str, source_field: str = "X") -> FieldMapping:
    return FieldMapping.objects.create(source_system=source, source_field=source_field, target=target)


# --- The rule ------------------------------------------------------------------------------


def test_a_self_service_customer_may_change_contact_points_preferences_and_consents_only(dave):
    assert customer_fields_writable_by(dave) == {
        "phones", "emails", "addresses", "language", "time_zone", "preferred_channel", *CONSENTS,
    }  # fmt: skip
    assert customer_fields_writable_by(dave, creating=True) == frozenset()


def test_an_integration_may_set_identity_and_contact_fields_but_not_standing_or_consents(frank):
    writable = customer_fields_writable_by(frank)
    assert {"given_name", "family_name", "date_of_birth", "phones", "emails", "addresses"} <= writable
    assert not writable & (STANDING | CONSENTS)
    assert customer_field_refusals(frank, ["tier", "given_name"]) == {
        "tier": [
            "Your source system's field mapping does not include customer.tier: "
            "ask an administrator to map it."
        ]
    }


def test_a_field_mapping_onto_tier_or_a_consent_lets_that_source_set_it(frank, ivr):
    _map_onto(ivr, "customer.tier", "LEVEL")
    _map_onto(ivr, "customer.do_not_call", "DNC")
    writable = customer_fields_writable_by(frank)
    assert {"tier", "do_not_call"} <= writable
    assert not writable & {"lifetime_value", "status", "do_not_email", "marketing_opt_in"}


def test_another_sources_mapping_gives_this_integration_nothing(frank):
    billing = services.source_system_create(code="billing", name="Billing", kind="billing")
    _map_onto(billing, "customer.lifetime_value")
    assert "lifetime_value" not in customer_fields_writable_by(frank)


def test_agents_may_change_the_record_and_consents_but_not_its_standing(alice):
    writable = customer_fields_writable_by(alice)
    assert writable == set(CUSTOMER_FIELDS) - STANDING
    assert CONSENTS <= writable
    assert customer_field_refusals(alice, ["status"]) == {
        "status": ["Your role may not set a customer's status: ask a supervisor or an administrator."]
    }


def test_supervisors_and_administrators_may_change_every_field(bob, carol):
    assert customer_fields_writable_by(bob) == set(CUSTOMER_FIELDS)
    assert customer_fields_writable_by(carol, creating=True) == set(CUSTOMER_FIELDS)


def test_a_log_in_without_a_role_may_change_nothing_and_is_told_so(db):
    nobody = User.objects.create_user(username="nobody", password="x-long-pass-123")
    assert customer_fields_writable_by(nobody) == frozenset()
    assert customer_field_refusals(nobody, ["given_name"])["given_name"] == [
        "Your role may not change customers: ask a supervisor."
    ]


def test_the_service_refuses_fields_its_actor_may_not_set_and_the_system_may(alice, dave_customer):
    with pytest.raises(FieldAccessDenied) as caught:
        services.customer_update(customer_id=dave_customer.pk, expected_version=1,
                                 changes={"tier": "gold", "given_name": "David"}, actor=alice)  # fmt: skip
    assert set(caught.value.errors) == {"tier"}
    assert Customer.objects.get(pk=dave_customer.pk).version == 1
    updated = services.customer_update(customer_id=dave_customer.pk, expected_version=1,
                                       changes={"tier": "gold"}, actor=None)  # fmt: skip
    assert updated.tier == "gold"


def test_consents_and_standing_can_be_mapping_targets(db):
    validate_mapping("customer.do_not_call", "boolean", {})
    validate_mapping("customer.status", "map", {"values": {"A": "active", "X": "closed"}})
    with pytest.raises(ValidationError) as caught:
        validate_mapping("customer.marketing_opt_in", "map", {"values": {"Y": "sure"}})
    assert "sure" in caught.value.message_dict["transform_args"][0]
    dnc = FieldMapping(
        source_field="DNC", target="customer.do_not_call", transform="boolean", transform_args={}
    )
    assert apply_mappings({"DNC": " Yes "}, [dnc]) == {"customer.do_not_call": True}
    with pytest.raises(ValidationError) as caught:
        apply_mappings({"DNC": "maybe"}, [dnc])
    assert "yes or no" in caught.value.message_dict["DNC"][0]


# --- Through the API -----------------------------------------------------------------------


def test_an_integration_creating_a_platinum_customer_is_refused_and_told_why(frank):
    response = api_as(frank).post(
        "/api/v1/customers/", {"given_name": "Grace", "family_name": "Hopper", "tier": "platinum"}
    )
    assert response.status_code == 403
    assert response.data == {
        "tier": [
            "Your source system's field mapping does not include customer.tier: "
            "ask an administrator to map it."
        ]
    }
    assert not Customer.objects.filter(family_name="Hopper").exists()


def test_an_integration_whose_source_maps_tier_creates_a_platinum_customer(frank, ivr):
    _map_onto(ivr, "customer.tier")
    response = api_as(frank).post(
        "/api/v1/customers/", {"given_name": "Grace", "family_name": "Hopper", "tier": "platinum"}
    )
    assert response.status_code == 201, response.data
    assert response.data["tier"] == "platinum"


def test_an_integration_changing_consents_is_refused_naming_each_field(frank, dave_customer):
    response = api_as(frank).patch(
        f"/api/v1/customers/{dave_customer.pk}/",
        {"do_not_call": True, "marketing_opt_in": True, "given_name": "David"},
        HTTP_IF_MATCH='"1"',
    )
    assert response.status_code == 403
    assert set(response.data) == {"do_not_call", "marketing_opt_in"}
    assert "customer.marketing_opt_in" in response.data["marketing_opt_in"][0]
    fresh = Customer.objects.get(pk=dave_customer.pk)
    assert (fresh.version, fresh.given_name, fresh.do_not_call) == (1, "Dave", False)


def test_an_integration_changes_identity_and_contact_fields(frank, dave_customer):
    response = api_as(frank).patch(
        f"/api/v1/customers/{dave_customer.pk}/",
        {"family_name": "Millerson", "phones": [{"number": "202-555-0111"}]},
        HTTP_IF_MATCH='"1"',
    )
    assert response.status_code == 200, response.data
    assert response.data["family_name"] == "Millerson"
    assert response.data["phones"][0]["number"] == "+12025550111"


def test_an_agent_may_not_change_a_tier_that_a_supervisor_may(alice, bob, dave_customer):
    url = f"/api/v1/customers/{dave_customer.pk}/"
    refused = api_as(alice).patch(url, {"tier": "gold", "lifetime_value": "900.00"}, HTTP_IF_MATCH='"1"')
    assert refused.status_code == 403 and set(refused.data) == {"tier", "lifetime_value"}
    assert "ask a supervisor" in refused.data["tier"][0]
    allowed = api_as(bob).patch(url, {"tier": "gold"}, HTTP_IF_MATCH='"1"')
    assert allowed.status_code == 200 and allowed.data["tier"] == "gold"


def test_an_agent_creating_a_customer_may_record_consents_but_not_a_status(alice):
    client = api_as(alice)
    refused = client.post("/api/v1/customers/", {"family_name": "Hopper", "status": "prospect"})
    assert refused.status_code == 403 and set(refused.data) == {"status"}
    created = client.post("/api/v1/customers/", {"family_name": "Hopper", "do_not_call": True})
    assert created.status_code == 201 and created.data["do_not_call"] is True


def test_a_field_the_caller_may_not_set_is_refused_before_its_value_is_checked(alice, dave_customer):
    response = api_as(alice).patch(
        f"/api/v1/customers/{dave_customer.pk}/", {"tier": "diamond"}, HTTP_IF_MATCH='"1"'
    )
    assert response.status_code == 403 and set(response.data) == {"tier"}


def test_unknown_fields_stay_a_400_for_every_caller(dave, frank, dave_customer):
    for user in (dave, frank):
        response = api_as(user).patch(
            f"/api/v1/customers/{dave_customer.pk}/", {"shoe_size": 44}, HTTP_IF_MATCH='"1"'
        )
        assert response.status_code == 400 and "shoe_size" in response.data, user


def test_a_customer_cannot_create_customers(dave):
    response = api_as(dave).post("/api/v1/customers/", {"family_name": "Hopper"})
    assert response.status_code == 403
    assert not Customer.objects.filter(family_name="Hopper").exists()
