"""The contact history on the customer screen: one channel at a time, older pages
as the agent scrolls (keyset pages: none lost, none twice), and a screen's live
re-reads logged once a minute rather than on each."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents.views.common import history_cursor, parse_history_cursor
from crm import services
from crm.models import AccessLogEntry, Customer, SourceSystem, User

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=123456)


@pytest.fixture(autouse=True)
def _forget_screen_reads() -> None:
    cache.clear()


def desk(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def record(customer: Customer, source: SourceSystem, n: int, channel: str, **extra: Any) -> None:
    services.interaction_record(
        customer_id=customer.pk, channel=channel, direction="inbound", source=source,
        external_id=f"h{n}", occurred_at=T0 - dt.timedelta(minutes=n // 2), subject=f"Contact {n}", **extra,
    )  # fmt: skip


def ids_on(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-interaction="(\d+)"', html)]


def next_link(html: str) -> str | None:
    found = re.search(r'data-history-next="([^"]+)"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_scrolling_pages_through_the_whole_history_once_newest_first(
    alice: User, dave_customer: Customer, ivr: SourceSystem, django_assert_max_num_queries: Any
) -> None:
    # Pairs of contacts share a minute: the cursor must part equal times by id.
    for n in range(120):
        record(dave_customer, ivr, n, "phone" if n % 3 else "email")
    client = desk(alice)
    screen = client.get(reverse("customer", args=[dave_customer.pk])).content.decode()
    seen = ids_on(screen)
    assert len(seen) == 50
    link = next_link(screen)
    pages = 0
    while link:
        with django_assert_max_num_queries(6):  # session, user, visible?, access log, the page
            page = client.get(link)
        assert page.status_code == 200
        seen += ids_on(page.content.decode())
        link = next_link(page.content.decode())
        pages += 1
    expected = list(dave_customer.interactions.order_by("-occurred_at", "-id").values_list("pk", flat=True))
    assert seen == expected and pages == 2
    assert "The first contact on record." in page.content.decode()


def test_one_channel_shows_only_its_contacts_and_pages_within_it(
    alice: User, dave_customer: Customer, ivr: SourceSystem
) -> None:
    for n in range(160):
        record(dave_customer, ivr, n, "email" if n % 2 else "phone")
    client = desk(alice)
    url = reverse("customer-history", args=[dave_customer.pk])
    first = client.get(url, {"channel": "email"}).content.decode()
    second_link = next_link(first)
    assert second_link is not None and "channel=email" in second_link
    seen = ids_on(first) + ids_on(client.get(second_link).content.decode())
    emails = list(
        dave_customer.interactions.filter(channel="email")
        .order_by("-occurred_at", "-id")
        .values_list("pk", flat=True)
    )
    assert seen == emails
    assert "No contacts on this channel." in client.get(url, {"channel": "chat"}).content.decode()


def test_each_entry_shows_agent_disposition_notes_campaign_and_script_answers_place(
    alice: User, dave_customer: Customer, ivr: SourceSystem
) -> None:
    record(dave_customer, ivr, 1, "phone", agent=alice, disposition="callback_requested",
           notes="Wants a call after six", campaign_code="spring-cards")  # fmt: skip
    html = desk(alice).get(reverse("customer-history", args=[dave_customer.pk])).content.decode()
    for shown in ("Alice", "callback requested", "Wants a call after six", "spring-cards"):
        assert shown in html


def test_bad_filters_and_cursors_are_refused_naming_the_fix(alice: User, dave_customer: Customer) -> None:
    client = desk(alice)
    url = reverse("customer-history", args=[dave_customer.pk])
    bad_channel = client.get(url, {"channel": "pigeon"})
    assert bad_channel.status_code == 400 and "use one of phone" in bad_channel.content.decode()
    bad_cursor = client.get(url, {"before": "yesterday"})
    assert bad_cursor.status_code == 400 and "history cursor" in bad_cursor.content.decode()


def test_the_history_is_only_for_staff_who_may_see_the_customer(
    dave: User, dave_customer: Customer, alice: User
) -> None:
    url = reverse("customer-history", args=[dave_customer.pk])
    assert desk(dave).get(url).status_code in (302, 403)
    assert desk(alice).get(reverse("customer-history", args=[999_999])).status_code == 404
    assert Client().get(url).status_code == 302


def test_a_cursor_keeps_its_microseconds() -> None:
    at = dt.datetime(2026, 12, 2, 9, 30, 1, 654321, tzinfo=dt.UTC)
    assert parse_history_cursor(history_cursor(at, 42)) == (at, 42)


def test_an_open_screens_re_reads_are_logged_once_a_minute_per_customer(
    alice: User, dave_customer: Customer
) -> None:
    client = desk(alice)
    screen_part = reverse("customer-screen", args=[dave_customer.pk])

    def logged() -> int:
        return AccessLogEntry.objects.filter(user=alice, customer_id=dave_customer.pk).count()

    client.get(reverse("customer", args=[dave_customer.pk]))
    assert logged() == 1  # opening the page always logs
    for _ in range(5):
        client.get(screen_part, headers={"X-Screen-Id": "tab-1"})
    assert logged() == 2
    client.get(screen_part, headers={"X-Screen-Id": "tab-2"})  # another open screen
    assert logged() == 3
    cache.delete(f"screen-read:{alice.pk}:tab-1:{dave_customer.pk}")  # a minute later
    client.get(screen_part, headers={"X-Screen-Id": "tab-1"})
    assert logged() == 4
