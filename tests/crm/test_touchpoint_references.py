"""The references of the hot append-only tables (inbox, contacts, events, change
history), checked once per statement by the database: a row naming a missing
row is refused, a referenced row cannot be deleted while rows still name it."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
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
