"""Every write to the customer record.

Plain functions with keyword-only arguments, each in one transaction; views,
the API, tasks, consumers and management commands all call these. A function
that a person's input reaches raises ``ValidationError`` naming the field and
the fix, and writes nothing when it does.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.postgres.search import SearchVector
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import Value
from django.utils import timezone
from psycopg.types.json import Jsonb

from crm import events, realtime
from crm.authentication import TOKEN_PREFIX, token_digest
from crm.exceptions import StaleVersion
from crm.models import (
    Account,
    ApiToken,
    BusinessEvent,
    Customer,
    Household,
    Interaction,
    Product,
    SourceRecord,
    SourceSystem,
    Task,
    User,
)
from crm.models.choices import AccessChannel, AccountStatus, TaskStatus
from crm.models.customers import ADDRESS_FIELDS
from crm.search_keys import display_name, fold, name_tokens, phonetic_keys, sort_name
from crm.validation import normalize_email, normalize_phone

CRM_SOURCE_CODE = "crm"

# Fields a caller may set on a customer; the rest (keys, version, timestamps) are derived.
CUSTOMER_FIELDS = (
    "kind", "given_name", "family_name", "organization_name", "date_of_birth",
    "phones", "emails", "addresses", "tier", "lifetime_value", "language", "time_zone",
    "preferred_channel", "do_not_call", "do_not_email", "marketing_opt_in", "status",
)  # fmt: skip
CONSENT_FIELDS = ("do_not_call", "do_not_email", "marketing_opt_in")


def crm_source() -> SourceSystem:
    """The source system that stands for this CRM's own screens and API."""
    return SourceSystem.objects.get(code=CRM_SOURCE_CODE)


# --- Customers ----------------------------------------------------------------


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
    """1. normalise contact points; 2. validate the whole row (with the household
    and role, if given); 3. insert; 4. record customer.created."""
    unknown = set(fields) - set(CUSTOMER_FIELDS)
    if unknown:
        raise ValidationError({name: "Not a customer field." for name in sorted(unknown)})
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
    """1. lock the row and check the version the caller edited (else StaleVersion);
    2. normalise, apply and validate the changes; 3. save with version + 1;
    4. raise the business events the change means; 5. tell open screens on commit."""
    unknown = set(changes) - set(CUSTOMER_FIELDS)
    if unknown:
        raise ValidationError({name: "Not a field that can be changed." for name in sorted(unknown)})
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
        for name in changed:
            setattr(customer, name, changes[name])
        now = timezone.now()
        if set(changed) & set(CONSENT_FIELDS):
            customer.consents_updated_at = now
        customer_search_fields(customer)
        _full_clean(
            customer, contact_errors, exclude=["search_vector", "display_name", "sort_name", "household"]
        )
        customer.version += 1
        customer.updated_at = now
        customer.save()
        _record_profile_events(customer, changed, now, source or crm_source())
        realtime.send_on_commit(
            realtime.customer_group(customer.pk),
            realtime.customer_updated(customer.pk, customer.version, changed),
        )
    return customer


def _record_profile_events(
    customer: Customer, changed: list[str], now: dt.datetime, source: SourceSystem
) -> None:
    key = f"{customer.pk}:v{customer.version}"
    business_event_record(
        type=events.CUSTOMER_PROFILE_CHANGED.name, customer=customer, occurred_at=now,
        payload={"fields": ",".join(sorted(changed))}, source=source,
        idempotency_key=f"customer.profile_changed:{key}",
    )  # fmt: skip
    if "addresses" in changed:
        address = customer.primary_address or {}
        business_event_record(
            type=events.CUSTOMER_ADDRESS_CHANGED.name, customer=customer, occurred_at=now,
            payload={k: address.get(k, "") for k in ("city", "region", "country")}, source=source,
            idempotency_key=f"customer.address_changed:{key}",
        )  # fmt: skip
    for consent in CONSENT_FIELDS:
        if consent in changed:
            business_event_record(
                type=events.CUSTOMER_CONSENT_CHANGED.name, customer=customer, occurred_at=now,
                payload={"consent": consent, "value": getattr(customer, consent)}, source=source,
                idempotency_key=f"customer.consent_changed:{key}:{consent}",
            )  # fmt: skip


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
    *, household_id: int, customer_id: int, role: str = "member", actor: User | None = None
) -> Customer:
    """Move a customer into a household (leaving any other), with a role."""
    with transaction.atomic():
        household = Household.objects.get(pk=household_id)
        customer = Customer.objects.select_for_update().get(pk=customer_id)
        if customer.household_id == household.pk and customer.household_role == role:
            return customer
        customer.household = household
        customer.household_role = role
        customer.full_clean(
            exclude=["search_vector", "display_name", "sort_name"], validate_constraints=False
        )
        customer.version += 1
        customer.updated_at = timezone.now()
        customer.save(update_fields=["household", "household_role", "version", "updated_at"])
        business_event_record(
            type=events.HOUSEHOLD_JOINED.name, customer=customer, occurred_at=customer.updated_at,
            payload={"household_id": household.pk}, source=crm_source(),
            idempotency_key=f"household.joined:{customer.pk}:v{customer.version}",
        )  # fmt: skip
        realtime.send_on_commit(
            realtime.customer_group(customer.pk),
            realtime.customer_updated(customer.pk, customer.version, ["household"]),
        )
    return customer


