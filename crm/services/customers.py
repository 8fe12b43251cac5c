"""Customers: create, change (with the version check), reindex."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.contrib.postgres.search import SearchVector
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Value
from django.utils import timezone

from crm import events, realtime
from crm.exceptions import StaleVersion
from crm.field_access import CONSENT_FIELDS, CUSTOMER_FIELDS, customer_fields_check
from crm.models import Customer, CustomerChange, Household, SourceSystem, User
from crm.models.customers import ADDRESS_FIELDS
from crm.search_keys import display_name, name_tokens, phonetic_keys, sort_name
from crm.services.events import business_event_record
from crm.services.sources import crm_source
from crm.validation import normalize_email, normalize_phone


def customer_version_save(
    customer: Customer,
    *,
    changed: list[str],
    before: Mapping[str, Any],
    now: dt.datetime,
    actor: User | None,
    source: SourceSystem,
    update_fields: list[str] | None = None,
) -> None:
    """The last step of every change to a customer row, in the caller's transaction
    (which holds the row lock): 1. bump the version, stamp the time, save;
    2. append one history row per field whose value differs from ``before`` (its
    value before the change), naming ``actor`` and ``source``; 3. tell every open
    screen of this customer once the transaction commits."""
    customer.version += 1
    customer.updated_at = now
    customer.save(update_fields=[*update_fields, "version", "updated_at"] if update_fields else None)
    CustomerChange.objects.bulk_create(
        CustomerChange(
            customer_id=customer.pk,
            version=customer.version,
            field=name,
            old_value=old,
            new_value=_history_value(customer, name),
            actor=actor,
            source_system=source,
            at=now,
        )
        for name, old in before.items()
        if _history_value(customer, name) != old
    )
    realtime.send_on_commit(
        realtime.customer_group(customer.pk),
        realtime.customer_updated(customer.pk, customer.version, changed),
    )


def _history_value(customer: Customer, name: str) -> Any:
    # The household is named by its id: the history must not follow a renamed household.
    return customer.household_id if name == "household" else getattr(customer, name)


# field -> (the key holding the value, how to normalise it, the kind when none is given)
_CONTACT_POINTS: dict[str, tuple[str, Callable[[str], str], str]] = {
    "phones": ("number", normalize_phone, "mobile"),
    "emails": ("address", normalize_email, "personal"),
}


def _normalize_contact_points(values: dict[str, Any]) -> None:
    """Normalise phones to E.164 and e-mails in place; collect errors by field."""
    errors: dict[str, list[str]] = {}
    for field, (key, normalize, default_kind) in _CONTACT_POINTS.items():
        if field not in values:
            continue
        items = []
        for index, item in enumerate(values[field] or []):
            if not isinstance(item, Mapping) or not item.get(key):
                article = "an" if key[0] in "aeiou" else "a"
                errors.setdefault(field, []).append(f"Entry {index + 1} needs {article} {key}.")
                continue
            try:
                value = normalize(str(item[key]))
            except ValidationError as exc:
                errors.setdefault(field, []).append(f"Entry {index + 1}: {exc.messages[0]}")
                continue
            items.append(
                {key: value, "kind": item.get("kind", default_kind), "primary": bool(item.get("primary"))}
            )
        values[field] = items
    if "addresses" in values:
        values["addresses"] = [
            {k: (str(v).strip().upper() if k == "country" else str(v).strip()) for k, v in a.items()}
            if isinstance(a, Mapping) and not set(a) - set(ADDRESS_FIELDS)
            else a
            for a in values["addresses"] or []
        ]
    if errors:
        raise ValidationError(errors)


def _normalize_collecting(values: dict[str, Any]) -> dict[str, list[str]]:
    """Normalise contact points, returning their errors instead of raising, so
    that one response names every bad field at once."""
    try:
        _normalize_contact_points(values)
    except ValidationError as exc:
        for field in exc.message_dict:
            values.pop(field, None)
        return exc.message_dict
    return {}


def _full_clean(customer: Customer, errors: dict[str, list[str]], *, exclude: list[str]) -> None:
    try:
        customer.full_clean(exclude=[*exclude, *errors])
    except ValidationError as exc:
        errors = {**exc.message_dict, **errors}
    if errors:
        raise ValidationError(errors)


def customer_search_fields(customer: Customer) -> None:
    """Derive the stored search keys from the customer's own fields."""
    tokens = name_tokens(customer.given_name, customer.family_name, customer.organization_name)
    customer.display_name = display_name(
        customer.given_name, customer.family_name, customer.organization_name
    )
    customer.sort_name = sort_name(customer.family_name, customer.given_name, customer.organization_name)
    customer.name_phonetic = phonetic_keys(tokens)
    customer.phone_keys = sorted({p["number"] for p in customer.phones})
    customer.email_keys = sorted({e["address"].lower() for e in customer.emails})
    customer.search_vector = SearchVector(Value(" ".join(tokens)), config="simple")


