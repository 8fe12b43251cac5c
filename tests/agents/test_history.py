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
        with django_assert_max_num_queries(5):  # user (the session is cached), visible?, access log, the page
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


# --- The chosen channel across the screen's re-renders ----------------------------------------


def pressed_chip(html: str) -> str:
    found = re.search(r'data-history-channel="([^"]*)" aria-pressed="true"', html)
    assert found is not None, "no channel chip is pressed"
    return found.group(1)


def channels_shown(customer: Customer, html: str) -> set[str]:
    return set(customer.interactions.filter(pk__in=ids_on(html)).values_list("channel", flat=True))


def test_a_saved_profile_renders_the_screen_on_the_channel_the_agent_chose(
    alice: User, dave_customer: Customer, ivr: SourceSystem
) -> None:
    from tests.agents.test_desk import _profile_post

    for n in range(6):
        record(dave_customer, ivr, n, "email" if n % 2 else "phone")
    client = desk(alice)
    url = reverse("customer-profile", args=[dave_customer.pk])
    saved = client.post(url, {**_profile_post(dave_customer, dave_customer.version, given_name="Davey"),
                              "channel": "email"})  # fmt: skip
    html = saved.content.decode()
    assert saved["HX-Retarget"] == "#screen"
    assert pressed_chip(html) == "email"
    assert channels_shown(dave_customer, html) == {"email"} and len(ids_on(html)) == 3
    # Without a choice: all of them, as before.
    dave_customer.refresh_from_db()
    unchosen = client.post(url, _profile_post(dave_customer, dave_customer.version, given_name="Dave"))
    html = unchosen.content.decode()
    assert pressed_chip(html) == "" and len(ids_on(html)) == 6


def test_an_answered_offer_renders_the_screen_on_the_channel_the_agent_chose(
    alice: User, dave_customer: Customer, ivr: SourceSystem
) -> None:
    from policies.models import Offer, OfferPresentation

    for n in range(4):
        record(dave_customer, ivr, n, "chat" if n % 2 else "phone")
    offer = Offer.objects.create(code="card", name="Travel card", channels=["agent_screen"], value=10)
    presented = OfferPresentation.objects.create(
        offer=offer, customer=dave_customer, channel="agent_screen", sequence=1,
        expires_at=timezone.now() + dt.timedelta(hours=1),
    )  # fmt: skip
    url = reverse("customer-offer-respond", args=[dave_customer.pk, presented.pk, "decline"])
    html = desk(alice).post(url, {"channel": "chat"}).content.decode()
    presented.refresh_from_db()
    assert presented.status == "declined"
    assert pressed_chip(html) == "chat" and channels_shown(dave_customer, html) == {"chat"}


def test_an_unknown_channel_on_a_save_or_an_answer_is_refused_and_changes_nothing(
    alice: User, dave_customer: Customer
) -> None:
    from policies.models import Offer, OfferPresentation
    from tests.agents.test_desk import _profile_post

    client = desk(alice)
    saved = client.post(
        reverse("customer-profile", args=[dave_customer.pk]),
        {**_profile_post(dave_customer, dave_customer.version, given_name="Davey"), "channel": "pigeon"},
    )
    assert saved.status_code == 400 and "Unknown channel “pigeon”" in saved.content.decode()
    offer = Offer.objects.create(code="card", name="Travel card", channels=["agent_screen"], value=10)
    presented = OfferPresentation.objects.create(
        offer=offer, customer=dave_customer, channel="agent_screen", sequence=1,
        expires_at=timezone.now() + dt.timedelta(hours=1),
    )  # fmt: skip
    url = reverse("customer-offer-respond", args=[dave_customer.pk, presented.pk, "accept"])
    assert client.post(url, {"channel": "pigeon"}).status_code == 400
    presented.refresh_from_db()
    dave_customer.refresh_from_db()
    assert (presented.status, dave_customer.given_name) == ("presented", "Dave")


def test_rows_escape_what_sources_wrote_the_same_on_the_screen_and_on_later_pages(
    alice: User, dave_customer: Customer, ivr: SourceSystem
) -> None:
    hostile = "<script>alert(\"x\")</script> & 'quoted'"
    for n in range(51):
        record(
            dave_customer, ivr, n, "phone", notes=f"{hostile}\nsecond line" + ("." * 200 if n % 2 else ""),
            disposition="call_back<b>", campaign_code="<i>SPRING</i>",
        )  # fmt: skip
    client = desk(alice)
    screen = client.get(reverse("customer", args=[dave_customer.pk])).content.decode()
    link = next_link(screen)
    assert link is not None
    page = client.get(link).content.decode()
    for html in (screen, page):
        assert "<script>alert" not in html and "<b>" not in html and "<i>SPRING" not in html
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;quoted&#x27;" in html
        assert '<span class="dispo" title="call_back&lt;b&gt;">call back&lt;b&gt;</span>' in html
        assert '<span class="tag campaign" title="Campaign">&lt;i&gt;SPRING&lt;/i&gt;</span>' in html
        assert "<br>second line" in html
    # Long notes fold behind their start, short ones show whole, on both.
    assert screen.count('<details class="notes">') == 25 and page.count('<details class="notes">') == 0
    row = re.compile(r'<tr data-interaction="\d+">.*?</tr>', re.DOTALL)

    # One markup for both: a row of the first page looks like one of the next.
    def shape(html: str) -> str:
        return re.sub(r"\d+", "N", re.sub(r'<td class="nowrap col-when">.*?</td>', "", html))

    short_rows = [r for r in row.findall(screen) if "<details" not in r]
    assert shape(short_rows[0]) == shape(row.findall(page)[0])
