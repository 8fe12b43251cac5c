"""The supervisor pages: who may use them, the list, the editor and its live
check, status changes, offers, results and lift."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from crm.models import Customer, Product, User
from policies import selectors
from policies.models import Decision, Offer, OfferPresentation, Policy
from tests.conftest import make_customer
from tests.policies.conftest import make_offer, make_policy, present

WITHDRAWAL_TYPES = ["transaction.withdrawal", "account.withdrawal"]


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def mortgage_offer(mortgage_product: Product) -> Offer:
    return make_offer("home-mortgage", product=mortgage_product)


@pytest.fixture
def mortgage_policy(bob: User, mortgage_offer: Offer) -> Policy:
    return make_policy(
        bob, name="Address change: mortgage", trigger_types=["customer.address_changed"],
        actions=present("home-mortgage", "self_service"), holdout_percent=10,
    )  # fmt: skip


def test_an_agent_may_not_open_or_change_policies(alice: User, mortgage_policy: Policy) -> None:
    client = signed_in(alice)
    for url in ["/policies/", "/policies/new/", f"/policies/{mortgage_policy.pk}/", "/policies/offers/",
                f"/policies/{mortgage_policy.pk}/edit/"]:  # fmt: skip
        response = client.get(url)
        assert response.status_code == 403, url
        assert b"Supervisors only" in response.content
    assert client.post("/policies/check/", {"trigger_types": ["customer.address_changed"]}).status_code == 403
    assert client.post(f"/policies/{mortgage_policy.pk}/status/", {"status": "paused"}).status_code == 403
    mortgage_policy.refresh_from_db()
    assert mortgage_policy.status == "active"
    home = client.get("/")
    assert b'href="/policies/"' not in home.content  # no link to a page they may not open


def test_a_customer_log_in_gets_no_policy_page(dave: User) -> None:
    assert signed_in(dave).get("/policies/").status_code == 403


def test_anonymous_visitors_are_sent_to_sign_in(client: Client) -> None:
    response = client.get("/policies/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_list_shows_todays_presentations_and_filters(
    bob: User, mortgage_policy: Policy, mortgage_offer: Offer, dave_customer: Customer,
    django_assert_max_num_queries: Any,
) -> None:  # fmt: skip
    make_policy(bob, name="Paused one", trigger_types=WITHDRAWAL_TYPES, status="paused",
                actions=present("home-mortgage", "agent_screen"))  # fmt: skip
    now = timezone.now()
    for sequence, status in enumerate(["accepted", "presented", "declined"], start=1):
        OfferPresentation.objects.create(
            offer=mortgage_offer, customer=dave_customer, channel="self_service", policy=mortgage_policy,
            sequence=sequence, status=status, presented_at=now, expires_at=now + dt.timedelta(days=1),
            responded_at=None if status == "presented" else now,
        )  # fmt: skip
    # Presented two days ago and accepted now: accepted today, not presented today.
    OfferPresentation.objects.create(
        offer=mortgage_offer, customer=dave_customer, channel="self_service", policy=mortgage_policy,
        sequence=4,
        status="accepted", presented_at=now - dt.timedelta(days=2), expires_at=now + dt.timedelta(days=1),
        responded_at=now,
    )  # fmt: skip
    client = signed_in(bob)
    with django_assert_max_num_queries(12):
        page = client.get("/policies/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Address change: mortgage" in text and "Paused one" in text
    row = text[text.index("Address change: mortgage") :]
    assert '<td class="num">3</td>\n      <td class="num">2</td>' in row[:1500]
    assert "10%" in row[:1500]

    paused = client.get("/policies/?status=paused").content.decode()
    assert "Paused one" in paused and "Address change: mortgage" not in paused
    by_trigger = client.get("/policies/?trigger=account.withdrawal").content.decode()
    assert "Paused one" in by_trigger and "Address change: mortgage" not in by_trigger
    none = client.get("/policies/?q=nothing-like-this").content.decode()
    assert "No policy matches these filters" in none and "2 policies in all" in none
    bad = client.get("/policies/?status=sleeping").content.decode()
    assert "Unknown status “sleeping”" in bad


def test_the_list_pages_through_many_policies(bob: User, mortgage_offer: Offer) -> None:
    for n in range(27):
        make_policy(bob, name=f"Policy {n:02d}", priority=50, trigger_types=["web.page_view"],
                    actions=present("home-mortgage", "agent_screen"), status="draft")  # fmt: skip
    client = signed_in(bob)
    first = client.get("/policies/").content.decode()
    assert "Page 1 of 2" in first and "Policy 24" in first and "Policy 25" not in first
    second = client.get("/policies/?page=2").content.decode()
    assert "Policy 25" in second and "Policy 26" in second


def test_an_empty_list_says_how_to_start(bob: User) -> None:
    text = signed_in(bob).get("/policies/").content.decode()
    assert "No policies yet" in text and 'href="/policies/new/"' in text


def _form(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Big withdrawal",
        "description": "",
        "trigger_types": WITHDRAWAL_TYPES,
        "condition": 'customer.tier == "platinum" && event.amount > 10000.0',
        "priority": "80",
        "holdout_percent": "10",
        "active_from": "",
        "active_until": "",
        "action-0": "create_task",
        "action-0-create_task-kind": "sales_call",
        "action-0-create_task-title": "Call about the withdrawal",
        "action-0-create_task-due_in_hours": "24",
        "action-0-create_task-assign_to": "queue:sales",
        "action-1": "present_offer",
        "action-1-present_offer-offer": "home-mortgage",
        "action-1-present_offer-channels": ["agent_screen"],
    }
    data.update(overrides)
    return data


def test_a_new_policy_is_saved_as_a_draft_with_its_actions(bob: User, mortgage_offer: Offer) -> None:
    response = signed_in(bob).post("/policies/new/", _form())
    assert response.status_code == 302, response.content.decode()[:3000]
    policy = Policy.objects.get(name="Big withdrawal")
    assert response["Location"] == f"/policies/{policy.pk}/?saved=1"
    assert policy.status == "draft" and policy.created_by == bob and policy.holdout_percent == 10
    assert policy.actions == [
        {"action": "create_task", "settings": {"kind": "sales_call", "title": "Call about the withdrawal",
                                               "due_in_hours": 24, "assign_to": "queue:sales"}},
        {"action": "present_offer", "settings": {"offer": "home-mortgage", "channels": ["agent_screen"]}},
    ]  # fmt: skip


def test_the_window_is_read_in_the_viewers_time_zone(bob: User, mortgage_offer: Offer) -> None:
    bob.time_zone = "America/Chicago"
    bob.save()
    response = signed_in(bob).post("/policies/new/", _form(active_from="2027-01-05T09:00"))
    assert response.status_code == 302
    policy = Policy.objects.get(name="Big withdrawal")
    assert policy.active_from == dt.datetime(2027, 1, 5, 15, 0, tzinfo=dt.UTC)


def test_a_bad_condition_is_shown_at_its_position_and_nothing_typed_is_lost(
    bob: User, mortgage_offer: Offer
) -> None:
    response = signed_in(bob).post(
        "/policies/new/", _form(condition="event.amount > 10000.0 && customer.tire == 1")
    )
    assert response.status_code == 400
    text = response.content.decode()
    assert "Nothing was saved" in text
    assert "Line 1, column 36: Unknown field customer.tire" in text
    assert "customer.tire == 1</textarea>" in text  # what was typed is still there
    assert 'value="Call about the withdrawal"' in text
    assert not Policy.objects.exists()


def test_bad_actions_are_named(bob: User, mortgage_offer: Offer) -> None:
    response = signed_in(bob).post(
        "/policies/new/",
        _form(
            **{"action-1-present_offer-offer": "no-such-offer", "action-0-create_task-due_in_hours": "999"}
        ),
    )
    text = response.content.decode()
    assert response.status_code == 400
    assert "there is no offer “no-such-offer”" in text
    assert "due_in_hours must be a whole number of hours from 1 to 720" in text


def test_the_live_check_gives_line_and_column_and_the_shared_fields(bob: User) -> None:
    client = signed_in(bob)
    bad = client.post(
        "/policies/check/", {"trigger_types": WITHDRAWAL_TYPES, "condition": "event.amount >\n  "}
    ).json()
    assert (
        bad["ok"] is False
        and bad["problems"][0]["line"] >= 1
        and "Syntax error" in bad["problems"][0]["message"]
    )
    typo_condition = 'event.amount > 1.0 && event.chanel == "atm"'
    typo = client.post(
        "/policies/check/", {"trigger_types": WITHDRAWAL_TYPES, "condition": typo_condition}
    ).json()
    assert (
        typo["problems"] == [{"line": 1, "column": 29, "message": typo["problems"][0]["message"]}]
        and "event.chanel" in typo["problems"][0]["message"]
    )
    good = client.post(
        "/policies/check/", {"trigger_types": WITHDRAWAL_TYPES, "condition": "event.amount > 1.0"}
    ).json()
    assert good["ok"] is True and good["fields"]["amount"] == "double"
    none = client.post("/policies/check/", {"condition": "true"}).json()
    assert none["ok"] is False and "Tick a trigger type" in none["problems"][0]["message"]


def test_a_supervisor_activates_pauses_and_retires(bob: User, mortgage_offer: Offer) -> None:
    policy = make_policy(bob, name="Draft", status="draft", trigger_types=["web.page_view"],
                         actions=present("home-mortgage", "agent_screen"))  # fmt: skip
    client = signed_in(bob)
    for status in ["active", "paused", "active", "retired"]:
        response = client.post(f"/policies/{policy.pk}/status/", {"status": status})
        assert response.status_code == 302, response.content.decode()[:2000]
        policy.refresh_from_db()
        assert policy.status == status
    again = client.post(f"/policies/{policy.pk}/status/", {"status": "active"})
    assert again.status_code == 400 and "A retired policy cannot become “active”" in again.content.decode()
    assert client.get(f"/policies/{policy.pk}/edit/").status_code == 302  # a retired one is read only


def test_activation_is_refused_when_its_offer_was_retired(bob: User, mortgage_offer: Offer) -> None:
    policy = make_policy(bob, name="Draft", status="draft", trigger_types=["web.page_view"],
                         actions=present("home-mortgage", "agent_screen"))  # fmt: skip
    Offer.objects.filter(pk=mortgage_offer.pk).update(status="retired")
    response = signed_in(bob).post(f"/policies/{policy.pk}/status/", {"status": "active"})
    assert response.status_code == 400
    assert "is retired: choose a live offer" in response.content.decode()
    policy.refresh_from_db()
    assert policy.status == "draft"


def test_the_editor_shows_the_vocabulary_and_the_saved_actions(bob: User, mortgage_policy: Policy) -> None:
    text = signed_in(bob).get(f"/policies/{mortgage_policy.pk}/edit/").content.decode()
    assert 'data-insert="customer.tier"' in text and "history.count(" in text
    assert 'data-insert="event.source"' in text  # the fields of the ticked trigger
    assert '<option value="home-mortgage" selected>' in text


def test_offers_are_created_and_bad_ones_explained(bob: User, mortgage_product: Product) -> None:
    client = signed_in(bob)
    data = {"code": "Bad Code", "name": "Card", "status": "active", "channels": ["agent_screen"],
            "value": "10.00", "max_presentations": "3", "period_days": "30", "cooling_off_days": "30",
            "expires_after_hours": "72", "marketing": "on", "talking_points": "", "self_service_text": "",
            "valid_from": "2027-01-02T00:00", "valid_to": "2027-01-01T00:00"}  # fmt: skip
    bad = client.post("/policies/offers/new/", data)
    assert bad.status_code == 400
    text = bad.content.decode()
    assert "must end after it starts" in text and 'value="Card"' in text
    data.update(code="card", valid_from="", valid_to="", product=str(mortgage_product.pk))
    good = client.post("/policies/offers/new/", data)
    assert good.status_code == 302, good.content.decode()[:3000]
    offer = Offer.objects.get(code="card")
    assert offer.product == mortgage_product and offer.channels == ["agent_screen"]
    listing = client.get("/policies/offers/").content.decode()
    assert "card" in listing and "Home Mortgage" in listing


def test_results_count_each_answer_by_channel_and_day(
    bob: User, mortgage_policy: Policy, mortgage_offer: Offer, dave_customer: Customer,
    django_assert_max_num_queries: Any,
) -> None:  # fmt: skip
    now = timezone.now()
    answers = [("self_service", "accepted"), ("self_service", "declined"), ("agent_screen", "expired"),
               ("agent_screen", "accepted")]  # fmt: skip
    for sequence, (channel, status) in enumerate(answers, start=1):
        OfferPresentation.objects.create(
            offer=mortgage_offer, customer=dave_customer, channel=channel, policy=mortgage_policy,
            sequence=sequence, status=status, presented_at=now - dt.timedelta(days=sequence - 1),
            expires_at=now + dt.timedelta(days=1), responded_at=now,
        )  # fmt: skip
    results = selectors.presentation_results(policy_id=mortgage_policy.pk, days=7, zone=dt.UTC)
    assert results.presented == 4 and results.totals == {"accepted": 2, "declined": 1, "expired": 1}
    assert results.by_channel["self_service"] == {"accepted": 1, "declined": 1}
    assert [d.presented for d in results.series["agent_screen"]][-4:] == [1, 1, 0, 0]
    assert results.acceptance_rate == 0.5
    client = signed_in(bob)
    with django_assert_max_num_queries(14):  # whatever the number of presentations
        page = client.get(f"/policies/{mortgage_policy.pk}/?days=7").content.decode()
    assert '<svg class="bars"' in page and "Self-service web" in page
    offer_page = signed_in(bob).get(f"/policies/offers/{mortgage_offer.pk}/").content.decode()
    assert "Address change: mortgage" in offer_page and '<span class="tile-n">4</span>' in offer_page


def test_the_difference_interval_matches_newcombes_worked_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II example (a): 56/70 vs 48/80.
    low, high = selectors.difference_interval(selectors.Rate(70, 56), selectors.Rate(80, 48)) or (0, 0)
    assert round(low, 4) == 0.0524 and round(high, 4) == 0.3339
    wilson = selectors.Rate(10, 0).wilson
    assert wilson is not None and wilson[0] == 0.0 and round(wilson[1], 4) == 0.2775


def test_lift_compares_treated_and_held_out_conversions(
    bob: User, mortgage_policy: Policy, mortgage_offer: Offer, mortgage_product: Product, ivr: Any
) -> None:
    from crm import services

    now = timezone.now()
    treated = [make_customer(given_name=f"T{n}", phones=[], emails=[]) for n in range(4)]
    held = [make_customer(given_name=f"H{n}", phones=[], emails=[]) for n in range(4)]
    for n, customer in enumerate(treated + held):
        trigger, _ = services.business_event_record(
            type="customer.address_changed", occurred_at=now - dt.timedelta(days=5), payload={}, source=ivr,
            idempotency_key=f"move-{n}", customer=customer,
        )  # fmt: skip
        Decision.objects.create(
            event=trigger, policy=mortgage_policy, policy_version=1, customer=customer,
            outcome="held_out" if customer in held else ("acted" if n % 2 else "suppressed"),
            created_at=now - dt.timedelta(days=5),
        )  # fmt: skip
    # Treated customers buy a day after the decision; one held-out customer three days after.
    for n, customer in enumerate(treated[:3] + held[:1]):
        services.business_event_record(
            type="account.opened", occurred_at=now - dt.timedelta(days=2 if customer in held else 4),
            source=ivr, customer=customer,
            payload={"account_number": f"M-{n}", "product": mortgage_product.code},
            idempotency_key=f"open-{n}",
        )  # fmt: skip
    # Another product, and the right product too late, are no conversions.
    services.business_event_record(
        type="account.opened", occurred_at=now - dt.timedelta(days=2), source=ivr, customer=held[1],
        payload={"account_number": "X-1", "product": "everyday-checking"}, idempotency_key="open-x",
    )  # fmt: skip
    lift = selectors.policy_lift(
        policy_ids=[mortgage_policy.pk], product_code=mortgage_product.code, days=30, window_days=2
    )
    assert (lift.treated.customers, lift.treated.converted) == (4, 3)
    assert (lift.held_out.customers, lift.held_out.converted) == (4, 0)  # bought 3 days after: outside 2
    lift = selectors.policy_lift(
        policy_ids=[mortgage_policy.pk], product_code=mortgage_product.code, days=30, window_days=30
    )
    assert lift.held_out.converted == 1 and lift.difference == pytest.approx(0.5)
    assert lift.interval is not None and lift.interval[0] < 0.5 < lift.interval[1]
    page = signed_in(bob).get(f"/policies/{mortgage_policy.pk}/").content.decode()
    assert "+50.0</strong> percentage points" in page