def customer_create(
    *,
    actor: User | None = None,
    source: SourceSystem | None = None,
    household: Household | None = None,
    household_role: str = "",
    **fields: Any,
) -> Customer:
    """1. refuse fields ``actor`` may not set (crm.field_access; None is the system);
    2. normalise contact points; 3. validate the whole row (with the household and
    role, if given); 4. insert; 5. record customer.created, naming the actor."""
    unknown = set(fields) - set(CUSTOMER_FIELDS)
    if unknown:
        raise ValidationError({name: "Not a customer field." for name in sorted(unknown)})
    customer_fields_check(actor, fields, creating=True)
    contact_errors = _normalize_collecting(fields)
    now = timezone.now()
    customer = Customer(**fields, household=household, household_role=household_role)
    if any(fields.get(c) for c in CONSENT_FIELDS):
        customer.consents_updated_at = now
    customer_search_fields(customer)
    _full_clean(customer, contact_errors, exclude=["search_vector", "display_name", "sort_name"])
    with transaction.atomic():
        customer.save()
        business_event_record(
            type=events.CUSTOMER_CREATED.name,
            customer=customer,
            occurred_at=now,
            payload={},
            source=source or crm_source(),
            idempotency_key=f"customer.created:{customer.pk}",
            actor=actor,
        )
    return customer


def customer_update(
    *,
    customer_id: int,
    expected_version: int,
    changes: dict[str, Any],
    actor: User | None = None,
    source: SourceSystem | None = None,
) -> Customer:
    """1. refuse fields ``actor`` may not change (crm.field_access; None is the system);
    2. lock the row and check the version the caller edited (else StaleVersion);
    3. normalise, apply and validate the changes; 4. save with version + 1 and a
    history row per changed field; 5. raise the business events the change means,
    naming the actor; 6. tell open screens on commit."""
    unknown = set(changes) - set(CUSTOMER_FIELDS)
    if unknown:
        raise ValidationError({name: "Not a field that can be changed." for name in sorted(unknown)})
    customer_fields_check(actor, changes)
    source = source or crm_source()
    changes = dict(changes)
    contact_errors = _normalize_collecting(changes)
    with transaction.atomic():
        # The row lock serialises two agents saving the same customer at once:
        # exactly one of them sees its expected version.
        customer = Customer.objects.select_for_update().get(pk=customer_id)
        if customer.version != expected_version:
            raise StaleVersion(current_version=customer.version, expected_version=expected_version)
        changed = [name for name, value in changes.items() if getattr(customer, name) != value]
        if not changed:
            if contact_errors:  # the only changes asked for were unreadable
                raise ValidationError(contact_errors)
            return customer
        before = {name: getattr(customer, name) for name in changed}
        for name in changed:
            setattr(customer, name, changes[name])
        now = timezone.now()
        if set(changed) & set(CONSENT_FIELDS):
            customer.consents_updated_at = now
        customer_search_fields(customer)
        _full_clean(
            customer, contact_errors, exclude=["search_vector", "display_name", "sort_name", "household"]
        )
        customer_version_save(customer, changed=changed, before=before, now=now, actor=actor, source=source)
        _record_profile_events(customer, changed, now, source, actor)
    return customer


def profile_events(customer: Customer, changed: list[str]) -> list[tuple[str, dict[str, Any], str]]:
    """The business events a change of ``changed`` fields means, as (type, payload,
    idempotency key), for the customer as saved (its new version): one place for
    the single and the set-based (touchpoint) paths."""
    key = f"{customer.pk}:v{customer.version}"
    found = [
        (events.CUSTOMER_PROFILE_CHANGED.name, {"fields": ",".join(sorted(changed))},
         f"customer.profile_changed:{key}"),
    ]  # fmt: skip
    if "addresses" in changed:
        address = customer.primary_address or {}
        found.append((events.CUSTOMER_ADDRESS_CHANGED.name,
                      {k: address.get(k, "") for k in ("city", "region", "country")},
                      f"customer.address_changed:{key}"))  # fmt: skip
    if "phones" in changed:
        found.append((events.CUSTOMER_PHONE_CHANGED.name, {"phone": customer.primary_phone},
                      f"customer.phone_changed:{key}"))  # fmt: skip
    if "emails" in changed:
        found.append((events.CUSTOMER_EMAIL_CHANGED.name, {"email": customer.primary_email},
                      f"customer.email_changed:{key}"))  # fmt: skip
    for consent in CONSENT_FIELDS:
        if consent in changed:
            found.append((events.CUSTOMER_CONSENT_CHANGED.name,
                          {"consent": consent, "value": getattr(customer, consent)},
                          f"customer.consent_changed:{key}:{consent}"))  # fmt: skip
    return found


def _record_profile_events(
    customer: Customer, changed: list[str], now: dt.datetime, source: SourceSystem, actor: User | None
) -> None:
    for event_type, payload, idempotency_key in profile_events(customer, changed):
        business_event_record(
            type=event_type, customer=customer, occurred_at=now, payload=payload, source=source,
            idempotency_key=idempotency_key, actor=actor,
        )  # fmt: skip


def customers_reindex_search(*, customer_ids: Iterable[int]) -> int:
    """Recompute stored search keys, e.g. after the folding or phonetic rules change."""
    count = 0
    with transaction.atomic():
        # Locked in id order: an agent's concurrent customer_update either waits for
        # this chunk or is waited for, and two reindex chunks cannot deadlock.
        customers = Customer.objects.select_for_update().filter(pk__in=list(customer_ids)).order_by("pk")
        for customer in customers:
            customer_search_fields(customer)
            customer.save(update_fields=["display_name", "sort_name", "name_phonetic", "search_vector",
                                         "phone_keys", "email_keys"])  # fmt: skip
            count += 1
    return count
