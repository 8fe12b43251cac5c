"""Applying touchpoint results: effects of each kind, order, replays, concurrency, live screens."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.db import connection, transaction

from crm import listeners, services
from crm.models import (
    Account,
    BusinessEvent,
    Customer,
    CustomerChange,
    Interaction,
    SourceRecord,
    Task,
    TouchpointBatch,
    TouchpointResult,
)
from tests.conftest import make_customer
from tests.crm import event_listeners
from tests.touchpoint_data import (
    apply_all,
    held_claim,
    lost_claim,
    profile,
    receive,
    row_counts,
    statuses,
    time_ago,
    visit,
    web_source,
)

pytestmark = pytest.mark.django_db


# --- Applying -------------------------------------------------------------------------------


def test_a_visit_lands_in_the_contact_history_with_its_event(web, dave_customer):
    receive(web, [visit("v-1", "Dave@Example.com", outcome="bought")])
    assert apply_all() == 1

    interaction = Interaction.objects.get(source_system=web, external_id="v-1")
    assert (interaction.customer_id, interaction.channel, interaction.direction) == (
        dave_customer.pk, "web", "inbound")  # fmt: skip
    assert (interaction.disposition, interaction.duration_seconds) == ("bought", 42)
    assert BusinessEvent.objects.filter(type="interaction.recorded", customer=dave_customer).count() == 1
    result = TouchpointResult.objects.get(external_id="v-1")
    assert (result.status, result.customer_id, result.applied_at is not None) == (
        "applied",
        dave_customer.pk,
        True,
    )


def test_a_profile_change_updates_the_customer_and_raises_its_events(web, dave_customer):
    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    receive(web, [profile("p-1", "K1", street="1 Elm St", city="Springfield", country="us",
                          phone="202-555-0199", no_calls="yes")])  # fmt: skip
    apply_all()

    dave = Customer.objects.get(pk=dave_customer.pk)
    assert dave.primary_address == {"kind": "home", "line1": "1 Elm St", "line2": "", "city": "Springfield",
                                    "region": "", "postal_code": "", "country": "US"}  # fmt: skip
    assert dave.primary_phone == "+12025550199"
    assert dave.do_not_call is True  # the opt-out holds from this commit on
    types = set(BusinessEvent.objects.filter(customer=dave).values_list("type", flat=True))
    assert {"customer.address_changed", "customer.phone_changed", "customer.consent_changed",
            "customer.profile_changed"} <= types  # fmt: skip
    assert CustomerChange.objects.filter(customer=dave, field="do_not_call", source_system=web).exists()


def test_an_unknown_customer_is_created_from_the_source_and_linked_to_its_key(web):
    receive(web, [profile("p-1", "K9", first="Nia", last="Long", email="nia@example.com")])
    apply_all()

    record = SourceRecord.objects.get(source_system=web, external_key="K9")
    assert (record.customer.given_name, record.customer.primary_email) == ("Nia", "nia@example.com")
    created = BusinessEvent.objects.get(type="customer.created", customer=record.customer)
    assert created.source_system == web

    receive(web, [visit("v-1", "", key="K9")])  # the key alone finds her now
    apply_all()
    assert Interaction.objects.get(external_id="v-1").customer_id == record.customer_id


def test_several_matching_customers_send_the_result_to_review_with_the_candidates(web, dave_customer):
    twin = make_customer(given_name="David", phones=[])  # same e-mail as dave
    receive(web, [visit("v-1", "dave@example.com")])
    apply_all()

    result = TouchpointResult.objects.get(external_id="v-1")
    assert result.status == "review"
    error: Any = result.error
    assert error["candidates"] == sorted([dave_customer.pk, twin.pk])
    assert not Interaction.objects.exists()


def test_a_result_whose_data_cannot_apply_is_rejected_with_its_reason(web, dave_customer):
    item = visit("v-1", "dave@example.com")
    del item["payload"]["direction"]
    receive(web, [item, visit("v-2", "dave@example.com")])
    apply_all()

    assert statuses(web) == {"v-1": "rejected", "v-2": "applied"}
    error: Any = TouchpointResult.objects.get(external_id="v-1").error
    assert "interaction.direction" in error["fields"]


def test_an_unmatched_result_without_a_name_is_rejected_not_guessed(web):
    receive(web, [visit("v-1", "nobody@example.com")])
    apply_all()
    assert statuses(web) == {"v-1": "rejected"}
    assert not Customer.objects.exists()


def test_purchases_accounts_and_events_raise_one_business_event_each(web, dave_customer, checking):
    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    receive(web, [
        {"external_id": "b-1", "record_kind": "purchase", "customer_key": "K1",
         "payload": {"amount": "19.90", "currency": "usd", "sku": "mug"}},
        {"external_id": "a-1", "record_kind": "account", "customer_key": "K1", "sequence": 1,
         "payload": {"number": "chk-001", "product": "everyday-checking"}},
        {"external_id": "e-1", "record_kind": "event", "customer_key": "K1", "sequence": 2,
         "payload": {"type": "account.deposit", "amount": "250", "account": "chk-001"}},
    ])  # fmt: skip
    while apply_all():
        pass

    assert set(statuses(web).values()) == {"applied"}
    purchase = BusinessEvent.objects.get(type="transaction.purchase")
    assert purchase.payload == {"amount": 19.9, "currency": "USD", "product": "mug", "channel": "web"}
    assert Account.objects.get(account_number="CHK-001").customer_id == dave_customer.pk
    deposit = BusinessEvent.objects.get(type="account.deposit", source_system=web)
    assert (deposit.idempotency_key, deposit.payload["amount"]) == ("e-1", 250.0)


def test_replaying_an_applied_batch_changes_no_row(web, dave_customer):
    items = [visit(f"v-{i}", "dave@example.com") for i in range(20)] + [
        profile(
            "p-1", "K1", first="Dave", last="Miller", email="dave@example.com", city="Reno", street="2 Oak"
        )
    ]
    receive(web, items)
    apply_all()
    before = row_counts()

    again = receive(web, items)
    assert (again.accepted, again.duplicates) == (0, 21)
    assert apply_all() == 0
    assert row_counts() == before


def test_one_customers_results_apply_in_the_sources_order_across_batches(web, dave_customer):
    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    # The later change arrives first; the earlier one comes in a second batch.
    receive(web, [profile("p-2", "K1", sequence=2, tier="G")])
    receive(web, [profile("p-1", "K1", sequence=1, tier="S")])
    claim = services.touchpoint_claims.touchpoint_results_claim  # type: ignore[attr-defined]
    assert [c.external_id for c in claim(limit=10, token="peek")] == ["p-1"]  # never both at once
    TouchpointResult.objects.update(claimed_at=None)
    apply_all()

    assert Customer.objects.get(pk=dave_customer.pk).tier == "gold"
    changes = list(CustomerChange.objects.filter(customer=dave_customer, field="tier").order_by("version"))
    assert [c.new_value for c in changes] == ["silver", "gold"]


def test_a_change_arriving_after_a_later_one_was_applied_leaves_the_newer_values(web, dave_customer):
    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    receive(web, [profile("p-2", "K1", sequence=2, tier="G", street="1 Elm St", city="Reno")])
    apply_all()
    # The earlier change comes late: its tier and city are older than what is on file,
    # its opt-out is news. Set-based path, then (a name change) the one-by-one path.
    receive(web, [profile("p-1", "K1", sequence=1, tier="S", city="Austin", no_calls="yes")])
    apply_all()
    receive(web, [profile("p-3", "K1", sequence=3, first="Davy")])
    apply_all()
    # Older than all: only its family name is news, which goes the one-by-one way.
    receive(web, [profile("p-0", "K1", sequence=0, first="Dave", last="Oldname", tier="B")])
    apply_all()

    dave = Customer.objects.get(pk=dave_customer.pk)
    home: Any = dave.primary_address
    assert (dave.tier, dave.given_name, dave.family_name) == ("gold", "Davy", "Oldname")
    assert (home["line1"], home["city"], dave.do_not_call) == (
        "1 Elm St", "Reno", True)  # fmt: skip
    assert statuses(web) == dict.fromkeys(["p-0", "p-1", "p-2", "p-3"], "applied")
    late: Any = TouchpointResult.objects.get(external_id="p-1").error
    assert (late["reason"], sorted(late["fields"])) == ("superseded", ["address.city", "customer.tier"])
    older: Any = TouchpointResult.objects.get(external_id="p-0").error
    assert sorted(older["fields"]) == ["customer.given_name", "customer.tier"]
    assert [c.new_value for c in CustomerChange.objects.filter(customer=dave, field="tier")] == ["gold"]


def test_a_result_without_a_sequence_is_placed_by_its_time_against_one_applied(web, dave_customer):
    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    newer = profile("p-new", "K1", tier="G")
    newer["occurred_at"] = "2026-03-01T12:00:00Z"
    receive(web, [newer])
    apply_all()
    older = profile("p-old", "K1", tier="S")
    older["occurred_at"] = "2026-03-01T11:00:00Z"
    untimed = profile("p-any", "K1", tier="B")  # no order but arrival: before every timed one
    receive(web, [older])
    apply_all()
    receive(web, [untimed])
    apply_all()

    assert Customer.objects.get(pk=dave_customer.pk).tier == "gold"
    assert set(statuses(web).values()) == {"applied"}


@pytest.fixture
def notes_counted_at_once(monkeypatch):
    """Lost claims' notes counted whatever their age (a run waits a few seconds)."""
    monkeypatch.setattr(services.touchpoint_claims, "_NOTE_AGE_SECONDS", 0)  # type: ignore[attr-defined]


