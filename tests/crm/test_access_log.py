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
