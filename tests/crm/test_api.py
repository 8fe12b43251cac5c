from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from crm import services
from crm.models import AccessLogEntry, Customer, Interaction
from tests.conftest import PASSWORD, api_as, make_customer, minutes_ago

pytestmark = pytest.mark.django_db


def test_anonymous_callers_get_401_with_a_bearer_challenge(dave_customer):
    response = APIClient().get(f"/api/v1/customers/{dave_customer.pk}/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_agent_finds_a_customer_by_a_misspelt_name(alice, dave_customer, erin_customer):
    # "Millar" is no prefix of "Miller"; its phonetic key is the same.
    response = api_as(alice).get("/api/v1/customers/", {"q": "Dave Millar"})
    assert response.status_code == 200
    assert [row["id"] for row in response.data["results"]] == [dave_customer.pk]


def test_an_agent_finds_a_customer_by_name_prefix_and_accents(alice):
    jose = make_customer(given_name="José", family_name="Núñez", phones=[], emails=[])
    response = api_as(alice).get("/api/v1/customers/", {"q": "jose nun"})
    assert [row["id"] for row in response.data["results"]] == [jose.pk]


def test_an_agent_finds_a_customer_by_a_number_as_dialled(alice, dave_customer, erin_customer):
    response = api_as(alice).get("/api/v1/customers/", {"phone": "(202) 555-0143"})
    assert [row["id"] for row in response.data["results"]] == [dave_customer.pk]
    response = api_as(alice).get("/api/v1/customers/", {"phone": "00 44 20 7946 0958"})
    assert [row["id"] for row in response.data["results"]] == [erin_customer.pk]


def test_an_agent_finds_customers_by_email_account_and_customer_number(alice, dave_customer, checking):
    services.account_open(customer_id=dave_customer.pk, product_code=checking.code, account_number="CHK-42")
    client = api_as(alice)
    for params in ({"email": "DAVE@example.com"}, {"account_number": "chk-42"}, {"q": dave_customer.number}):
        response = client.get("/api/v1/customers/", params)
        assert [row["id"] for row in response.data["results"]] == [dave_customer.pk], params


def test_an_unreadable_phone_in_a_search_names_the_parameter(alice):
    response = api_as(alice).get("/api/v1/customers/", {"phone": "call me maybe"})
    assert response.status_code == 400
    assert "phone" in response.data and "country code" in response.data["phone"][0]


def test_detail_carries_the_version_as_etag(alice, dave_customer):
    response = api_as(alice).get(f"/api/v1/customers/{dave_customer.pk}/")
    assert response.status_code == 200
    assert response["ETag"] == '"1"'
    assert response.data["phones"][0]["number"] == "+12025550143"
    assert response.data["number"] == dave_customer.number


def test_patch_without_if_match_is_428_and_changes_nothing(alice, dave_customer):
    response = api_as(alice).patch(f"/api/v1/customers/{dave_customer.pk}/", {"tier": "gold"})
    assert response.status_code == 428
    assert "If-Match" in response.data["detail"]
    assert Customer.objects.get(pk=dave_customer.pk).tier == "standard"


def test_patch_with_a_stale_version_is_412_and_keeps_the_newer_change(alice, bob, dave_customer):
    url = f"/api/v1/customers/{dave_customer.pk}/"
    first = api_as(bob).patch(url, {"tier": "gold"}, HTTP_IF_MATCH='"1"')
    assert first.status_code == 200 and first["ETag"] == '"2"'
    late = api_as(alice).patch(url, {"given_name": "David"}, HTTP_IF_MATCH='"1"')
    assert late.status_code == 412
    assert late.data["current_version"] == 2 and late["ETag"] == '"2"'
    fresh = Customer.objects.get(pk=dave_customer.pk)
    assert (fresh.tier, fresh.given_name) == ("gold", "Dave")


def test_patch_errors_name_each_field_and_the_fix(bob, dave_customer):
    response = api_as(bob).patch(
        f"/api/v1/customers/{dave_customer.pk}/",
        {"tier": "diamond", "phones": [{"number": "12"}], "emails": [{"address": "x@"}],
         "date_of_birth": (dt.date.today() + dt.timedelta(days=3)).isoformat(), "shoe_size": 44},
        HTTP_IF_MATCH='"1"',
    )  # fmt: skip
    assert response.status_code == 400
    assert "standard, silver, gold, platinum" in str(response.data["tier"])
    assert "shoe_size" in response.data
    fresh = Customer.objects.get(pk=dave_customer.pk)
    assert fresh.version == 1 and fresh.tier == "standard"


def test_service_level_errors_come_back_as_field_errors(alice, dave_customer):
    response = api_as(alice).patch(
        f"/api/v1/customers/{dave_customer.pk}/",
        {"phones": [{"number": "12"}], "time_zone": "Moon/Base",
         "date_of_birth": (dt.date.today() + dt.timedelta(days=3)).isoformat()},
        HTTP_IF_MATCH='"1"',
    )  # fmt: skip
    assert response.status_code == 400
    assert set(response.data) == {"phones", "time_zone", "date_of_birth"}
    assert "future" in response.data["date_of_birth"][0]


def test_an_agent_creates_a_customer_and_gets_its_etag(alice):
    response = api_as(alice).post(
        "/api/v1/customers/",
        {"given_name": "Grace", "family_name": "Hopper", "phones": [{"number": "202-555-0199"}],
         "time_zone": "America/New_York"},
    )  # fmt: skip
    assert response.status_code == 201, response.data
    assert response.data["phones"][0]["number"] == "+12025550199"
    assert response["ETag"] == '"1"'


def test_a_customer_changes_their_own_contact_details_but_not_their_tier(dave, dave_customer):
    client = api_as(dave)
    url = f"/api/v1/customers/{dave_customer.pk}/"
    ok = client.patch(url, {"do_not_call": True}, HTTP_IF_MATCH='"1"')
    assert ok.status_code == 200 and ok.data["do_not_call"] is True
    refused = client.patch(url, {"tier": "platinum"}, HTTP_IF_MATCH='"2"')
    assert refused.status_code == 403 and "contact us" in refused.data["tier"][0]
    assert Customer.objects.get(pk=dave_customer.pk).tier == "standard"


def test_a_customer_token_sees_only_its_own_customer(dave, dave_customer, erin_customer):
    response = api_as(dave).get("/api/v1/customers/")
    assert [row["id"] for row in response.data["results"]] == [dave_customer.pk]


def _endpoints_about(customer: Customer, account_id: int, household_id: int) -> list[tuple[str, str, dict]]:
    base = f"/api/v1/customers/{customer.pk}/"
    return [
        ("get", base, {}),
        ("patch", base, {"do_not_email": True}),
        ("get", base + "timeline/", {}),
        ("post", base + "timeline/", {"channel": "web", "direction": "inbound",
                                      "occurred_at": timezone.now().isoformat()}),
        ("get", base + "accounts/", {}),
        ("get", f"/api/v1/accounts/{account_id}/", {}),
        ("get", f"/api/v1/households/{household_id}/", {}),
        ("post", f"/api/v1/households/{household_id}/members/", {"customer": customer.pk}),
    ]  # fmt: skip


def test_customer_a_cannot_read_or_change_customer_b_through_any_endpoint(
    dave, dave_customer, erin_customer, checking
):
    account = services.account_open(customer_id=erin_customer.pk, product_code=checking.code,
                                    account_number="ERIN-1")  # fmt: skip
    household = services.household_create(name="Okafor household")
    services.household_add_member(household_id=household.pk, customer_id=erin_customer.pk)
    erin_before = Customer.objects.get(pk=erin_customer.pk)
    client = api_as(dave)
    for method, url, body in _endpoints_about(erin_customer, account.pk, household.pk):
        response = getattr(client, method)(url, body, HTTP_IF_MATCH=f'"{erin_before.version}"')
        assert response.status_code in (403, 404), (method, url, response.status_code)
    # Lists leak nothing either.
    assert api_as(dave).get("/api/v1/accounts/").data["results"] == []
    assert api_as(dave).get("/api/v1/households/").data["results"] == []
    assert api_as(dave).get("/api/v1/customers/", {"q": "Erin"}).data["results"] == []
    erin_after = Customer.objects.get(pk=erin_customer.pk)
    assert erin_after.version == erin_before.version
    assert not Interaction.objects.filter(customer=erin_customer).exists()


def test_a_shared_household_does_not_reveal_the_other_member_to_a_customer(
    dave, dave_customer, erin_customer
):
    home = services.household_create(name="Shared")
    for customer in (dave_customer, erin_customer):
        services.household_add_member(household_id=home.pk, customer_id=customer.pk)
    response = api_as(dave).get(f"/api/v1/households/{home.pk}/")
    assert response.status_code == 200
    assert [m["id"] for m in response.data["members"]] == [dave_customer.pk]


def test_a_customer_reads_their_history_without_internal_notes(dave, dave_customer, alice):
    services.interaction_record(customer_id=dave_customer.pk, channel="phone", direction="inbound",
                                occurred_at=minutes_ago(5), agent=alice, notes="Sounded upset")  # fmt: skip
    response = api_as(dave).get(f"/api/v1/customers/{dave_customer.pk}/timeline/")
    assert response.status_code == 200
    row = response.data["results"][0]
    assert "notes" not in row and "agent" not in row


def test_an_agent_cannot_create_products_or_read_the_admin(alice):
    client = api_as(alice)
    assert client.post("/api/v1/products/", {"code": "x", "name": "X", "category": "loan"}).status_code == 405
    web = APIClient()
    web.force_login(alice)
    assert web.get("/admin/crm/product/").status_code == 302


def test_the_timeline_pages_with_a_cursor_and_filters_by_channel_and_date(alice, dave_customer):
    now = timezone.now()
    for i in range(7):
        services.interaction_record(customer_id=dave_customer.pk, channel="email" if i % 2 else "phone",
                                    direction="outbound", occurred_at=now - dt.timedelta(days=i))  # fmt: skip
    client = api_as(alice)
    url = f"/api/v1/customers/{dave_customer.pk}/timeline/"
    first = client.get(url, {"page_size": 3})
    assert len(first.data["results"]) == 3 and first.data["next"]
    second = client.get(first.data["next"])
    assert [r["occurred_at"] for r in second.data["results"]] < [
        r["occurred_at"] for r in first.data["results"]
    ]
    emails = client.get(url, {"channel": "email"})
    assert {r["channel"] for r in emails.data["results"]} == {"email"} and len(emails.data["results"]) == 3
    recent = client.get(url, {"since": (now - dt.timedelta(days=2, hours=1)).isoformat()})
    assert len(recent.data["results"]) == 3
    bad = client.get(url, {"channel": "pigeon"})
    assert bad.status_code == 400 and "pigeon" in str(bad.data["channel"])


def test_an_integration_records_a_contact_once_per_external_id(frank, dave_customer):
    client = api_as(frank)
    body = {"channel": "ivr", "direction": "inbound", "occurred_at": minutes_ago(4).isoformat(),
            "external_id": "ivr-991", "disposition": "balance-inquiry"}  # fmt: skip
    url = f"/api/v1/customers/{dave_customer.pk}/timeline/"
    assert client.post(url, body).status_code == 201
    again = client.post(url, body)
    assert again.status_code == 200 and again.data["source_system"] == "ivr"
    assert Interaction.objects.filter(customer=dave_customer, external_id="ivr-991").count() == 1


def test_an_external_id_already_used_for_another_customer_is_a_409_that_reveals_nothing(
    frank, dave_customer, erin_customer
):
    client = api_as(frank)
    body = {
        "channel": "ivr",
        "direction": "inbound",
        "occurred_at": minutes_ago(4).isoformat(),
        "external_id": "ivr-991",
        "disposition": "balance-inquiry",
        "notes": "Asked about a loan",
    }
    assert client.post(f"/api/v1/customers/{dave_customer.pk}/timeline/", body).status_code == 201
    response = client.post(f"/api/v1/customers/{erin_customer.pk}/timeline/", body)
    assert response.status_code == 409
    assert set(response.data) == {"external_id"}
    assert "another customer record" in response.data["external_id"][0]
    text = str(response.data)
    for secret in ("Dave", "Miller", dave_customer.number, str(dave_customer.pk), "loan", "balance"):
        assert secret not in text
    assert not Interaction.objects.filter(customer=erin_customer).exists()


def test_staff_reads_are_written_to_the_access_log(alice, dave, dave_customer, erin_customer):
    api_as(alice).get(f"/api/v1/customers/{dave_customer.pk}/")
    api_as(alice).get("/api/v1/customers/", {"q": "Erin"})
    api_as(dave).get(f"/api/v1/customers/{dave_customer.pk}/")
    rows = list(AccessLogEntry.objects.order_by("id").values_list("user__username", "customer_id", "channel"))
    assert rows == [("alice", dave_customer.pk, "api"), ("alice", erin_customer.pk, "api")]


def test_a_customer_exchanges_a_password_for_a_token_and_revokes_it(dave, dave_customer):
    client = APIClient()
    wrong = client.post("/api/v1/auth/token/", {"username": "dave", "password": "nope"})
    assert wrong.status_code == 401
    issued = client.post("/api/v1/auth/token/", {"username": "dave", "password": PASSWORD})
    assert issued.status_code == 201 and issued.data["expires_at"] is not None
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.data['token']}")
    me = client.get("/api/v1/me/")
    assert me.data["kind"] == "customer" and me.data["customer"] == dave_customer.pk
    assert client.delete("/api/v1/auth/token/").status_code == 204
    assert client.get("/api/v1/me/").status_code == 401