def test_a_result_whose_worker_is_lost_each_time_is_dead_lettered(
    web, dave_customer, settings, notes_counted_at_once
):
    settings.CRM_INGEST_MAX_ATTEMPTS = 2
    receive(web, [visit("v-1", "dave@example.com")])
    # Claimed, then the worker vanishes before applying; the next claim counts the
    # lost attempt (its note in Redis, its lock free) before it takes the result again.
    assert len(lost_claim("lost-1")) == 1
    assert len(lost_claim("lost-2")) == 1
    assert TouchpointResult.objects.get().attempts == 1  # the first loss, counted by the second claim
    apply_all()

    result = TouchpointResult.objects.get(external_id="v-1")
    error: Any = result.error
    assert (result.status, result.attempts, error["reason"]) == ("dead", 3, "attempts")
    assert not Interaction.objects.exists()


def test_a_lost_attempt_is_counted_once_and_a_finished_claim_not_at_all(
    web, dave_customer, notes_counted_at_once
):
    receive(web, [visit("v-1", "dave@example.com"), visit("v-2", "dave@example.com")])
    lost_claim("lost", limit=1)
    apply_all()  # counts the loss, then applies both
    apply_all()

    attempts = dict(TouchpointResult.objects.values_list("external_id", "attempts"))
    assert attempts == {"v-1": 2, "v-2": 1}
    assert set(statuses(web).values()) == {"applied"}


