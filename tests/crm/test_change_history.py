from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from crm import services
from crm.models import AccessLogEntry, BusinessEvent, Customer, CustomerChange
from tests.conftest import api_as, minutes_ago

pytestmark = pytest.mark.django_db


def _changes(user, customer: Customer, **params) -> list[dict]:
    response = api_as(user).get(f"/api/v1/customers/{customer.pk}/changes/", params)
    assert response.status_code == 200, response.data
    return response.data["results"]


def test_a_phone_change_by_alice_shows_alice_the_old_and_new_number_and_the_time(alice, bob, dave_customer):
    before = timezone.now()
    response = api_as(alice).patch(
        f"/api/v1/customers/{dave_customer.pk}/",
        {"phones": [{"number": "(202) 555-0177", "kind": "mobile", "primary": True}]},
        HTTP_IF_MATCH='"1"',
    )
    assert response.status_code == 200
    after = timezone.now()
    [change] = _changes(bob, dave_customer)
    assert change["field"] == "phones" and change["version"] == 2
    assert change["old_value"] == [{"number": "+12025550143", "kind": "mobile", "primary": True}]
    assert change["new_value"] == [{"number": "+12025550177", "kind": "mobile", "primary": True}]
    assert change["actor"] == {"id": alice.pk, "username": "alice", "name": "Alice", "kind": "staff"}
    assert change["source_system"] == "crm"
    stored = CustomerChange.objects.get(pk=change["id"])
    assert before <= stored.at <= after


def test_an_integrations_change_names_the_integration_user_and_its_source(frank, bob, dave_customer):
    api_as(frank).patch(
        f"/api/v1/customers/{dave_customer.pk}/", {"family_name": "Millerson"}, HTTP_IF_MATCH='"1"'
    )
    [change] = _changes(bob, dave_customer)
    assert (change["field"], change["old_value"], change["new_value"]) == (
        "family_name",
        "Miller",
        "Millerson",
    )
    assert change["actor"]["username"] == frank.username and change["actor"]["kind"] == "integration"
    assert change["source_system"] == "ivr"


def test_a_self_service_change_names_the_customers_log_in(dave, carol, dave_customer):
    api_as(dave).patch(
        f"/api/v1/customers/{dave_customer.pk}/",
        {"do_not_call": True, "language": "es"},
        HTTP_IF_MATCH='"1"',
    )
    changes = _changes(carol, dave_customer)
    assert {(c["field"], c["old_value"], c["new_value"]) for c in changes} == {
        ("do_not_call", False, True),
        ("language", "en", "es"),
    }
    assert {c["actor"]["username"] for c in changes} == {"dave"}
    assert {c["actor"]["kind"] for c in changes} == {"customer"}


def test_values_that_are_not_json_are_kept_as_their_text(bob, dave_customer):
    services.customer_update(
        customer_id=dave_customer.pk,
        expected_version=1,
        actor=bob,
        changes={"lifetime_value": "1250.50", "date_of_birth": "1981-02-03"},
    )
    rows = dict(CustomerChange.objects.filter(customer_id=dave_customer.pk).values_list("field", "new_value"))
    assert rows == {"lifetime_value": "1250.50", "date_of_birth": "1981-02-03"}


def test_an_update_that_changes_nothing_leaves_no_history(alice, dave_customer):
    services.customer_update(customer_id=dave_customer.pk, expected_version=1, actor=alice,
                             changes={"given_name": "Dave"})  # fmt: skip
    assert not CustomerChange.objects.filter(customer_id=dave_customer.pk).exists()


def test_household_moves_are_recorded_with_who_made_them(alice, dave_customer):
    first = services.household_create(name="Miller household")
    second = services.household_create(name="Shore house")
    services.household_add_member(household_id=first.pk, customer_id=dave_customer.pk, role="head",
                                  actor=alice)  # fmt: skip
    services.household_add_member(household_id=second.pk, customer_id=dave_customer.pk, role="head",
                                  actor=alice)  # fmt: skip
    services.household_remove_member(customer_id=dave_customer.pk, actor=alice)
    rows = list(
        CustomerChange.objects.filter(customer_id=dave_customer.pk)
        .order_by("id")
        .values_list("version", "field", "old_value", "new_value", "actor__username")
    )
    assert rows == [
        (2, "household", None, first.pk, "alice"),
        (2, "household_role", "", "head", "alice"),
        (3, "household", first.pk, second.pk, "alice"),
        (4, "household", second.pk, None, "alice"),
        (4, "household_role", "head", "", "alice"),
    ]


def test_the_history_pages_newest_first_and_filters_by_field(bob, dave_customer):
    for version, tier in enumerate(["silver", "gold", "platinum"], start=1):
        services.customer_update(customer_id=dave_customer.pk, expected_version=version, actor=bob,
                                 changes={"tier": tier})  # fmt: skip
    services.customer_update(customer_id=dave_customer.pk, expected_version=4, actor=bob,
                             changes={"given_name": "David"})  # fmt: skip
    client = api_as(bob)
    url = f"/api/v1/customers/{dave_customer.pk}/changes/"
    first = client.get(url, {"page_size": 2})
    assert first.data["count"] == 4 and first.data["next"]
    assert [c["version"] for c in first.data["results"]] == [5, 4]
    tiers = client.get(url, {"field": "tier"}).data["results"]
    assert [c["new_value"] for c in tiers] == ["platinum", "gold", "silver"]
    bad = client.get(url, {"field": "shoe_size"})
    assert bad.status_code == 400 and "field" in bad.data


def test_supervisors_and_administrators_read_the_history(bob, carol, dave_customer):
    url = f"/api/v1/customers/{dave_customer.pk}/changes/"
    assert api_as(bob).get(url).status_code == 200
    assert api_as(carol).get(url).status_code == 200
    assert api_as(bob).get("/api/v1/customers/999999999/changes/").status_code == 404


