"""Households and their members."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from crm import events
from crm.models import Customer, Household, SourceSystem, User
from crm.search_keys import fold
from crm.services.customers import customer_version_save
from crm.services.events import business_event_record
from crm.services.sources import crm_source

# --- Households ------------------------------------------------------------------


def household_create(*, name: str, actor: User | None = None, **address: str) -> Household:
    unknown = set(address) - {"line1", "line2", "city", "region", "postal_code", "country"}
    if unknown:
        raise ValidationError({n: "Not a household field." for n in sorted(unknown)})
    household = Household(name=name.strip(), **{k: v.strip() for k, v in address.items()})
    if household.country:
        household.country = household.country.upper()
    household.address_key = fold(" ".join([household.line1, household.postal_code, household.country]))
    household.full_clean()
    household.save()
    return household


def household_add_member(
    *,
    household_id: int,
    customer_id: int,
    role: str = "member",
    actor: User | None = None,
    source: SourceSystem | None = None,
) -> Customer:
    """Move a customer into a household (leaving any other), with a role; the
    customer's history and the household.joined event name the actor."""
    source = source or crm_source()
    with transaction.atomic():
        household = Household.objects.get(pk=household_id)
        customer = Customer.objects.select_for_update().get(pk=customer_id)
        if customer.household_id == household.pk and customer.household_role == role:
            return customer
        before = {"household": customer.household_id, "household_role": customer.household_role}
        customer.household = household
        customer.household_role = role
        customer.full_clean(
            exclude=["search_vector", "display_name", "sort_name"], validate_constraints=False
        )
        customer_version_save(
            customer, changed=["household"], before=before, now=timezone.now(), actor=actor, source=source,
            update_fields=["household", "household_role"],
        )  # fmt: skip
        business_event_record(
            type=events.HOUSEHOLD_JOINED.name, customer=customer, occurred_at=customer.updated_at,
            payload={"household_id": household.pk}, source=source, actor=actor,
            idempotency_key=f"household.joined:{customer.pk}:v{customer.version}",
        )  # fmt: skip
    return customer


def household_remove_member(
    *, customer_id: int, actor: User | None = None, source: SourceSystem | None = None
) -> Customer:
    """Take a customer out of their household; the customer's history names the actor."""
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=customer_id)
        if customer.household_id is None:
            return customer
        before = {"household": customer.household_id, "household_role": customer.household_role}
        customer.household = None
        customer.household_role = ""
        customer_version_save(
            customer, changed=["household"], before=before, now=timezone.now(), actor=actor,
            source=source or crm_source(), update_fields=["household", "household_role"],
        )  # fmt: skip
    return customer