@pytest.mark.django_db(transaction=True)
def test_a_result_claimed_by_a_live_worker_is_left_alone(web, dave_customer, notes_counted_at_once):
    receive(web, [visit("v-1", "dave@example.com")])
    with held_claim("busy", limit=10) as held:
        assert len(held) == 1
        assert apply_all() == 0
        assert statuses(web) == {"v-1": "pending"}
        assert TouchpointResult.objects.get().attempts == 0  # a live claim is no lost attempt
    assert apply_all() == 1  # its worker went without writing anything: free at once, no lease to wait


@pytest.mark.django_db(transaction=True)
def test_a_claim_reaches_past_a_head_of_the_backlog_that_another_worker_holds(web, dave_customer):
    # A claim reads the backlog a window at a time (at least 100 rows): the first
    # window and more are held by a live worker, the claim still finds the rest.
    receive(web, [visit(f"v-{i:03}", "dave@example.com") for i in range(130)])
    claim = services.touchpoint_claims.touchpoint_results_claim  # type: ignore[attr-defined]
    with held_claim("busy", limit=120) as held, transaction.atomic():
        free = claim(limit=5, token="second")

    assert len(held) == 120
    assert [c.external_id for c in free] == [f"v-{i:03}" for i in range(120, 125)]
    assert not {c.id for c in held} & {c.id for c in free}