def test_nobody_is_granted_rewriting_the_history(alice, carol):
    assert carol.has_perm("crm.view_customerchange") and not alice.has_perm("crm.view_customerchange")
    assert not {"crm.add_customerchange", "crm.change_customerchange", "crm.delete_customerchange"} & set(
        carol.get_all_permissions()
    )


def test_agents_customers_and_integrations_may_not_read_the_history(alice, dave, frank, dave_customer):
    for user in (alice, dave, frank):
        response = api_as(user).get(f"/api/v1/customers/{dave_customer.pk}/changes/")
        assert response.status_code == 403, user
        assert "supervisors and administrators" in response.data["detail"]


def test_reading_the_history_is_logged_as_a_read_of_the_customer(bob, dave_customer):
    _changes(bob, dave_customer)
    assert list(AccessLogEntry.objects.values_list("user__username", "customer_id", "path")) == [
        ("bob", dave_customer.pk, f"/api/v1/customers/{dave_customer.pk}/changes/")
    ]


def test_the_database_refuses_to_rewrite_or_delete_history(bob, dave_customer):
    services.customer_update(customer_id=dave_customer.pk, expected_version=1, actor=bob,
                             changes={"tier": "gold"})  # fmt: skip
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        CustomerChange.objects.update(new_value="platinum")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        CustomerChange.objects.all().delete()
    with pytest.raises(PermissionError):
        CustomerChange.objects.get(customer_id=dave_customer.pk).delete()
    assert CustomerChange.objects.get(customer_id=dave_customer.pk).new_value == "gold"


def test_erasing_a_customer_erases_their_history_with_them(dave, dave_customer, erin_customer, bob):
    api_as(dave).patch(f"/api/v1/customers/{dave_customer.pk}/", {"language": "es"}, HTTP_IF_MATCH='"1"')
    services.customer_update(customer_id=erin_customer.pk, expected_version=1, actor=bob,
                             changes={"language": "fr"})  # fmt: skip
    Customer.objects.filter(pk=dave_customer.pk).delete()
    # The check of every deferred foreign key, as at commit: nothing points at the deleted log-in.
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    assert not CustomerChange.objects.filter(customer_id=dave_customer.pk).exists()
    assert CustomerChange.objects.filter(customer_id=erin_customer.pk).count() == 1


def test_business_events_name_who_acted(alice, frank, dave, dave_customer, checking):
    client = api_as(alice)
    client.patch(f"/api/v1/customers/{dave_customer.pk}/", {"given_name": "David"}, HTTP_IF_MATCH='"1"')
    timeline = f"/api/v1/customers/{dave_customer.pk}/timeline/"
    call = {"channel": "phone", "direction": "inbound", "occurred_at": minutes_ago(3).isoformat()}
    client.post(timeline, call)
    api_as(frank).post(timeline, {**call, "channel": "ivr", "external_id": "ivr-1"})
    api_as(dave).patch(f"/api/v1/customers/{dave_customer.pk}/", {"do_not_email": True}, HTTP_IF_MATCH='"2"')
    account = services.account_open(customer_id=dave_customer.pk, product_code=checking.code,
                                    account_number="CHK-7", actor=alice)  # fmt: skip
    services.account_close(account_id=account.pk, actor=alice)
    actors = list(
        BusinessEvent.objects.filter(customer=dave_customer)
        .order_by("id")
        .values_list("type", "actor__username", "source_system__code")
    )
    assert actors == [
        ("customer.created", None, "crm"),
        ("customer.profile_changed", "alice", "crm"),
        ("interaction.recorded", "alice", "crm"),
        ("interaction.recorded", frank.username, "ivr"),
        ("customer.profile_changed", "dave", "crm"),
        ("customer.consent_changed", "dave", "crm"),
        ("account.opened", "alice", "crm"),
        ("account.closed", "alice", "crm"),
    ]


def test_an_agents_interaction_event_names_the_agent_when_no_actor_is_given(alice, dave_customer):
    interaction, _ = services.interaction_record(
        customer_id=dave_customer.pk, channel="phone", direction="outbound", occurred_at=minutes_ago(1),
        agent=alice,
    )  # fmt: skip
    event = BusinessEvent.objects.get(idempotency_key=f"interaction.recorded:{interaction.pk}")
    assert event.actor == alice


def test_the_history_is_described_in_the_openapi_schema(bob):
    client = APIClient()
    client.force_login(bob)
    schema = client.get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/customers/{id}/changes/"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"id", "field", "page"}
    body = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("PaginatedCustomerChangeList")
    fields = schema["components"]["schemas"]["CustomerChange"]["properties"]
    assert {"field", "old_value", "new_value", "actor", "source_system", "at", "version"} <= set(fields)


def test_the_admin_lists_a_customers_changes_and_lets_nobody_edit_them(carol, bob, dave_customer):
    services.customer_update(customer_id=dave_customer.pk, expected_version=1, actor=bob,
                             changes={"tier": "gold"})  # fmt: skip
    web = APIClient()
    web.force_login(carol)
    listing = web.get(
        "/admin/crm/customerchange/", {"customer__id__exact": dave_customer.pk, "field": "tier"}
    )
    assert listing.status_code == 200 and b"gold" in listing.content
    change = CustomerChange.objects.get(customer_id=dave_customer.pk)
    assert web.get(f"/admin/crm/customerchange/{change.pk}/change/").status_code == 200  # a read-only view
    assert web.post(f"/admin/crm/customerchange/{change.pk}/delete/", {"post": "yes"}).status_code == 403
    assert web.get("/admin/crm/customerchange/add/").status_code == 403
