from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crm import selectors, services
from crm.models import Interaction
from tests.conftest import make_customer

pytestmark = pytest.mark.django_db


def _history(customer_id: int, count: int) -> None:
    source = services.crm_source()
    now = timezone.now()
    Interaction.objects.bulk_create(
        Interaction(customer_id=customer_id, channel="phone", direction="inbound", source_system=source,
                    occurred_at=now - dt.timedelta(hours=i))
        for i in range(count)
    )  # fmt: skip


def _screen_queries(customer_id: int) -> tuple[int, selectors.CustomerScreen]:
    with CaptureQueriesContext(connection) as captured:
        screen = selectors.customer_screen(customer_id=customer_id)
    return len(captured.captured_queries), screen


def test_the_screen_costs_the_same_queries_for_a_short_and_a_long_history(alice, checking):
    home = services.household_create(name="Rivera household")
    short = make_customer(given_name="Ana", family_name="Rivera")
    long = make_customer(given_name="Luis", family_name="Rivera", phones=[])
    for customer in (short, long):
        services.household_add_member(household_id=home.pk, customer_id=customer.pk)
        services.account_open(customer_id=customer.pk, product_code=checking.code,
                              account_number=f"CHK-{customer.pk}")  # fmt: skip
        services.task_create(customer_id=customer.pk, kind="callback", title="Call back", assigned_to=alice)
    _history(short.pk, 5)
    _history(long.pk, 200)
    selectors.customer_screen(customer_id=short.pk)  # fills the per-process source-system cache

    short_queries, short_screen = _screen_queries(short.pk)
    long_queries, long_screen = _screen_queries(long.pk)

    assert short_queries == long_queries <= 5
    assert len(short_screen.interactions) == 5
    assert len(long_screen.interactions) == selectors.SCREEN_HISTORY
    newest = long_screen.interactions[0].occurred_at
    assert all(i.occurred_at <= newest for i in long_screen.interactions)
    assert [m.pk for m in long_screen.household_members] == [short.pk]
    assert len(long_screen.accounts) == 1 and len(long_screen.open_tasks) == 1


def test_a_done_task_leaves_the_screen(alice):
    customer = make_customer()
    task = services.task_create(customer_id=customer.pk, kind="callback", title="Call back")
    services.task_set_status(task_id=task.pk, status="done")
    assert selectors.customer_screen(customer_id=customer.pk).open_tasks == []


def test_phone_lookup_reads_numbers_as_dialled():
    customer = make_customer(phones=[{"number": "+1 (415) 555-0100", "kind": "work"}])
    for dialled in ("+14155550100", "415 555 0100", "1-415-555-0100", "011 1 415 555 0100"):
        assert list(selectors.customers_by_phone(dialled)) == [customer], dialled


def test_a_shared_household_line_finds_every_member():
    line = [{"number": "+12025550177", "kind": "home"}]
    one = make_customer(given_name="Kim", phones=line)
    two = make_customer(given_name="Lee", phones=line)
    assert set(selectors.customers_by_phone("202-555-0177")) == {one, two}


def test_a_phonetic_search_does_not_match_unrelated_names():
    smith = make_customer(given_name="John", family_name="Smith")
    make_customer(given_name="Joan", family_name="Baker")
    found = selectors.customer_search(queryset=smith.__class__.objects.all(), q="Jon Smyth")
    assert list(found) == [smith]


def test_swapped_letters_in_a_name_are_forgiven():
    smith = make_customer(given_name="John", family_name="Smith")
    make_customer(given_name="Jane", family_name="Doe")
    found = selectors.customer_search(queryset=smith.__class__.objects.all(), q="Jonh Smtih")
    assert list(found) == [smith]


def test_an_exact_name_ranks_above_a_sound_alike():
    smyth = make_customer(given_name="Jon", family_name="Smyth", phones=[])
    smith = make_customer(given_name="John", family_name="Smith", phones=[])
    found = list(selectors.customer_search(queryset=smith.__class__.objects.all(), q="John Smith"))
    assert found == [smith, smyth]


def test_a_customer_without_open_tasks_saves_the_task_query():
    customer = make_customer()
    selectors.customer_screen(customer_id=customer.pk)  # fills the per-process source-system cache
    without, _ = _screen_queries(customer.pk)
    services.task_create(customer_id=customer.pk, kind="callback", title="Call back")
    with_task, screen = _screen_queries(customer.pk)
    assert (without, with_task) == (3, 4)  # no household: customer, accounts, history (+ tasks)
    assert [t.title for t in screen.open_tasks] == ["Call back"]