@pytest.mark.django_db(transaction=True)
def test_a_claim_passes_a_held_head_window_by_window_across_batches_received_apart(web, dave_customer):
    # Windows of 100 end inside a batch and start in the middle of another: the next
    # window starts after the last row of the previous one by (time, id), to the
    # microsecond, so no result is skipped and none read twice.
    for b in range(4):
        receive(web, [visit(f"v-{b}-{i:02}", "dave@example.com") for i in range(37)])
    claim = services.touchpoint_claims.touchpoint_results_claim  # type: ignore[attr-defined]
    with held_claim("busy", limit=130) as held, held_claim("second", limit=10) as free, transaction.atomic():
        rest = claim(limit=50, token="third")

    arrival = list(
        TouchpointResult.objects.order_by("received_at", "id").values_list("external_id", flat=True)
    )
    assert [c.external_id for c in held] == arrival[:130]
    assert [c.external_id for c in free] == arrival[130:140]
    assert [c.external_id for c in rest] == arrival[140:]
    assert len({c.id for c in held + free + rest}) == 148


def _arrival() -> list[str]:
    return list(TouchpointResult.objects.order_by("received_at", "id").values_list("external_id", flat=True))


def test_a_claim_starts_where_the_last_one_read_to_and_reads_behind_it_when_short(web, dave_customer):
    receive(web, [visit(f"v-{i:03}", "dave@example.com") for i in range(300)])
    arrival = _arrival()
    claim = services.touchpoint_claims.touchpoint_results_claim  # type: ignore[attr-defined]
    # A claim reads the first hundred and lets them go (its worker lost): the next
    # claim starts after what that one read, not at the head.
    assert [c.external_id for c in lost_claim("lost", limit=100)] == arrival[:100]
    with transaction.atomic():
        assert [c.external_id for c in claim(limit=100, token="next")] == arrival[100:200]
        transaction.set_rollback(True)
    # Short after the position (100 left there), a claim goes on from the head.
    with transaction.atomic():
        short = claim(limit=150, token="short")
        transaction.set_rollback(True)
    assert [c.external_id for c in short] == arrival[:50] + arrival[200:]
    assert apply_all() == 300


def test_a_claim_passed_by_another_while_it_read_its_window_reads_on_after_it(
    web, dave_customer, monkeypatch
):
    receive(web, [visit(f"v-{i:03}", "dave@example.com") for i in range(300)])
    arrival = _arrival()
    module: Any = services.touchpoint_claims  # type: ignore[attr-defined]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT received_at::text, id FROM crm_touchpointresult WHERE external_id = %s", [arrival[149]]
        )
        other = cursor.fetchone()
    move = module._position_move

    def raced(seen: Any, to: Any) -> Any:
        # Between this claim's window and its move, another claim moved the position
        # past the first 150 results.
        if module._position_get() is None:
            move(None, other)
        return move(seen, to)

    monkeypatch.setattr(module, "_position_move", raced)
    with transaction.atomic():
        taken = module.touchpoint_results_claim(limit=100, token="late")
        transaction.set_rollback(True)
    assert [c.external_id for c in taken] == arrival[150:250]
    assert module._position_get()[1] == TouchpointResult.objects.get(external_id=arrival[249]).pk


def test_one_claim_in_a_few_starts_at_the_head_whatever_the_position(web, dave_customer, monkeypatch):
    monkeypatch.setattr(services.touchpoint_claims, "HEAD_EVERY", 1)  # type: ignore[attr-defined]
    receive(web, [visit(f"v-{i:03}", "dave@example.com") for i in range(300)])
    arrival = _arrival()
    assert [c.external_id for c in lost_claim("first", limit=100)] == arrival[:100]
    assert [c.external_id for c in lost_claim("after", limit=100)] == arrival[100:200]
    # The result passed over behind the position is not left to a short claim alone.
    assert [c.external_id for c in lost_claim("head", limit=100)] == arrival[:100]


