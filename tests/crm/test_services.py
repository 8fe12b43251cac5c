from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from crm import clock, services
from crm.exceptions import Conflict, StaleVersion
from crm.models import BusinessEvent, Customer, Interaction
from tests.conftest import make_customer, minutes_ago

pytestmark = pytest.mark.django_db


def test_it_stores_phones_as_e164_and_derives_search_keys():
    customer = make_customer(phones=[{"number": "(202) 555-0143", "kind": "home"}], given_name="José",
                             family_name="Núñez")  # fmt: skip
    assert customer.phones == [{"number": "+12025550143", "kind": "home", "primary": False}]
    assert customer.phone_keys == ["+12025550143"]
    assert customer.sort_name == "nunez jose"
    assert customer.display_name == "José Núñez"


def test_it_names_every_bad_field_and_writes_nothing():
    before = Customer.objects.count()
    with pytest.raises(ValidationError) as caught:
        make_customer(
            phones=[{"number": "not a phone"}],
            emails=[{"address": "nope"}],
            tier="diamond",
            date_of_birth=clock.latest_date_anywhere() + dt.timedelta(days=1),
            time_zone="Mars/Olympus",
        )
    errors = caught.value.message_dict
    assert set(errors) >= {"phones", "emails", "tier", "date_of_birth", "time_zone"}
    assert "country code" in errors["phones"][0]
    assert "future" in errors["date_of_birth"][0]
    assert Customer.objects.count() == before
    assert (
        not BusinessEvent.objects.filter(type="customer.created")
        .exclude(customer__in=Customer.objects.all())
        .exists()
    )


def test_update_checks_the_version_and_bumps_it(dave_customer):
    updated = services.customer_update(customer_id=dave_customer.pk, expected_version=1,
                                       changes={"tier": "gold"})  # fmt: skip
    assert updated.version == 2
    with pytest.raises(StaleVersion) as caught:
        services.customer_update(customer_id=dave_customer.pk, expected_version=1, changes={"tier": "silver"})
    assert caught.value.current_version == 2
    assert Customer.objects.get(pk=dave_customer.pk).tier == "gold"


def test_an_update_that_changes_nothing_keeps_the_version(dave_customer):
    same = services.customer_update(customer_id=dave_customer.pk, expected_version=1,
                                    changes={"given_name": "Dave"})  # fmt: skip
    assert same.version == 1


def test_an_address_change_raises_the_business_event(dave_customer):
    services.customer_update(
        customer_id=dave_customer.pk, expected_version=1,
        changes={"addresses": [{"kind": "home", "line1": "1 Elm St", "city": "Austin", "region": "TX",
                                "postal_code": "78701", "country": "us"}]},
    )  # fmt: skip
    event = BusinessEvent.objects.get(customer=dave_customer, type="customer.address_changed")
    assert event.payload == {"city": "Austin", "region": "TX", "country": "US"}


def test_a_failed_update_leaves_the_record_as_it_was(dave_customer):
    with pytest.raises(ValidationError) as caught:
        services.customer_update(customer_id=dave_customer.pk, expected_version=1,
                                 changes={"given_name": "David", "emails": [{"address": "bad"}]})  # fmt: skip
    assert "emails" in caught.value.message_dict
    fresh = Customer.objects.get(pk=dave_customer.pk)
    assert (fresh.given_name, fresh.version) == ("Dave", 1)


def test_business_events_are_recorded_once_per_key(dave_customer):
    source = services.crm_source()
    kwargs = dict(type="account.withdrawal", customer=dave_customer, occurred_at=minutes_ago(1),
                  payload={"account_number": "CHK-1", "amount": 12000}, source=source,
                  idempotency_key="withdrawal:abc")  # fmt: skip
    first, created = services.business_event_record(**kwargs)
    again, created_again = services.business_event_record(**kwargs)
    assert created and not created_again
    assert first.pk == again.pk
    assert BusinessEvent.objects.filter(idempotency_key="withdrawal:abc").count() == 1


def _withdrawal(customer: Customer, source, key: str, **overrides) -> tuple[BusinessEvent, bool]:
    kwargs = dict(type="account.withdrawal", customer=customer, occurred_at=minutes_ago(1),
                  payload={"account_number": "CHK-1", "amount": 120}, source=source,
                  idempotency_key=key)  # fmt: skip
    return services.business_event_record(**{**kwargs, **overrides})