def household_remove_member(*, customer_id: int, actor: User | None = None) -> Customer:
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=customer_id)
        if customer.household_id is None:
            return customer
        customer.household = None
        customer.household_role = ""
        customer.version += 1
        customer.updated_at = timezone.now()
        customer.save(update_fields=["household", "household_role", "version", "updated_at"])
        realtime.send_on_commit(
            realtime.customer_group(customer.pk),
            realtime.customer_updated(customer.pk, customer.version, ["household"]),
        )
    return customer


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
    account = Account(
        customer_id=customer_id, product=product, account_number=account_number.strip().upper(),
        opened_on=opened_on or timezone.localdate(), balance=balance, currency=currency.upper(),
    )  # fmt: skip
    account.full_clean()
    with transaction.atomic():
        account.save()
        business_event_record(
            type=events.ACCOUNT_OPENED.name, customer_id=customer_id,
            occurred_at=_moment_of(account.opened_on), payload={"account_number": account.account_number,
                                                 "product": product.code},
            source=source or crm_source(), idempotency_key=f"account.opened:{account.pk}",
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


def account_close(*, account_id: int, closed_on: dt.date | None = None, actor: User | None = None) -> Account:
    with transaction.atomic():
        account = Account.objects.select_for_update().select_related("product").get(pk=account_id)
        if account.status == AccountStatus.CLOSED:
            return account
        account.status = AccountStatus.CLOSED
        account.closed_on = closed_on or timezone.localdate()
        account.updated_at = timezone.now()
        account.full_clean()
        account.save()
        business_event_record(
            type=events.ACCOUNT_CLOSED.name, customer_id=account.customer_id,
            occurred_at=_moment_of(account.closed_on),
            payload={"account_number": account.account_number, "product": account.product.code},
            source=crm_source(), idempotency_key=f"account.closed:{account.pk}",
        )  # fmt: skip
    return account


# --- Contact history ---------------------------------------------------------------


def interaction_record(
    *,
    customer_id: int,
    channel: str,
    direction: str,
    occurred_at: dt.datetime,
    source: SourceSystem | None = None,
    external_id: str = "",
    agent: User | None = None,
    campaign_code: str = "",
    disposition: str = "",
    subject: str = "",
    notes: str = "",
    duration_seconds: int | None = None,
    script_run_id: int | None = None,
) -> tuple[Interaction, bool]:
    """Record one contact; a repeat of (source, external_id) returns the first, unchanged."""
    source = source or crm_source()
    if external_id:
        existing = Interaction.objects.filter(source_system=source, external_id=external_id).first()
        if existing is not None:
            return existing, False
    if occurred_at.tzinfo is None:
        raise ValidationError({"occurred_at": "Give the time with a time zone (e.g. …Z or +02:00)."})
    if occurred_at > timezone.now() + dt.timedelta(minutes=5):
        raise ValidationError({"occurred_at": "The contact is dated in the future: check the time."})
    interaction = Interaction(
        customer_id=customer_id, channel=channel, direction=direction, occurred_at=occurred_at,
        source_system=source, external_id=external_id, agent=agent, campaign_code=campaign_code,
        disposition=disposition, subject=subject, notes=notes, duration_seconds=duration_seconds,
        script_run_id=script_run_id,
    )  # fmt: skip
    interaction.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            interaction.save()
            business_event_record(
                type=events.INTERACTION_RECORDED.name, customer_id=customer_id, occurred_at=occurred_at,
                payload={"channel": channel, "direction": direction, "disposition": disposition},
                source=source, idempotency_key=f"interaction.recorded:{interaction.pk}",
            )  # fmt: skip
    except IntegrityError:
        # Another worker recorded the same (source, external_id) between our check and insert.
        if not external_id:
            raise
        return Interaction.objects.get(source_system=source, external_id=external_id), False
    realtime.send_on_commit(
        realtime.customer_group(customer_id), realtime.interaction_recorded(customer_id, interaction.pk)
    )
    return interaction, True


def business_event_record(
    *,
    type: str,  # noqa: A002  (the vocabulary's own word)
    occurred_at: dt.datetime,
    payload: dict[str, Any],
    source: SourceSystem,
    idempotency_key: str,
    customer: Customer | None = None,
    customer_id: int | None = None,
) -> tuple[BusinessEvent, bool]:
    """Record a business event once per idempotency key; a repeat returns the first."""
    event_type = events.get(type)
    event_type.validate(payload)
    if not idempotency_key or len(idempotency_key) > 200:
        raise ValidationError({"idempotency_key": "Give a key of 1-200 characters that is unique per fact."})
    subject_id = customer.pk if customer else customer_id
    recorded_at = timezone.now()
    # One round trip whether the key is new or a repeat; no savepoint needed.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO crm_businessevent (type, customer_id, occurred_at, payload, source_system_id,"
            " idempotency_key, recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            [type, subject_id, occurred_at, _jsonb(payload), source.pk, idempotency_key, recorded_at],
        )
        row = cursor.fetchone()
    if row is None:
        return BusinessEvent.objects.get(idempotency_key=idempotency_key), False
    event = BusinessEvent(
        id=row[0], type=type, customer_id=subject_id, occurred_at=occurred_at, payload=payload,
        source_system=source, idempotency_key=idempotency_key, recorded_at=recorded_at,
    )  # fmt: skip
    return event, True