@pytest.mark.django_db(transaction=True)
def test_a_claim_outside_a_transaction_is_refused(web, dave_customer):
    # Its row locks would end with its statement: a claim that holds nothing.
    receive(web, [visit("v-1", "dave@example.com")])
    claim = services.touchpoint_claims.touchpoint_results_claim  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="transaction that applies"):
        claim(limit=10, token="alone")
    assert apply_all() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_apply_each_result_exactly_once(dave_customer, erin_customer):
    web = web_source()
    items = [visit(f"v-{i}", "dave@example.com" if i % 2 else "erin@example.org") for i in range(300)]
    items += [profile(f"p-{i}", f"K{i}", first="New", last=f"Person{i}", email=f"n{i}@example.com")
              for i in range(100)]  # fmt: skip
    # Keyed: applied set-based, two per key in the source's order.
    for i in range(50):
        services.source_record_link(source=web, external_key=f"D{i}", customer_id=dave_customer.pk)
    items += [visit(f"d-{i}", "", key=f"D{i % 50}", sequence=i) for i in range(100)]
    receive(web, items)
    start = threading.Barrier(2)
    applied: list[int] = []

    def work(name: str) -> None:
        start.wait()
        try:
            total = 0
            while True:
                n = services.touchpoint_results_apply(limit=25, worker=name, budget_seconds=60)
                total += n
                if not n:
                    break
            applied.append(total)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert sum(applied) == 500
    assert Interaction.objects.filter(source_system=web).count() == 400
    assert Customer.objects.count() == 102
    assert SourceRecord.objects.filter(source_system=web).count() == 150
    assert BusinessEvent.objects.filter(type="interaction.recorded").count() == 400
    assert set(statuses(web).values()) == {"applied"}
    assert TouchpointBatch.objects.get().completed_at is not None


# --- The set-based path (keyed customers) ---------------------------------------------------


def test_keyed_contacts_land_like_one_recorded_through_the_service(web, web_user, dave_customer):
    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    receive(web, [visit("v-1", "", key="K1", outcome="bought")])
    apply_all()

    interaction = Interaction.objects.get(external_id="v-1")
    assert (interaction.customer_id, interaction.disposition, interaction.duration_seconds) == (
        dave_customer.pk, "bought", 42)  # fmt: skip
    event = BusinessEvent.objects.get(type="interaction.recorded")
    assert event.idempotency_key == f"interaction.recorded:{interaction.pk}"
    assert (event.customer_id, event.actor_id, event.source_system_id) == (
        dave_customer.pk,
        web_user.pk,
        web.pk,
    )
    assert event.payload == {"channel": "web", "direction": "inbound", "disposition": "bought"}


def test_a_keyed_contact_whose_id_names_another_customers_contact_is_rejected(
    web, dave_customer, erin_customer, caplog
):
    services.interaction_record(customer_id=erin_customer.pk, channel="web", direction="inbound",
                                occurred_at=time_ago(60), source=web, external_id="v-1")  # fmt: skip
    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    tomorrow = (time_ago(-86_400)).isoformat()
    receive(web, [visit("v-1", "", key="K1"), visit("v-2", "", key="K2", at=tomorrow)])
    services.source_record_link(source=web, external_key="K2", customer_id=dave_customer.pk)
    apply_all()

    assert statuses(web) == {"v-1": "rejected", "v-2": "rejected"}
    errors: dict[str, Any] = {r.external_id: r.error for r in TouchpointResult.objects.all()}
    assert errors["v-1"]["reason"] == "conflict"
    assert "another customer record" in errors["v-1"]["fields"]["external_id"]
    assert "future" in errors["v-2"]["fields"]["occurred_at"][0]
    assert Interaction.objects.get().customer_id == erin_customer.pk
    assert "applying one by one" not in caplog.text


def test_a_batch_with_one_fact_recorded_before_records_the_others_once(web, dave_customer, caplog):
    # The inbox forgot "b-1" (purged), its purchase event stays: sent again with a new
    # purchase, it is a repeat (the insert of new rows only), the new one is recorded.
    for key in ("K1", "K2"):  # two keys: both results in one claim, one statement
        services.source_record_link(source=web, external_key=key, customer_id=dave_customer.pk)
    items = [{"external_id": f"b-{i}", "record_kind": "purchase", "customer_key": f"K{i}",
              "payload": {"amount": "19.90", "currency": "usd", "sku": "mug"}} for i in (1, 2)]  # fmt: skip
    receive(web, items[:1])
    apply_all()
    TouchpointResult.objects.all().delete()
    receive(web, items)
    while apply_all():
        pass

    assert statuses(web) == {"b-1": "applied", "b-2": "applied"}
    keys = BusinessEvent.objects.filter(type="transaction.purchase").values_list("idempotency_key", flat=True)
    assert sorted(keys) == ["b-1", "b-2"]
    assert "applying one by one" not in caplog.text  # the set-based path took the repeat in its stride


