from __future__ import annotations

import pytest
from django.db import DatabaseError, transaction

from crm import services
from crm.models import AccessLogEntry

pytestmark = pytest.mark.django_db


def test_the_database_refuses_to_rewrite_or_delete_the_access_log(alice, dave_customer):
    services.access_log_record(user=alice, customer_ids=[dave_customer.pk], channel="page")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AccessLogEntry.objects.update(customer_id=0)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AccessLogEntry.objects.all().delete()
    assert AccessLogEntry.objects.filter(customer_id=dave_customer.pk).count() == 1


def test_a_customer_reading_their_own_record_is_not_logged(dave, dave_customer):
    assert services.access_log_record(user=dave, customer_ids=[dave_customer.pk]) == 0
    assert not AccessLogEntry.objects.exists()


def test_one_read_of_many_customers_writes_one_row_each(alice, dave_customer, erin_customer):
    ids = [dave_customer.pk, erin_customer.pk, dave_customer.pk]
    assert services.access_log_record(user=alice, customer_ids=ids) == 2


def _synchronous_commit() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_a_read_logged_on_its_own_is_committed_and_later_writes_still_wait_for_the_disk(alice, dave_customer):
    import psycopg
    from django.db import connection

    assert connection.get_autocommit()
    services.access_log_record(user=alice, customer_ids=[dave_customer.pk], channel="page")
    # Committed at once: another connection sees it.
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params) as other:
        seen = other.execute(
            "SELECT count(*) FROM crm_accesslogentry WHERE customer_id = %s", [dave_customer.pk]
        ).fetchone()
    assert seen == (1,)
    # Relaxed for that statement's own commit only, never for the connection.
    assert _synchronous_commit() == "on"


def test_a_read_logged_inside_a_transaction_leaves_that_transactions_commit_synchronous(alice, dave_customer):
    with transaction.atomic():
        services.access_log_record(user=alice, customer_ids=[dave_customer.pk], channel="page")
        assert _synchronous_commit() == "on"
    assert AccessLogEntry.objects.filter(customer_id=dave_customer.pk).count() == 1