def test_the_openapi_schema_describes_the_customer_endpoints(alice):
    client = APIClient()
    client.force_login(alice)
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/v1/customers/{id}/timeline/" in paths
    assert "patch" in paths["/api/v1/customers/{id}/"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_an_integration_finds_a_customer_by_its_own_key(frank, ivr, dave_customer):
    services.source_record_link(source=ivr, external_key="48213", customer_id=dave_customer.pk)
    client = api_as(frank)
    found = client.get("/api/v1/customers/", {"source_key": "ivr:48213"})
    assert [row["id"] for row in found.data["results"]] == [dave_customer.pk]
    bad = client.get("/api/v1/customers/", {"source_key": "48213"})
    assert bad.status_code == 400 and "source_key" in bad.data


def test_a_client_holding_the_current_version_gets_304(alice, dave_customer):
    client = api_as(alice)
    url = f"/api/v1/customers/{dave_customer.pk}/"
    assert client.get(url, HTTP_IF_NONE_MATCH='"1"').status_code == 304
    services.customer_update(customer_id=dave_customer.pk, expected_version=1, changes={"tier": "gold"})
    changed = client.get(url, HTTP_IF_NONE_MATCH='"1"')
    assert changed.status_code == 200 and changed["ETag"] == '"2"' and changed.data["tier"] == "gold"