def test_a_keyed_profile_change_the_record_refuses_is_rejected_and_writes_nothing(web, dave_customer):
    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    receive(web, [profile("p-1", "K1", city="Reno")])  # an address needs line1 too
    apply_all()

    result = TouchpointResult.objects.get()
    error: Any = result.error
    assert result.status == "rejected"
    assert "line1" in error["fields"]["addresses"][0]
    dave = Customer.objects.get(pk=dave_customer.pk)
    assert (dave.version, dave.addresses) == (dave_customer.version, dave_customer.addresses)
    assert not CustomerChange.objects.filter(customer=dave).exists()


# --- Live screens and the sweep ---------------------------------------------------------------


def test_an_open_screen_of_the_customer_hears_of_the_new_contact_and_profile_change(
    web, dave_customer, django_capture_on_commit_callbacks
):
    from crm import realtime
    from tests.listening import hear

    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    receive(web, [visit("v-1", "", key="K1"), profile("p-1", "K2", tier="G")])
    services.source_record_link(source=web, external_key="K2", customer_id=dave_customer.pk)

    def apply_committed() -> None:
        with django_capture_on_commit_callbacks(execute=True):
            apply_all()

    _, heard = hear(realtime.customer_group(dave_customer.pk), apply_committed, frames=2)
    by_event = {m["event"]: m for m in heard}
    interaction = Interaction.objects.get(external_id="v-1")
    assert by_event["interaction.recorded"]["interaction_id"] == interaction.pk
    assert by_event["customer.updated"]["fields"] == ["tier"]
    assert by_event["customer.updated"]["version"] == Customer.objects.get(pk=dave_customer.pk).version


def test_a_batch_sends_only_to_customers_someone_watches(
    web, dave_customer, erin_customer, django_capture_on_commit_callbacks, monkeypatch
):
    """One pipelined look at who listens (the core layer's group sets, or the
    subscriber counts of the pub/sub layer), then a send only where a screen
    listens: a thousand results of customers on no screen cost no group_send."""
    from channels.layers import get_channel_layer

    from crm import realtime
    from tests.listening import hear

    layer: Any = get_channel_layer()
    sent: list[str] = []
    group_send = layer.group_send

    async def counted(group: str, message: dict[str, Any]) -> None:
        sent.append(group)
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send", counted)
    # As in the worker, which runs no server loop (hear() runs the action as a web request would).
    monkeypatch.setattr(realtime, "_server_loop", lambda: None)
    services.source_record_link(source=web, external_key="D", customer_id=dave_customer.pk)
    services.source_record_link(source=web, external_key="E", customer_id=erin_customer.pk)
    receive(web, [visit("v-1", "", key="D", sequence=1), visit("v-2", "", key="E", sequence=1),
                  profile("p-1", "E", sequence=2, tier="G"),
                  visit("v-3", "", key="D", sequence=2)])  # fmt: skip

    def apply_committed() -> int:
        with django_capture_on_commit_callbacks(execute=True):
            return apply_all()

    applied, heard = hear(realtime.customer_group(dave_customer.pk), apply_committed, frames=2)
    assert applied == 4
    assert sent == [realtime.customer_group(dave_customer.pk)] * 2  # nothing to Erin's empty group
    assert sorted(m["interaction_id"] for m in heard) == sorted(
        Interaction.objects.filter(customer=dave_customer).values_list("pk", flat=True)
    )


def test_batches_received_while_a_run_waits_to_start_send_no_message_of_their_own(
    web, dave_customer, settings, django_capture_on_commit_callbacks
):
    """The broker is the real Redis; nobody consumes this queue, so its length is
    the number of apply runs asked for."""
    import secrets

    from config.celery import app

    settings.CRM_INGEST_QUEUE = f"coalesce-{secrets.token_hex(4)}"

    def queued() -> int:
        with app.connection_for_write() as conn:
            channel: Any = conn.default_channel  # the Redis transport's: .client is its Redis
            return int(channel.client.llen(settings.CRM_INGEST_QUEUE))

    try:
        for n in range(3):
            with django_capture_on_commit_callbacks(execute=True):
                receive(web, [visit(f"v-{n}", "dave@example.com")])
        assert queued() == 1  # the first batch's run, not yet started, takes all three

        services.touchpoint_apply_started()  # a worker takes that message
        with django_capture_on_commit_callbacks(execute=True):
            receive(web, [visit("v-3", "dave@example.com")])
        assert queued() == 2  # the started run may have claimed its last batch already

        TouchpointResult.objects.update(received_at=time_ago(3600))
        assert services.touchpoint_results_sweep()  # beat asks regardless of the mark
        assert queued() == 3
    finally:
        with app.connection_for_write() as conn:
            redis_channel: Any = conn.default_channel
            redis_channel.client.delete(settings.CRM_INGEST_QUEUE)
        services.touchpoint_apply_started()