def _jsonb(value: Any) -> Any:
    return Jsonb(value, dumps=partial(json.dumps, cls=DjangoJSONEncoder))


# --- Source records ------------------------------------------------------------------


def source_record_link(
    *, source: SourceSystem, external_key: str, customer_id: int, seen_at: dt.datetime | None = None
) -> tuple[SourceRecord, bool]:
    """Say that ``external_key`` in ``source`` is this customer.

    Repeating a link refreshes ``last_seen_at``; pointing a key that already
    names another customer at this one is refused: re-keying is a merge, which
    must be decided, not slipped in by a feed."""
    key = (external_key or "").strip()
    if not key or len(key) > 120:
        raise ValidationError({"external_key": "Give the source's key for the customer (1-120 characters)."})
    moment = seen_at or timezone.now()
    with transaction.atomic():
        # Locks the key's row if it exists, so two feeds linking one key agree.
        record = (
            SourceRecord.objects.select_for_update().filter(source_system=source, external_key=key).first()
        )
        if record is None:
            try:
                with transaction.atomic():
                    record = SourceRecord.objects.create(
                        source_system=source, external_key=key, customer_id=customer_id, last_seen_at=moment
                    )
                return record, True
            except IntegrityError:
                record = SourceRecord.objects.select_for_update().get(source_system=source, external_key=key)
        if record.customer_id != customer_id:
            raise ValidationError(
                {"external_key": f"{source.code}:{key} already names customer C-{record.customer_id:07d}; "
                                 "merge the two records instead of re-keying."}
            )  # fmt: skip
        if moment > record.last_seen_at:
            record.last_seen_at = moment
            record.save(update_fields=["last_seen_at"])
    return record, False


# --- Tasks --------------------------------------------------------------------------------


def task_create(
    *,
    customer_id: int,
    kind: str,
    title: str,
    description: str = "",
    priority: int = 3,
    due_at: dt.datetime | None = None,
    assigned_to: User | None = None,
    created_by: User | None = None,
    origin: str = "",
) -> Task:
    task = Task(
        customer_id=customer_id, kind=kind, title=title.strip(), description=description,
        priority=priority, due_at=due_at, assigned_to=assigned_to, created_by=created_by, origin=origin,
    )  # fmt: skip
    task.full_clean()
    task.save()
    if assigned_to is not None:
        realtime.send_on_commit(
            realtime.agent_group(assigned_to.pk),
            {"type": "crm.event", "event": "task.assigned", "task_id": task.pk, "customer_id": customer_id},
        )
    return task


