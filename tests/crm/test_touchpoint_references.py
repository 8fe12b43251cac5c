"""The references of the hot append-only tables (inbox, contacts, events, change
history), checked once per statement by the database: a row naming a missing
row is refused, a referenced row cannot be deleted while rows still name it."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import IntegrityError, OperationalError, connection, connections, transaction
from django.utils import timezone

from crm.models import BusinessEvent, Customer, Interaction, SourceSystem, TouchpointResult, User
from tests.conftest import make_customer
from tests.touchpoint_data import apply_all, receive, visit

pytestmark = pytest.mark.django_db


def _insert_event(*, customer_id: int | None, source_id: int, actor_id: int | None, key: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO crm_businessevent (type, customer_id, occurred_at, payload, source_system_id,"
            " idempotency_key, actor_id, recorded_at) VALUES ('x.y', %s, now(), '{}', %s, %s, %s, now())",
            [customer_id, source_id, key, actor_id],
        )


@pytest.mark.parametrize("bad", ["customer", "source", "actor"])
def test_an_event_naming_a_missing_row_is_refused(web, bad):
    customer = make_customer()
    user = User.objects.get(source_system=web)
    ids = {"customer_id": customer.pk, "source_id": web.pk, "actor_id": user.pk}
    ids[f"{bad}_id"] = 987_654_321
    with pytest.raises(IntegrityError, match="violates its reference"), transaction.atomic():
        _insert_event(**ids, key="k1")
    _insert_event(customer_id=customer.pk, source_id=web.pk, actor_id=None, key="k2")  # all good: stored
    assert BusinessEvent.objects.filter(idempotency_key="k2").exists()


def test_a_statement_with_one_bad_row_among_many_is_refused_whole(web):
    customers = [
        make_customer(emails=[{"address": f"c{i}@example.com", "kind": "personal", "primary": True}])
        for i in range(3)
    ]
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO crm_interaction (customer_id, channel, direction, occurred_at, campaign_code,"
            " disposition, subject, notes, source_system_id, external_id, created_at)"
            " SELECT c, 'web', 'inbound', now(), '', '', '', '', %s, 'e' || c, now()"
            " FROM unnest(%s::bigint[]) c",
            [web.pk, [c.pk for c in customers] + [987_654_321]],
        )
    assert not Interaction.objects.filter(source_system=web).exists()


def test_an_update_that_moves_a_contact_to_a_missing_customer_is_refused_at_commit(web, dave_customer):
    receive(web, [visit("v-1", "Dave@Example.com")])
    apply_all()
    contact = Interaction.objects.get(external_id="v-1")
    with pytest.raises(IntegrityError, match="violates its reference"), transaction.atomic():
        Interaction.objects.filter(pk=contact.pk).update(customer_id=987_654_321)
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # checked at commit, as a foreign key
    # Another field, or the same customer again: nothing to check.
    Interaction.objects.filter(pk=contact.pk).update(subject="moved", customer_id=dave_customer.pk)
    assert Interaction.objects.get(pk=contact.pk).customer_id == dave_customer.pk


def test_a_result_never_moves_to_a_missing_batch(web, dave_customer):
    receive(web, [visit("v-1", "Dave@Example.com")])
    with pytest.raises(IntegrityError), transaction.atomic():
        TouchpointResult.objects.filter(external_id="v-1").update(batch_id=987_654_321)
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    # The outcome writes the customer it applied to: a plain id, cleared by the ORM on delete.
    apply_all()
    assert TouchpointResult.objects.get(external_id="v-1").customer_id == dave_customer.pk


def test_a_source_with_contacts_cannot_be_deleted_by_sql(dave_customer):
    # A source nothing else names (no mappings, no integration user): only its contact.
    source = SourceSystem.objects.create(code="bare", name="Bare", kind="web")
    Interaction.objects.create(
        customer=dave_customer, channel="web", direction="inbound", occurred_at=timezone.now(),
        source_system=source, external_id="i-1",
    )  # fmt: skip
    with pytest.raises(IntegrityError, match="violates the reference"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM crm_sourcesystem WHERE id = %s", [source.pk])
            # Checked at commit, as the deferred foreign keys were.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    Interaction.objects.filter(source_system=source).delete()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM crm_sourcesystem WHERE id = %s", [source.pk])
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # nothing names it any more
    assert not SourceSystem.objects.filter(pk=source.pk).exists()


def test_a_customer_deleted_through_the_orm_takes_its_history_and_frees_its_results(web, dave_customer):
    receive(web, [visit("v-1", "Dave@Example.com")])
    apply_all()
    with transaction.atomic():
        Customer.objects.filter(pk=dave_customer.pk).delete()
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the commit-time checks pass
    assert not Interaction.objects.filter(customer_id=dave_customer.pk).exists()
    assert TouchpointResult.objects.get(external_id="v-1").customer_id is None


def test_a_customer_still_named_by_an_event_cannot_be_deleted_by_sql(web):
    customer = make_customer()
    _insert_event(customer_id=customer.pk, source_id=web.pk, actor_id=None, key="k1")
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM crm_customerchange WHERE customer_id = %s", [customer.pk])
        cursor.execute("DELETE FROM crm_customer WHERE id = %s", [customer.pk])
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    assert Customer.objects.filter(pk=customer.pk).exists()


# --- Customers: checked under an advisory lock, not a row lock (migration 0021) ----------


def _in_thread(work) -> threading.Thread:
    """Run ``work`` on a connection of its own (Django's are per thread)."""

    def run() -> None:
        try:
            work()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _delete_by_sql(cursor, customer_id: int) -> None:
    """The customer and what its creation recorded (its history, its event)."""
    for table in ("crm_customerchange", "crm_businessevent"):
        cursor.execute(f"DELETE FROM {table} WHERE customer_id = %s", [customer_id])
    cursor.execute("DELETE FROM crm_customer WHERE id = %s", [customer_id])


@pytest.mark.django_db(transaction=True)
def test_naming_a_customer_leaves_its_row_unlocked(web):
    # A row lock is written into the row: every batch dirtied its customers' pages.
    customer = make_customer()
    outcome: list[str] = []

    def lock_it() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM crm_customer WHERE id = %s FOR UPDATE NOWAIT", [customer.pk])
            outcome.append("locked")

    with transaction.atomic():
        _insert_event(customer_id=customer.pk, source_id=web.pk, actor_id=None, key="k1")
        _in_thread(lock_it).join(timeout=10)
    assert outcome == ["locked"]


@pytest.mark.django_db(transaction=True)
def test_a_customer_named_by_a_transaction_in_flight_is_not_deleted_when_it_commits(web):
    customer = make_customer()
    named = threading.Event()
    done = threading.Event()

    def name_it() -> None:
        with transaction.atomic():
            _insert_event(customer_id=customer.pk, source_id=web.pk, actor_id=None, key="k1")
            named.set()
            done.wait(timeout=10)  # still in flight while the delete commits

    thread = _in_thread(name_it)
    assert named.wait(timeout=10)
    deleting = threading.Timer(0.5, done.set)
    deleting.start()
    started = time.monotonic()
    with pytest.raises(IntegrityError, match="violates the reference"), transaction.atomic():
        with connection.cursor() as cursor:
            _delete_by_sql(cursor, customer.pk)
            # The commit-time check waits for the transaction naming the customer, then sees its event.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    assert time.monotonic() - started >= 0.4
    thread.join(timeout=10)
    deleting.join(timeout=10)
    assert Customer.objects.filter(pk=customer.pk).exists()
    assert BusinessEvent.objects.filter(idempotency_key="k1", customer_id=customer.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_transaction_naming_a_customer_whose_delete_is_committing_waits_and_is_refused(web):
    customer = make_customer()
    checked = threading.Event()
    release = threading.Event()
    errors: list[Exception] = []

    def delete_it() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            _delete_by_sql(cursor, customer.pk)
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the commit-time check runs (and locks) now
            checked.set()
            release.wait(timeout=10)

    thread = _in_thread(delete_it)
    assert checked.wait(timeout=10)
    threading.Timer(0.5, release.set).start()
    try:
        with transaction.atomic():
            _insert_event(customer_id=customer.pk, source_id=web.pk, actor_id=None, key="k1")
    except IntegrityError as exc:
        errors.append(exc)
    thread.join(timeout=10)
    assert len(errors) == 1 and "violates its reference" in str(errors[0])
    assert not Customer.objects.filter(pk=customer.pk).exists()
    assert not BusinessEvent.objects.filter(idempotency_key="k1").exists()


@pytest.mark.django_db(transaction=True)
def test_under_repeatable_read_a_named_customer_is_still_locked(web):
    # There a statement's snapshot is the transaction's, older than any lock it waits
    # for: the check falls back to locking the rows.
    customer = make_customer()
    outcome: list[str] = []

    def lock_it() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM crm_customer WHERE id = %s FOR UPDATE NOWAIT", [customer.pk])
                outcome.append("locked")
        except OperationalError:
            outcome.append("busy")

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        _insert_event(customer_id=customer.pk, source_id=web.pk, actor_id=None, key="k1")
        _in_thread(lock_it).join(timeout=10)
    assert outcome == ["busy"]


def _advisory_locks_held() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            " AND classid = 1129467203 AND objid = 1"
        )
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_only_a_statement_naming_customers_takes_the_customers_lock(web):
    customer = make_customer()
    with transaction.atomic():
        _insert_event(customer_id=None, source_id=web.pk, actor_id=None, key="k1")
        assert _advisory_locks_held() == 0
        _insert_event(customer_id=customer.pk, source_id=web.pk, actor_id=None, key="k2")
        assert _advisory_locks_held() == 1
