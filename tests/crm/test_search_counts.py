"""Search counts stop at a cap and never rank or sort; a one-letter name is refused."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crm import selectors
from crm.api.pagination import COUNT_CAP, CappedCountPaginator
from crm.models import Customer, User
from tests.conftest import api_as, make_customer

pytestmark = pytest.mark.django_db


def smiths(n: int) -> list[Customer]:
    return [
        make_customer(given_name=f"Pat{chr(97 + i % 26)}", family_name="Smith", phones=[], emails=[])
        for i in range(n)
    ]


def count_queries(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT COUNT(*)")]


def test_the_api_counts_a_name_search_without_ranking_or_sorting(alice: User) -> None:
    smiths(3)
    client = api_as(alice)
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/api/v1/customers/", {"q": "smith"})
    assert response.status_code == 200 and response.data["count"] == 3
    (count_sql,) = count_queries(captured)
    assert "ts_rank" not in count_sql
    assert "ORDER BY" not in count_sql
    assert f"LIMIT {COUNT_CAP + 1}" in count_sql
    # The page itself is still ranked: the capture did see the search.
    assert any("ts_rank" in q["sql"] and "ORDER BY" in q["sql"] for q in captured.captured_queries)


def test_the_count_stops_one_past_the_cap_and_says_it_was_capped() -> None:
    smiths(5)
    found = selectors.customer_search(queryset=Customer.objects.all(), q="smith")
    over = CappedCountPaginator(found, 2, cap=3)
    assert (over.count, over.capped) == (4, True)
    exact = CappedCountPaginator(found, 2, cap=5)
    assert (exact.count, exact.capped) == (5, False)
    assert [c.family_name for c in exact.page(3).object_list] == ["Smith"]


def test_the_api_reports_cap_plus_one_when_more_match(alice: User, monkeypatch: pytest.MonkeyPatch) -> None:
    smiths(5)
    monkeypatch.setattr(CappedCountPaginator, "cap", 3)
    response = api_as(alice).get("/api/v1/customers/", {"q": "smith", "page_size": "2"})
    assert response.status_code == 200
    assert response.data["count"] == 4
    assert len(response.data["results"]) == 2


def test_the_schema_says_what_a_capped_count_means(alice: User) -> None:
    client = api_as(alice)
    schema = client.get("/api/schema/", {"format": "json"}).json()
    page = schema["components"]["schemas"]["PaginatedCustomerListList"]
    description = page["properties"]["count"]["description"]
    assert f"{COUNT_CAP + 1:,} means more than {COUNT_CAP:,}" in description


@pytest.mark.parametrize("q", ["J", " j ", "J.", "J S"])
def test_a_name_of_one_letter_is_refused_naming_q(alice: User, q: str) -> None:
    response = api_as(alice).get("/api/v1/customers/", {"q": q})
    assert response.status_code == 400
    assert response.data == {"q": ["Type at least two letters of the name."]}


def test_two_letters_a_short_customer_number_and_other_fields_are_searched(
    alice: User, dave_customer: Customer
) -> None:
    client = api_as(alice)
    for params in (
        {"q": "Mi"},
        {"q": f"C-{dave_customer.pk}"},
        {"phone": "(202) 555-0143"},
        {"email": "dave@example.com"},
    ):
        response = client.get("/api/v1/customers/", params)
        assert response.status_code == 200, params
        assert [row["id"] for row in response.data["results"]] == [dave_customer.pk], params
