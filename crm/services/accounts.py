"""Accounts: a customer's holding of a product."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from crm import clock, events
from crm.models import Account, Customer, Product, SourceSystem, User
from crm.models.choices import AccountStatus
from crm.services.events import business_event_record
from crm.services.sources import crm_source

# --- Accounts ------------------------------------------------------------------------


def account_open(
    *,
    customer_id: int,
    product_code: str,
    account_number: str,
    opened_on: dt.date | None = None,
    balance: Decimal = Decimal("0.00"),
    currency: str = "USD",
    actor: User | None = None,
    source: SourceSystem | None = None,
) -> Account:
    product = Product.objects.filter(code=product_code).first()
    if product is None:
        raise ValidationError({"product": f"No product with code “{product_code}”."})
    if not product.active:
        raise ValidationError({"product": f"{product.name} is no longer offered: pick an active product."})
    if opened_on is None:
        # The day it opened on the customer's own calendar, not the caller's.
        opened_on = clock.today_in(Customer.objects.values_list("time_zone", flat=True).get(pk=customer_id))
    account = Account(
        customer_id=customer_id, product=product, account_number=account_number.strip().upper(),
        opened_on=opened_on, balance=balance, currency=currency.upper(),
    )  # fmt: skip
    account.full_clean()
    with transaction.atomic():
        account.save()
        business_event_record(
            type=events.ACCOUNT_OPENED.name, customer_id=customer_id,
            occurred_at=_moment_of(account.opened_on), payload={"account_number": account.account_number,
                                                 "product": product.code},
            source=source or crm_source(), idempotency_key=f"account.opened:{account.pk}", actor=actor,
        )  # fmt: skip
    return account


def _moment_of(day: dt.date | None) -> dt.datetime:
    """When a dated fact happened: now if it is today's, else noon UTC that day
    (a back-office date carries no time, and noon stays on the same date
    in every zone from UTC-11 to UTC+11)."""
    now = timezone.now()
    if day is None or day >= now.date():
        return now
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)


def account_close(
    *,
    account_id: int,
    closed_on: dt.date | None = None,
    actor: User | None = None,
    source: SourceSystem | None = None,
) -> Account:
    with transaction.atomic():
        account = Account.objects.select_for_update().select_related("product").get(pk=account_id)
        if account.status == AccountStatus.CLOSED:
            return account
        account.status = AccountStatus.CLOSED
        account.closed_on = closed_on or clock.today_in(
            Customer.objects.values_list("time_zone", flat=True).get(pk=account.customer_id)
        )
        account.updated_at = timezone.now()
        account.full_clean()
        account.save()
        business_event_record(
            type=events.ACCOUNT_CLOSED.name, customer_id=account.customer_id,
            occurred_at=_moment_of(account.closed_on),
            payload={"account_number": account.account_number, "product": account.product.code},
            source=source or crm_source(), idempotency_key=f"account.closed:{account.pk}", actor=actor,
        )  # fmt: skip
    return account
