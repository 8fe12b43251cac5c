"""Query budgets of the API paths a screen pop takes (bench/screen_pop.py): finding the
caller by phone or by name, and reading the customer record.

Each budget is what the path costs today, so any extra query fails the test. They
hold for a client already known to the process: its first request also records
the token's use (at most once a minute) and fills the per-process permission
catalog, so every test makes one warm-up request first.
"""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from crm.models import Customer, User
from tests.conftest import api_as, make_customer

pytestmark = pytest.mark.django_db

# Token with its user and roles, the matching ids through the GIN index, the capped
# count, the page, the access-log insert.
PHONE_SEARCH_QUERIES = 5
# Token, the capped count, the ranked page, the access-log insert.
NAME_SEARCH_QUERIES = 4
# Token, the customer, the access-log insert.
DETAIL_QUERIES = 3


def warm(user: User) -> APIClient:
    client = api_as(user)
    assert client.get("/api/v1/me/").status_code == 200
    return client


def smiths(n: int) -> list[Customer]:
    return [
        make_customer(
            given_name=f"Pat{chr(97 + i % 26)}",
            family_name="Smith",
            phones=[{"number": f"+1202555{1000 + i}", "kind": "mobile", "primary": True}],
            emails=[],
        )
        for i in range(n)
    ]


def test_finding_a_caller_by_phone_takes_five_queries(
    alice: User, dave_customer: Customer, django_assert_max_num_queries: Any
) -> None:
    client = warm(alice)
    with django_assert_max_num_queries(PHONE_SEARCH_QUERIES):
        response = client.get("/api/v1/customers/", {"phone": "(202) 555-0143"})
    assert [row["id"] for row in response.data["results"]] == [dave_customer.pk]


def test_finding_customers_by_name_takes_four_queries_however_many_match(
    alice: User, django_assert_max_num_queries: Any
) -> None:
    smiths(30)
    client = warm(alice)
    with django_assert_max_num_queries(NAME_SEARCH_QUERIES):
        response = client.get("/api/v1/customers/", {"q": "smith"})
    assert response.data["count"] == 30 and len(response.data["results"]) == 25


def test_reading_a_customer_record_takes_three_queries(
    alice: User, dave_customer: Customer, django_assert_max_num_queries: Any
) -> None:
    client = warm(alice)
    with django_assert_max_num_queries(DETAIL_QUERIES):
        response = client.get(f"/api/v1/customers/{dave_customer.pk}/")
    assert response.status_code == 200 and response.data["id"] == dave_customer.pk


def test_a_customer_reading_their_own_record_writes_no_log_row(
    dave: User, dave_customer: Customer, django_assert_max_num_queries: Any
) -> None:
    client = warm(dave)
    with django_assert_max_num_queries(DETAIL_QUERIES - 1):
        response = client.get(f"/api/v1/customers/{dave_customer.pk}/")
    assert response.status_code == 200
