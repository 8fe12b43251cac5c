"""An agent at the desktop, in a real browser: sign in, find a caller by a
misspelled name with the keyboard alone, open the record, read it."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from crm import services
from crm.models import AccessLogEntry, Customer, Product, User
from tests.conftest import PASSWORD, make_customer
from tests.e2e.conftest import COMMITTED, NEEDS_CHROMIUM

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.e2e, COMMITTED, NEEDS_CHROMIUM]

Shot = Callable[..., Path]
LogIn = Callable[["Page", str, str], None]
OpenPage = Callable[[], "Page"]


@pytest.fixture
def agent() -> User:
    return services.staff_user_create(username="maya", password=PASSWORD, role="agent", first_name="Maya",
                                      last_name="Lindqvist", time_zone="America/Chicago")  # fmt: skip


@pytest.fixture
def caller(agent: User) -> Customer:
    """Three customers share the name José Núñez; the caller is the second listed."""
    checking = Product.objects.create(code="everyday-checking", name="Everyday Checking", category="checking")
    Product.objects.create(code="gold-card", name="Gold Card", category="card")
    ivr = services.source_system_create(code="ivr", name="IVR", kind="ivr")
    make_customer(
        given_name="José", family_name="Núñez", phones=[{"number": "+13125550101", "kind": "home"}],
        emails=[], addresses=[{"kind": "home", "line1": "1 Lake St", "city": "Chicago"}],
    )  # fmt: skip
    caller = make_customer(
        given_name="José", family_name="Núñez", tier="gold", lifetime_value=Decimal("48210.50"),
        do_not_call=True, language="es", time_zone="Europe/Madrid",
        emails=[{"address": "jose.nunez@example.com", "kind": "personal", "primary": True}],
        addresses=[{"kind": "home", "line1": "12 Elm Street", "city": "Springfield", "region": "IL",
                    "postal_code": "62701", "country": "US"}],
    )  # fmt: skip
    make_customer(given_name="José", family_name="Núñez", phones=[], emails=[], status="inactive",
                  addresses=[{"kind": "home", "line1": "9 Bay Rd", "city": "Miami"}])  # fmt: skip
    household = services.household_create(
        name="The Núñez household", line1="12 Elm Street", city="Springfield"
    )
    partner = make_customer(given_name="Ana", family_name="Núñez", phones=[], emails=[], tier="platinum")
    services.household_add_member(household_id=household.pk, customer_id=caller.pk, role="head")
    services.household_add_member(household_id=household.pk, customer_id=partner.pk, role="partner")
    services.account_open(customer_id=caller.pk, product_code=checking.code, account_number="CHK-0012345",
                          balance=Decimal("2345.67"))  # fmt: skip
    services.account_open(customer_id=caller.pk, product_code="gold-card", account_number="CARD-0099",
                          balance=Decimal("-1280.45"))  # fmt: skip
    now = timezone.now()
    for n in range(12):
        services.interaction_record(
            customer_id=caller.pk, channel=["phone", "email", "ivr"][n % 3],
            direction="inbound" if n % 2 else "outbound", occurred_at=now - dt.timedelta(hours=9 * n + 1),
            agent=agent if n % 3 != 2 else None, source=ivr if n % 3 == 2 else None,
            disposition=["resolved", "callback", "no_answer"][n % 3], subject=f"Card question {n}",
            notes="Card declined abroad; travel notice added for Portugal and Spain. " * (3 if n == 1 else 1),
            duration_seconds=60 * n + 5,
        )  # fmt: skip
    services.task_create(customer_id=caller.pk, kind="callback", title="Call back about the card limit",
                         priority=2, due_at=now + dt.timedelta(hours=2), assigned_to=agent)  # fmt: skip
    return caller


def active_element(page: Page) -> dict[str, Any]:
    return page.evaluate(
        "() => ({id: document.activeElement.id, href: document.activeElement.getAttribute('href') || ''})"
    )


def test_an_agent_finds_a_caller_by_a_misspelled_name_with_the_keyboard_and_reads_the_record(
    caller: Customer, open_page: OpenPage, live_server: Any, log_in: LogIn, screenshot: Shot
) -> None:
    page = open_page()
    page.goto(f"{live_server.url}/")
    assert "/login/" in page.url  # anonymous: sent to the log-in page
    screenshot(page, "01-login")

    log_in(page, "maya", PASSWORD)
    assert page.url == f"{live_server.url}/"
    assert page.locator(".whoami").inner_text().startswith("Maya Lindqvist")
    screenshot(page, "02-search-start")

    # "/" from anywhere puts the cursor in the search box.
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("/")
    assert active_element(page)["id"] == "search"
    page.keyboard.type("Jose Nunes")  # no accents, and an s for the z
    page.keyboard.press("Enter")
    rows = page.locator("#results .result-row")
    rows.nth(2).wait_for()
    assert rows.count() == 3
    assert "3 customers matching name" in page.locator(".results-head").inner_text()
    # htmx pushed the search into the address bar, so Back and reload keep it.
    assert parse_qs(urlsplit(page.url).query) == {"field": ["auto"], "q": ["Jose Nunes"]}

    # Arrow keys walk the results; the caller is the second row.
    caller_href = f"/customer/{caller.pk}/"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowUp")
    assert active_element(page)["href"].startswith(caller_href)
    screenshot(page, "03-search-results")

    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf".*{caller_href}\?back=.*"))
    assert page.locator("h1").inner_text() == "José Núñez"
    assert "DO NOT CALL." in page.locator(".dnc-banner").inner_text().upper()
    accounts = page.locator("section[aria-labelledby=accounts-h]").inner_text()
    assert "Everyday Checking" in accounts and "CHK-0012345" in accounts and "2,345.67" in accounts
    assert "-1,280.45" in accounts
    history = page.locator("section[aria-labelledby=history-h] tbody tr")
    assert history.count() == 12
    assert "Card question 0" in history.first.inner_text()
    assert "Maya Lindqvist" in history.first.inner_text()
    assert "Call back about the card limit" in page.locator("section[aria-labelledby=tasks-h]").inner_text()
    assert "Europe/Madrid" in page.locator(".cust-facts").inner_text()
    screenshot(page, "04-customer", full_page=True)
    opened = AccessLogEntry.objects.filter(user__username="maya", customer_id=caller.pk, channel="page")
    assert opened.filter(path__startswith=caller_href).count() == 1  # and once more as a search result

    # The household member is one click away; "Esc" goes back to the results.
    assert page.locator(".members a").inner_text() == "Ana Núñez"
    page.keyboard.press("Escape")
    page.wait_for_url(re.compile(r".*/\?q=Jose\+Nunes&field=auto$"))
    assert page.locator("#results .result-row").count() == 3

    # A name nobody has: a clear empty state, the box ready for the next try.
    page.keyboard.press("/")
    page.keyboard.type("Zbigniew Quartermaine")
    page.keyboard.press("Enter")
    page.locator(".empty-none").wait_for()
    assert "No customer found" in page.locator("#results").inner_text()
    screenshot(page, "05-search-empty")

    # An unreadable phone number: the message names the phone.
    page.keyboard.press("/")
    page.keyboard.type("(202) 55")
    page.keyboard.press("Enter")
    page.locator("#search-error").wait_for()
    assert page.locator("#search-error").inner_text().startswith("Phone:")
    assert page.get_attribute("#search", "aria-invalid") == "true"
    screenshot(page, "06-search-error")


def test_many_results_page_with_the_arrow_keys(
    agent: User, open_page: OpenPage, log_in: LogIn, screenshot: Shot
) -> None:
    tiers = ["standard", "silver", "gold", "platinum"]
    cities = ["Chicago", "Springfield", "Los Angeles"]
    for n in range(32):
        make_customer(
            given_name=f"{['Pat', 'Sam', 'Alex', 'Kim'][n % 4]}{'ricia' if n == 5 else ''}",
            family_name="Smith" if n != 7 else "Smith-Montgomery-Worthington-Abernathy",
            phones=[{"number": f"+1202555{1000 + n}", "kind": "mobile", "primary": True}],
            emails=[], tier=tiers[n % 4], do_not_call=n % 9 == 0,
            addresses=[{"kind": "home", "line1": f"{n} Main St", "city": cities[n % 3]}],
        )  # fmt: skip
    page = open_page()
    log_in(page, "maya", PASSWORD)
    page.keyboard.press("/")
    page.keyboard.type("smith")
    page.keyboard.press("Enter")
    rows = page.locator("#results .result-row")
    rows.nth(24).wait_for()
    assert rows.count() == 25
    assert "Page 1 of 2" in page.locator(".pager").first.inner_text()
    page.keyboard.press("ArrowDown")
    screenshot(page, "07-search-many", full_page=True)

    page.keyboard.press("ArrowRight")  # next page, and the cursor stays on the results
    page.locator(".pager-pos", has_text="Page 2 of 2").first.wait_for()
    assert rows.count() == 7
    page.wait_for_function("document.activeElement.hasAttribute('data-result')")
    page.keyboard.press("ArrowLeft")
    page.locator(".pager-pos", has_text="Page 1 of 2").first.wait_for()
    assert rows.count() == 25

    # The session ends (12 hours, or signed out in another tab): the next search
    # loads the log-in page as a whole page, not inside the results.
    page.context.clear_cookies()
    page.keyboard.press("/")
    page.keyboard.type("smith")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/login/\?next=.*"))
    assert page.locator("#results").count() == 0


def test_a_self_service_customer_lands_on_their_page_and_is_told_staff_pages_are_not_theirs(
    open_page: OpenPage, log_in: LogIn, screenshot: Shot, live_server: Any
) -> None:
    customer = make_customer()
    services.customer_login_create(customer=customer, username="dave", password=PASSWORD)
    page = open_page()
    log_in(page, "dave", PASSWORD)
    page.wait_for_url(re.compile(r".*/me/$"))
    assert page.locator("h1").inner_text() == f"Hello, {customer.given_name}"
    page.goto(f"{live_server.url}/floor/")
    assert page.locator("h1").inner_text() == "This is the staff desktop"
    screenshot(page, "08-forbidden")
    page.get_by_role("main").get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/login/$"))
