from __future__ import annotations

import threading

import pytest
from django.db import connection

from crm import services
from crm.exceptions import StaleVersion
from crm.models import BusinessEvent, Customer
from tests.conftest import make_customer


@pytest.mark.django_db(transaction=True)
def test_two_agents_saving_the_same_version_at_once_get_one_success_and_one_412():
    customer = make_customer()
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def save(tier: str) -> None:
        start.wait()
        try:
            services.customer_update(customer_id=customer.pk, expected_version=1, changes={"tier": tier})
            outcomes.append(f"saved {tier}")
        except StaleVersion:
            outcomes.append("stale")
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=save, args=(tier,)) for tier in ("gold", "silver")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(o.split()[0] for o in outcomes) == ["saved", "stale"]
    fresh = Customer.objects.get(pk=customer.pk)
    winner = next(o for o in outcomes if o.startswith("saved")).split()[1]
    assert (fresh.version, fresh.tier) == (2, winner)
    assert BusinessEvent.objects.filter(customer=customer, type="customer.profile_changed").count() == 1
