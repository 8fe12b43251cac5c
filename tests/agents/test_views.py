"""The staff desktop's pages: who may use them, the one search box, the customer screen."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agents import views
from crm import services
from crm.models import AccessLogEntry, Customer, Product, User
from tests.conftest import PASSWORD, make_customer, minutes_ago

pytestmark = pytest.mark.django_db

# User (with its permissions and roles; the session comes from the cache), the screen's at
# most five queries, the customer's open offers, the access-log insert, and the
# source-system cache a process fills on its first screen, plus the call script panel's at
# most two (tests/scripting/test_panel.py); what matters too is that history length never
# adds any.
SCRIPT_PANEL_QUERIES = 2
SCREEN_MAX_QUERIES = 9 + SCRIPT_PANEL_QUERIES


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def search(user: User, q: str, **params: str) -> str:
    response = client_for(user).get(reverse("home"), {"q": q, **params})
    assert response.status_code == 200
    return response.content.decode()


def result_numbers(html: str) -> list[str]:
    return re.findall(r'<td class="col-number mono">(C-\d{7})</td>', html)


# --- Who may use the desktop ------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_page(dave_customer: Customer) -> None:
    for url in (reverse("home"), reverse("customer", args=[dave_customer.pk])):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login") + "?next=")


def test_an_expired_session_under_htmx_reloads_the_whole_page_to_log_in() -> None:
    response = Client().get(reverse("home"), {"q": "Miller"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert response["HX-Redirect"].startswith(reverse("login") + "?next=")
    assert not response.content


def test_a_self_service_customer_gets_a_403_saying_this_is_the_staff_desktop(dave: User) -> None:
    for url in (reverse("customer", args=[dave.customer_id]), reverse("floor")):
        response = client_for(dave).get(url)
        assert response.status_code == 403
        assert "This is the staff desktop" in response.content.decode()
        assert reverse("me") in response.content.decode()
    # The home page, where signing in lands, is their own page for them.
    assert client_for(dave).get(reverse("home"))["Location"] == reverse("me")
    assert not AccessLogEntry.objects.exists()


def test_an_integration_gets_the_same_403(frank: User) -> None:
    response = client_for(frank).get(reverse("home"))
    assert response.status_code == 403
    assert "an integration" in response.content.decode()


def test_an_agent_gets_the_search_page(alice: User) -> None:
    response = client_for(alice).get(reverse("home"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="search"' in html
    assert "Find a customer" in html  # the first-visit help, not an empty result
    assert "Agent" in html and "/api/docs/" in html
    assert 'href="/admin/"' not in html  # only administrators see the admin link


def test_an_administrator_sees_the_admin_link(carol: User) -> None:
    html = client_for(carol).get(reverse("home")).content.decode()
    assert 'href="/admin/"' in html
    assert "Administrator" in html


def test_an_agent_logs_in_through_the_form_and_lands_on_the_search(alice: User) -> None:
    client = Client()
    assert client.get(reverse("login")).status_code == 200
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("home")
    assert client.get(reverse("home")).status_code == 200


def test_logging_out_takes_a_post_and_returns_to_the_login_page(alice: User) -> None:
    client = client_for(alice)
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert client.get(reverse("home")).status_code == 302


# --- The search box -----------------------------------------------------------------------


def test_it_finds_a_name_typed_with_a_typo_and_without_accents(alice: User) -> None:
    jose = make_customer(given_name="José", family_name="Núñez")
    make_customer(given_name="Maria", family_name="Okafor")
    html = search(alice, "Jose Nunes")
    assert result_numbers(html) == [jose.number]
    assert "José Núñez" in html
    assert "matching name" in html


def test_it_finds_a_phone_number_as_dialled(alice: User, dave_customer: Customer) -> None:
    for dialled in ("(202) 555-0143", "202.555.0143", "+1 202 555 0143", "001 202 555 0143"):
        html = search(alice, dialled)
        assert result_numbers(html) == [dave_customer.number], dialled
        assert "matching phone" in html
    assert "+1 202-555-0143" in html  # shown formatted, not as stored


def test_it_finds_a_customer_number_in_any_spelling(alice: User, dave_customer: Customer) -> None:
    make_customer(given_name="Other", family_name="Person")
    for typed in (dave_customer.number, dave_customer.number.lower(), f"C{dave_customer.pk}"):
        assert result_numbers(search(alice, typed)) == [dave_customer.number], typed
    assert result_numbers(search(alice, str(dave_customer.pk), field="number")) == [dave_customer.number]


def test_it_finds_an_email_and_an_account_number(
    alice: User, dave_customer: Customer, checking: Product
) -> None:
    services.account_open(customer_id=dave_customer.pk, product_code=checking.code, account_number="CHK-0042")
    assert result_numbers(search(alice, "DAVE@example.com")) == [dave_customer.number]
    assert result_numbers(search(alice, "chk-0042")) == [dave_customer.number]


def test_digits_that_match_no_phone_are_tried_as_an_account_number(
    alice: User, dave_customer: Customer, checking: Product
) -> None:
    services.account_open(customer_id=dave_customer.pk, product_code=checking.code, account_number="20245550")
    html = search(alice, "20245550")
    assert result_numbers(html) == [dave_customer.number]
    assert "matching account no." in html


def test_an_unreadable_phone_gets_a_message_naming_the_phone(alice: User) -> None:
    html = search(alice, "call me maybe", field="phone")
    assert 'id="search-error"' in html
    assert "<strong>Phone:</strong>" in html
    assert "cannot be read as a phone number" in html
    assert 'aria-invalid="true"' in html
    # The same when the box guessed it was a phone from its shape.
    html = search(alice, "(202) 55")
    assert "<strong>Phone:</strong>" in html
    assert "wrong number of digits" in html


def test_an_unreadable_email_names_the_email(alice: User) -> None:
    html = search(alice, "nobody@", field="email")
    assert "<strong>E-mail:</strong>" in html
    assert "is not an e-mail address" in html


def test_a_search_that_finds_nobody_says_so_and_what_to_try(alice: User, dave_customer: Customer) -> None:
    html = search(alice, "Zbigniew Quartermaine")
    assert "No customer found" in html
    assert "“Zbigniew Quartermaine”" in html
    assert not result_numbers(html)


def test_results_come_25_to_a_page(alice: User) -> None:
    for n in range(30):
        make_customer(given_name=f"Pat{chr(97 + n % 26)}", family_name="Smith",
                      phones=[{"number": f"+1202555{1000 + n}", "kind": "mobile"}],
                      emails=[])  # fmt: skip
    first = search(alice, "smith")
    assert len(result_numbers(first)) == 25
    assert "<strong>30</strong> customers" in first
    assert "Page 1 of 2" in first
    second = search(alice, "smith", page="2")
    assert len(result_numbers(second)) == 5
    assert set(result_numbers(first)).isdisjoint(result_numbers(second))
    assert "Page 2 of 2" in second


def test_a_one_letter_name_is_refused_with_a_message_naming_the_name(
    alice: User, dave_customer: Customer
) -> None:
    for typed in ("M", " m ", "M."):
        html = search(alice, typed)
        assert 'id="search-error"' in html, typed
        assert "<strong>Name:</strong>" in html
        assert "Type at least two letters of the name." in html
        assert not result_numbers(html)
    assert result_numbers(search(alice, "Mi")) == [dave_customer.number]
    assert not AccessLogEntry.objects.exclude(path__contains="q=Mi").exists()


def test_more_matches_than_the_cap_say_more_than_and_ask_for_another_detail(
    alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views.search, "SEARCH_COUNT_CAP", 3)
    for n in range(5):
        make_customer(given_name=f"Pat{chr(97 + n)}", family_name="Smith", phones=[], emails=[])
    html = search(alice, "smith")
    assert "<strong>More than 3</strong> customers" in html
    assert "ask for another detail" in html
    assert len(result_numbers(html)) == 4  # counting stopped at the fourth
    exact = search(alice, "patb smith")
    assert re.search(r"<strong>1</strong> customer\s+matching", exact) and "More than" not in exact


def test_the_search_count_neither_ranks_nor_sorts(alice: User) -> None:
    for n in range(3):
        make_customer(given_name=f"Pat{chr(97 + n)}", family_name="Smith", phones=[], emails=[])
    client = client_for(alice)
    with CaptureQueriesContext(connection) as captured:
        assert client.get(reverse("home"), {"q": "smith"}).status_code == 200
    (count_sql,) = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT COUNT(*)")]
    assert "ts_rank" not in count_sql and "ORDER BY" not in count_sql
    assert f"LIMIT {views.SEARCH_COUNT_CAP + 1}" in count_sql


def test_htmx_gets_only_the_results(alice: User, dave_customer: Customer) -> None:
    response = client_for(alice).get(reverse("home"), {"q": "Miller"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "<html" not in html
    assert result_numbers(html) == [dave_customer.number]
    assert "HX-Request" in response["Vary"]


# --- The customer screen --------------------------------------------------------------------


def test_every_open_of_the_customer_page_writes_one_access_log_row(
    alice: User, dave_customer: Customer
) -> None:
    client = client_for(alice)
    url = reverse("customer", args=[dave_customer.pk])
    assert client.get(url).status_code == 200
    assert client.get(url + "?back=q%3DMiller").status_code == 200
    rows = list(AccessLogEntry.objects.order_by("id"))
    assert [(r.user_id, r.customer_id, r.channel) for r in rows] == [(alice.pk, dave_customer.pk, "page")] * 2
    assert rows[1].path == url + "?back=q%3DMiller"


def test_a_search_logs_each_customer_it_shows_once(alice: User) -> None:
    shown = [make_customer(given_name=name, family_name="Garcia", phones=[], emails=[]) for name in "AB"]
    search(alice, "garsia")
    search(alice, "Nobody Here")
    rows = AccessLogEntry.objects.order_by("customer_id")
    assert [(r.user_id, r.customer_id, r.channel) for r in rows] == [(alice.pk, c.pk, "page") for c in shown]


def test_a_missing_customer_is_a_404_and_is_not_logged(alice: User) -> None:
    response = client_for(alice).get(reverse("customer", args=[987654]))
    assert response.status_code == 404
    assert "No customer C-0987654" in response.content.decode()
    assert not AccessLogEntry.objects.exists()


def test_the_customer_page_shows_the_record(alice: User, checking: Product) -> None:
    household = services.household_create(name="The Miller household", city="Springfield")
    dave = make_customer(do_not_call=True, tier="gold", lifetime_value=Decimal("12345.60"), language="es")
    partner = make_customer(given_name="Dana", phones=[], emails=[])
    services.household_add_member(household_id=household.pk, customer_id=dave.pk, role="head")
    services.household_add_member(household_id=household.pk, customer_id=partner.pk, role="partner")
    services.account_open(customer_id=dave.pk, product_code=checking.code, account_number="CHK-0042",
                          balance=Decimal("-1234.50"))  # fmt: skip
    services.interaction_record(
        customer_id=dave.pk, channel="phone", direction="inbound", agent=alice,
        occurred_at=dt.datetime(2024, 1, 15, 18, 0, tzinfo=dt.UTC), disposition="card_replaced",
        subject="Lost card", notes="Card blocked and a new one sent.", duration_seconds=245,
    )  # fmt: skip
    services.task_create(customer_id=dave.pk, kind="callback", title="Call back about the new card",
                         due_at=minutes_ago(30), assigned_to=alice)  # fmt: skip

    html = client_for(alice).get(reverse("customer", args=[dave.pk]) + "?back=q%3DMiller").content.decode()

    assert "Dave Miller" in html and dave.number in html
    assert "Do not call." in html  # the banner, above everything else
    assert 'class="tier tier-gold tier-lg"' in html
    assert "12,345.60" in html and "Spanish" in html
    assert "America/New_York" in html  # the customer's own clock
    assert "The Miller household" in html
    assert f'href="{reverse("customer", args=[partner.pk])}"' in html
    assert "Everyday Checking" in html and "CHK-0042" in html and "-1,234.50" in html
    # 18:00 UTC is noon for alice in Chicago: times are in the agent's zone.
    assert '15 Jan 2024 <span class="time">12:00</span>' in html
    assert "card replaced" in html and "Lost card" in html and "4:05" in html
    assert "Call back about the new card" in html and "Overdue" in html
    assert 'href="/?q=Miller"' in html  # back to the same results


def test_the_back_link_only_ever_points_at_the_search_page(alice: User, dave_customer: Customer) -> None:
    url = reverse("customer", args=[dave_customer.pk])
    html = client_for(alice).get(url, {"back": "q=x&next=https://evil.example/"}).content.decode()
    assert 'href="/?q=x"' in html
    assert "evil.example" not in html


def _screen_query_count(client: Client, customer: Customer) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("customer", args=[customer.pk])).status_code == 200
    return len(queries)


def test_the_customer_page_queries_do_not_grow_with_history(
    alice: User, checking: Product, django_assert_max_num_queries
) -> None:
    household = services.household_create(name="The Miller household")
    dave = make_customer()
    partner = make_customer(given_name="Dana", phones=[], emails=[])
    services.household_add_member(household_id=household.pk, customer_id=dave.pk, role="head")
    services.household_add_member(household_id=household.pk, customer_id=partner.pk, role="partner")
    services.account_open(customer_id=dave.pk, product_code=checking.code, account_number="CHK-0042")
    services.task_create(customer_id=dave.pk, kind="callback", title="Call back", assigned_to=alice)
    ivr = services.source_system_create(code="ivr", name="IVR", kind="ivr")

    def add_history(count: int, start: int) -> None:
        for n in range(start, start + count):
            services.interaction_record(
                customer_id=dave.pk, channel="phone", direction="inbound", occurred_at=minutes_ago(n + 1),
                agent=alice if n % 2 else None, source=ivr if n % 3 else None, subject=f"Call {n}",
            )  # fmt: skip

    client = client_for(alice)
    client.get(reverse("home"))  # warm the session, as an agent's browser would be
    add_history(5, 0)
    with django_assert_max_num_queries(SCREEN_MAX_QUERIES):
        client.get(reverse("customer", args=[dave.pk]))
    with_5 = _screen_query_count(client, dave)

    add_history(195, 5)
    with django_assert_max_num_queries(SCREEN_MAX_QUERIES):
        response = client.get(reverse("customer", args=[dave.pk]))
    assert response.content.decode().count('<td class="nowrap col-when">') == 50
    assert _screen_query_count(client, dave) == with_5, with_5


def test_opening_a_customer_also_logs_the_household_members_it_shows(
    alice: User, dave_customer: Customer, erin_customer: Customer
) -> None:
    home = services.household_create(name="Shared")
    for customer in (dave_customer, erin_customer):
        services.household_add_member(household_id=home.pk, customer_id=customer.pk)
    assert client_for(alice).get(reverse("customer", args=[dave_customer.pk])).status_code == 200
    logged = set(AccessLogEntry.objects.values_list("customer_id", flat=True))
    assert logged == {dave_customer.pk, erin_customer.pk}


# --- The live screen's re-read -----------------------------------------------------------


def test_the_screen_part_is_the_screen_read_afresh_and_logged(
    alice: User, dave_customer: Customer, django_assert_max_num_queries
) -> None:
    client = client_for(alice)
    url = reverse("customer-screen", args=[dave_customer.pk])
    services.interaction_record(
        customer_id=dave_customer.pk, channel="web", direction="inbound", occurred_at=minutes_ago(1),
        subject="Viewed mortgage rates",
    )  # fmt: skip
    client.get(url)  # fills the per-process permission catalog, as any first page does
    with django_assert_max_num_queries(SCREEN_MAX_QUERIES):
        response = client.get(url)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    html = response.content.decode()
    assert "Viewed mortgage rates" in html
    assert f'data-screen-version="{dave_customer.version}"' in html
    assert "<html" not in html  # the body alone, for swapping into the open page
    assert AccessLogEntry.objects.filter(user=alice, customer_id=dave_customer.pk, path=url).count() == 2


def test_the_screen_part_is_refused_to_customers_and_unknown_ids_are_404(
    dave: User, alice: User, dave_customer: Customer
) -> None:
    url = reverse("customer-screen", args=[dave_customer.pk])
    assert client_for(dave).get(url).status_code == 403
    assert client_for(alice).get(reverse("customer-screen", args=[dave_customer.pk + 999])).status_code == 404


def test_the_customer_page_carries_what_the_live_module_needs(alice: User, dave_customer: Customer) -> None:
    html = client_for(alice).get(reverse("customer", args=[dave_customer.pk])).content.decode()
    assert f'data-live-customer="{dave_customer.pk}"' in html
    assert f'data-part-url="{reverse("customer-screen", args=[dave_customer.pk])}"' in html
    assert "js/live.js" in html