def test_runs_stopping_at_their_budget_together_each_send_their_successor(
    web, dave_customer, settings, django_capture_on_commit_callbacks
):
    """Two runs that stop at their time budget while results are pending make two
    runs, whatever the mark says: through the mark they made one, and the pool went
    on with one process busy. A successor's start leaves intake's mark alone. The
    broker is the real Redis; nobody consumes this queue."""
    import secrets

    from config.celery import app
    from crm import tasks

    settings.CRM_INGEST_QUEUE = f"successors-{secrets.token_hex(4)}"
    settings.CRM_INGEST_BATCH_SIZE = 1
    settings.CRM_INGEST_TASK_BUDGET_SECONDS = 0  # each run stops after its first claim

    def queued() -> list[str]:
        """Each queued message's keyword arguments, as Celery shows them."""
        with app.connection_for_write() as conn:
            channel: Any = conn.default_channel
            messages = channel.client.lrange(settings.CRM_INGEST_QUEUE, 0, -1)
        return [json.loads(m)["headers"].get("kwargsrepr") or "{}" for m in messages]

    try:
        with django_capture_on_commit_callbacks(execute=True):
            receive(web, [visit(f"v-{n}", "dave@example.com") for n in range(4)])
        assert len(queued()) == 1  # intake's run, queued: the mark is set

        assert tasks.touchpoint_results_apply(successor=True) == 1  # two runs stop at their budget
        assert tasks.touchpoint_results_apply(successor=True) == 1
        assert len(queued()) == 3  # each sent its successor, past the mark
        assert sum("successor" in kwargs for kwargs in queued()) == 2

        # ... and the mark still stands for intake's queued run: another batch sends nothing.
        with django_capture_on_commit_callbacks(execute=True):
            receive(web, [visit("v-4", "dave@example.com")])
        assert len(queued()) == 3
    finally:
        with app.connection_for_write() as conn:
            redis_channel: Any = conn.default_channel
            redis_channel.client.delete(settings.CRM_INGEST_QUEUE)
        services.touchpoint_apply_started()


@pytest.mark.django_db(transaction=True)
def test_the_sweep_asks_for_a_run_only_when_a_free_result_has_waited(web, dave_customer, settings):
    settings.CRM_INGEST_SWEEP_AFTER_SECONDS = 60
    receive(web, [visit("v-1", "dave@example.com")])
    assert not services.touchpoint_results_overdue()  # just arrived: its own message is on the way

    TouchpointResult.objects.update(received_at=time_ago(120))
    assert services.touchpoint_results_overdue()
    assert services.touchpoint_results_pending()

    with held_claim("busy", limit=10):
        assert not services.touchpoint_results_overdue()  # a live worker has it
        assert not services.touchpoint_results_pending()
    assert services.touchpoint_results_overdue()  # ... and was lost without a word


def test_a_failure_of_the_set_based_path_falls_back_to_one_by_one(web, dave_customer, monkeypatch):
    from crm.services import touchpoint_bulk

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the set-based path")

    monkeypatch.setattr(touchpoint_bulk, "_interactions", broken)
    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    receive(web, [visit("v-1", "", key="K1"), profile("p-1", "K2", tier="G")])
    services.source_record_link(source=web, external_key="K2", customer_id=dave_customer.pk)
    apply_all()

    assert statuses(web) == {"v-1": "applied", "p-1": "applied"}
    assert Interaction.objects.get().external_id == "v-1"
    assert Customer.objects.get(pk=dave_customer.pk).tier == "gold"
    assert CustomerChange.objects.filter(customer=dave_customer, field="tier").count() == 1  # once, not twice