def task_set_status(*, task_id: int, status: str, actor: User | None = None) -> Task:
    if status not in TaskStatus.values:
        raise ValidationError({"status": f"Use one of: {', '.join(TaskStatus.values)}."})
    with transaction.atomic():
        task = Task.objects.select_for_update().get(pk=task_id)
        task.status = status
        task.completed_at = timezone.now() if status in (TaskStatus.DONE, TaskStatus.CANCELLED) else None
        task.save(update_fields=["status", "completed_at"])
    return task


# --- Users, roles and tokens -------------------------------------------------------------


def staff_user_create(
    *, username: str, password: str, role: str, first_name: str = "", last_name: str = "",
    email: str = "", time_zone: str = "UTC", superuser: bool = False,
) -> User:  # fmt: skip
    group = Group.objects.filter(name=role).first()
    if group is None:
        raise ValidationError({"role": "Use one of: agent, supervisor, administrator."})
    user = User(
        username=username, first_name=first_name, last_name=last_name, email=email,
        time_zone=time_zone, is_staff=role == "administrator",
        is_superuser=superuser and role == "administrator",
    )  # fmt: skip
    user.set_password(password)
    user.full_clean()
    with transaction.atomic():
        user.save()
        user.groups.add(group)
    return user


def customer_login_create(*, customer: Customer, username: str, password: str) -> User:
    """A self-service log-in that sees only ``customer``."""
    user = User(username=username, customer=customer, email=customer.primary_email,
                first_name=customer.given_name, last_name=customer.family_name,
                time_zone=customer.time_zone)  # fmt: skip
    user.set_password(password)
    user.full_clean()
    user.save()
    return user


def source_system_create(*, code: str, name: str, kind: str) -> SourceSystem:
    """A source system and the integration user its tokens belong to."""
    source = SourceSystem(code=code, name=name, kind=kind)
    source.full_clean()
    with transaction.atomic():
        source.save()
        user = User(username=f"integration-{code}", source_system=source)
        user.set_unusable_password()
        user.save()
    return source


def api_token_create(*, user: User, name: str, ttl: dt.timedelta | None = None) -> tuple[ApiToken, str]:
    """Issue a token; the secret is returned once and only its digest is stored.

    Customer tokens always expire (settings.CRM_CUSTOMER_TOKEN_TTL_HOURS)."""
    if user.is_customer and ttl is None:
        ttl = dt.timedelta(hours=settings.CRM_CUSTOMER_TOKEN_TTL_HOURS)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name[:100], prefix=secret[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + 8],
        digest=token_digest(secret), expires_at=timezone.now() + ttl if ttl else None,
    )  # fmt: skip
    return token, secret


def api_token_revoke(*, token_id: int, actor: User) -> None:
    ApiToken.objects.filter(pk=token_id, revoked_at__isnull=True).update(revoked_at=timezone.now())


def api_tokens_purge_expired(*, older_than: dt.timedelta = dt.timedelta(days=30)) -> int:
    """Delete tokens that expired or were revoked more than ``older_than`` ago."""
    cutoff = timezone.now() - older_than
    expired = ApiToken.objects.filter(expires_at__lt=cutoff)
    revoked = ApiToken.objects.filter(revoked_at__lt=cutoff)
    deleted = expired.delete()[0] + revoked.delete()[0]
    return deleted


# --- Access log ---------------------------------------------------------------------------


def access_log_record(
    *, user: User, customer_ids: Iterable[int], channel: str = AccessChannel.API, path: str = ""
) -> int:
    """Append one row per customer read by a staff member or an integration.

    A customer reading their own record is not logged: the log is about who
    else looked."""
    if user.is_customer:
        return 0
    ids = list(dict.fromkeys(customer_ids))
    if not ids:
        return 0
    if channel not in AccessChannel.values:
        raise ValueError(f"unknown access channel {channel!r}")
    # One statement for any number of rows and no transaction of its own: this
    # runs on every screen pop and every API read.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO crm_accesslogentry (user_id, customer_id, channel, path, at)"
            " SELECT %s, unnest(%s::bigint[]), %s, %s, %s",
            [user.pk, ids, channel, path[:300], timezone.now()],
        )
    return len(ids)


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