def test_two_sources_using_the_same_key_both_record_their_events(dave_customer, ivr):
    billing = services.source_system_create(code="billing", name="Billing", kind="billing")
    from_billing, created_billing = _withdrawal(dave_customer, billing, "txn-1")
    from_ivr, created_ivr = _withdrawal(dave_customer, ivr, "txn-1")
    assert created_billing and created_ivr and from_billing.pk != from_ivr.pk
    sources = BusinessEvent.objects.filter(idempotency_key="txn-1").values_list(
        "source_system__code", flat=True
    )
    assert set(sources) == {"billing", "ivr"}


def test_a_key_repeated_by_its_source_for_another_customer_or_type_is_a_conflict(
    dave_customer, erin_customer, ivr
):
    first, _ = _withdrawal(dave_customer, ivr, "txn-9")
    with pytest.raises(Conflict) as caught:
        _withdrawal(erin_customer, ivr, "txn-9")
    assert set(caught.value.errors) == {"idempotency_key"}
    assert "Erin" not in str(caught.value) and str(dave_customer.pk) not in str(caught.value)
    with pytest.raises(Conflict):
        _withdrawal(dave_customer, ivr, "txn-9", type="account.deposit")
    again, created = _withdrawal(dave_customer, ivr, "txn-9", occurred_at=minutes_ago(5))
    assert not created and again.pk == first.pk
    assert BusinessEvent.objects.filter(idempotency_key="txn-9").count() == 1


def test_an_external_id_repeated_for_another_customer_is_a_conflict(dave_customer, erin_customer, ivr):
    services.interaction_record(customer_id=dave_customer.pk, channel="ivr", direction="inbound",
                                occurred_at=minutes_ago(3), source=ivr, external_id="call-5")  # fmt: skip
    with pytest.raises(Conflict) as caught:
        services.interaction_record(customer_id=erin_customer.pk, channel="ivr", direction="inbound",
                                    occurred_at=minutes_ago(2), source=ivr, external_id="call-5")  # fmt: skip
    assert set(caught.value.errors) == {"external_id"}
    assert not Interaction.objects.filter(customer=erin_customer).exists()


@pytest.mark.django_db(transaction=True)
def test_an_external_id_taken_for_another_customer_while_recording_is_a_conflict(
    dave_customer, erin_customer, ivr
):
    """The second writer checks before the first commits, so only the unique index
    can tell it: its insert waits for the first, fails, and must not return the
    first customer's contact."""
    call = {"channel": "ivr", "direction": "inbound", "source": ivr, "external_id": "call-race"}
    outcome: list[str] = []

    def record_for_erin() -> None:
        try:
            services.interaction_record(**call, customer_id=erin_customer.pk, occurred_at=minutes_ago(2))
            outcome.append("recorded")
        except Conflict:
            outcome.append("conflict")
        finally:
            connection.close()  # each thread has its own connection

    other = threading.Thread(target=record_for_erin)
    with transaction.atomic():
        services.interaction_record(**call, customer_id=dave_customer.pk, occurred_at=minutes_ago(3))
        other.start()
        _wait_until_another_session_waits_for_a_lock()
    other.join(timeout=30)
    assert outcome == ["conflict"]
    assert list(
        Interaction.objects.filter(external_id="call-race").values_list("customer_id", flat=True)
    ) == [dave_customer.pk]


def _wait_until_another_session_waits_for_a_lock() -> None:
    for _ in range(3000):
        with connection.cursor() as cursor:
            # pg_locks is live (not a per-transaction snapshot like pg_stat_activity).
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()")
            if cursor.fetchone()[0]:
                return
        threading.Event().wait(0.01)
    raise AssertionError("the second writer never reached the unique index")


def test_an_unknown_event_type_or_bad_payload_is_refused(dave_customer):
    source = services.crm_source()
    with pytest.raises(ValidationError) as caught:
        services.business_event_record(type="account.teleported", customer=dave_customer,
                                       occurred_at=minutes_ago(1), payload={}, source=source,
                                       idempotency_key="x")  # fmt: skip
    assert "type" in caught.value.message_dict
    with pytest.raises(ValidationError) as caught:
        services.business_event_record(type="account.withdrawal", customer=dave_customer,
                                       occurred_at=minutes_ago(1), payload={"amount": "lots"},
                                       source=source, idempotency_key="y")  # fmt: skip
    assert set(caught.value.message_dict) == {"payload.account_number", "payload.amount"}