def test_a_keyed_result_refreshes_when_its_key_was_last_seen_at_most_once_a_day(web, dave_customer):
    record, _ = services.source_record_link(
        source=web, external_key="K1", customer_id=dave_customer.pk, seen_at=time_ago(3 * 86_400)
    )
    receive(web, [visit("v-1", "", key="K1")])
    apply_all()
    record.refresh_from_db()
    assert record.last_seen_at > time_ago(60)

    seen = record.last_seen_at
    receive(web, [visit("v-2", "", key="K1")])
    apply_all()
    record.refresh_from_db()
    assert record.last_seen_at == seen  # not rewritten for every result


@pytest.fixture
def no_listeners(settings: Any) -> Any:
    """Without deferred listeners (the project lists the policy engine's), an event
    is dispatched as its transaction commits."""
    settings.CRM_EVENT_LISTENERS = {"realtime": [], "deferred": []}
    listeners.forget()
    yield
    listeners.forget()


@pytest.mark.usefixtures("no_listeners")
def test_events_of_set_based_results_go_through_the_outbox_like_any_other(
    web, dave_customer, django_capture_on_commit_callbacks
):
    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    services.source_record_link(source=web, external_key="K2", customer_id=dave_customer.pk)
    receive(web, [
        visit("v-1", "", key="K1"), profile("p-1", "K2", tier="G"),
        {"external_id": "b-1", "record_kind": "purchase", "customer_key": "K1", "sequence": 2,
         "payload": {"amount": "5.00"}},
    ])  # fmt: skip
    # The fixtures' hooks (customer.created) wait on the test's transaction, which
    # never commits: the events of the apply would join them. Start without them.
    connection.run_on_commit.clear()
    with django_capture_on_commit_callbacks(execute=True):
        apply_all()

    recorded = BusinessEvent.objects.filter(source_system=web)
    assert {"interaction.recorded", "transaction.purchase", "customer.profile_changed"} <= set(
        recorded.values_list("type", flat=True)
    )
    # No deferred listener is configured: dispatched when the apply committed.
    assert not recorded.filter(dispatched_at__isnull=True).exists()


@pytest.fixture
def deferred_listener(settings: Any) -> Any:
    """One deferred listener of the dispatch tests; returns a function that sets it."""

    def configure(name: str) -> None:
        settings.CRM_EVENT_LISTENERS = {"realtime": [], "deferred": [f"tests.crm.event_listeners.{name}"]}
        listeners.forget()

    event_listeners.seen.clear()
    yield configure
    event_listeners.seen.clear()
    listeners.forget()


def test_a_worker_runs_the_deferred_listeners_of_set_based_results_in_their_transaction(
    web, dave_customer, deferred_listener, django_capture_on_commit_callbacks
):
    deferred_listener("writes_a_task")
    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    receive(web, [visit("v-1", "", key="K1"), profile("p-1", "K1", sequence=2, tier="G")])
    connection.run_on_commit.clear()  # the fixtures' hooks (see above)
    with django_capture_on_commit_callbacks(execute=False) as hooks:
        apply_all()

    recorded = list(BusinessEvent.objects.filter(source_system=web).order_by("id"))
    assert {e.type for e in recorded} >= {"interaction.recorded", "customer.profile_changed"}
    # Dispatched with the apply, before any commit or worker: the listener's tasks are there.
    assert all(e.dispatched_at is not None and e.dispatch_attempts == 1 for e in recorded)
    assert sorted(pk for _, ids in event_listeners.seen for pk in ids) == [e.pk for e in recorded]
    assert Task.objects.filter(customer=dave_customer).count() == len(recorded)
    with django_capture_on_commit_callbacks(execute=True):
        for hook in hooks:
            hook()  # the commit: no event goes to a worker a second time
    assert sorted(pk for _, ids in event_listeners.seen for pk in ids) == [e.pk for e in recorded]


def test_events_whose_deferred_listener_fails_in_the_worker_go_back_to_the_outbox(
    web, dave_customer, deferred_listener
):
    deferred_listener("fails_every_time")
    services.source_record_link(source=web, external_key="K1", customer_id=dave_customer.pk)
    receive(web, [visit("v-1", "", key="K1")])
    connection.run_on_commit.clear()
    apply_all()

    assert statuses(web) == {"v-1": "applied"}  # the listener's failure is the outbox's to retry
    event = BusinessEvent.objects.get(source_system=web, type="interaction.recorded")
    assert (event.dispatched_at, event.dispatch_attempts) == (None, 0)