def test_an_interaction_is_unique_per_source_and_external_id(dave_customer, ivr):
    first, created = services.interaction_record(
        customer_id=dave_customer.pk, channel="ivr", direction="inbound", occurred_at=minutes_ago(3),
        source=ivr, external_id="call-77",
    )  # fmt: skip
    again, created_again = services.interaction_record(
        customer_id=dave_customer.pk, channel="ivr", direction="inbound", occurred_at=minutes_ago(2),
        source=ivr, external_id="call-77",
    )  # fmt: skip
    assert created and not created_again and first.pk == again.pk
    assert Interaction.objects.filter(customer=dave_customer).count() == 1


def test_households_group_customers(dave_customer, erin_customer):
    home = services.household_create(name="Miller household", line1="1 Elm St", city="Austin", country="us")
    services.household_add_member(household_id=home.pk, customer_id=dave_customer.pk, role="head")
    services.household_add_member(household_id=home.pk, customer_id=erin_customer.pk, role="partner")
    assert set(home.members.values_list("pk", flat=True)) == {dave_customer.pk, erin_customer.pk}
    assert home.country == "US"
    moved = services.household_remove_member(customer_id=erin_customer.pk)
    assert moved.household_id is None and moved.household_role == ""


def test_accounts_open_and_close(dave_customer, checking):
    account = services.account_open(customer_id=dave_customer.pk, product_code=checking.code,
                                    account_number="chk-000123")  # fmt: skip
    assert account.account_number == "CHK-000123"
    closed = services.account_close(account_id=account.pk)
    assert closed.status == "closed" and closed.closed_on is not None
    types = set(BusinessEvent.objects.filter(customer=dave_customer).values_list("type", flat=True))
    assert {"account.opened", "account.closed"} <= types


def test_an_inactive_product_cannot_be_opened(dave_customer, checking):
    checking.active = False
    checking.save()
    with pytest.raises(ValidationError) as caught:
        services.account_open(customer_id=dave_customer.pk, product_code=checking.code,
                              account_number="CHK-9")  # fmt: skip
    assert "product" in caught.value.message_dict


def test_account_events_are_dated_by_the_account_not_by_the_load(dave_customer, checking):
    opened = dt.date(2019, 4, 2)
    account = services.account_open(customer_id=dave_customer.pk, product_code=checking.code,
                                    account_number="CHK-2019", opened_on=opened)  # fmt: skip
    services.account_close(account_id=account.pk, closed_on=dt.date(2021, 6, 30))
    dates = dict(BusinessEvent.objects.filter(customer=dave_customer, type__startswith="account.")
                 .values_list("type", "occurred_at__date"))  # fmt: skip
    assert dates == {"account.opened": opened, "account.closed": dt.date(2021, 6, 30)}


def test_a_self_service_login_shows_times_in_the_customers_zone(dave):
    assert dave.time_zone == "America/New_York"


def test_only_an_administrator_can_be_made_a_superuser(db):
    admin = services.staff_user_create(username="root", password="x-long-pass-123", role="administrator",
                                       superuser=True)  # fmt: skip
    agent = services.staff_user_create(
        username="ag", password="x-long-pass-123", role="agent", superuser=True
    )
    assert admin.is_superuser and not agent.is_superuser


def test_a_source_key_names_one_customer_and_is_never_silently_rekeyed(dave_customer, erin_customer, ivr):
    record, created = services.source_record_link(
        source=ivr, external_key="48213", customer_id=dave_customer.pk
    )
    again, created_again = services.source_record_link(source=ivr, external_key="48213",
                                                       customer_id=dave_customer.pk)  # fmt: skip
    assert created and not created_again and record.pk == again.pk
    with pytest.raises(ValidationError) as caught:
        services.source_record_link(source=ivr, external_key="48213", customer_id=erin_customer.pk)
    assert "merge" in caught.value.message_dict["external_key"][0]


def test_an_update_made_only_of_an_unreadable_phone_is_refused(dave_customer):
    with pytest.raises(ValidationError) as caught:
        services.customer_update(customer_id=dave_customer.pk, expected_version=1,
                                 changes={"phones": [{"number": "12"}]})  # fmt: skip
    assert set(caught.value.message_dict) == {"phones"}
    assert Customer.objects.get(pk=dave_customer.pk).phones[0]["number"] == "+12025550143"
