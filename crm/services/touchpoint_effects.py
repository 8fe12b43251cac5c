"""What one touchpoint result does to the customer record, by record kind.

Every effect goes through the services the rest of the product uses
(``customer_update``, ``interaction_record``, ``business_event_record``,
``account_open``), so the same business events, history rows and real-time
messages follow whichever way a fact came in. Each effect is idempotent on its
own too (interactions unique per source and external id, events per source and
key), the second guard behind the claim.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from crm import events, json_codec
from crm.identity import customer_resolve, source_keys_resolve
from crm.models import Account, Customer, FieldMapping, SourceSystem, User
from crm.models.choices import AccountStatus, CustomerKind, RecordKind, ResultStatus
from crm.services.accounts import account_close, account_open
from crm.services.customers import customer_create, customer_update
from crm.services.events import business_event_record
from crm.services.history import interaction_record
from crm.services.sources import source_record_link
from crm.services.touchpoint_apply import Outcome
from crm.services.touchpoint_claims import result_order
from crm.services.touchpoints import _jsonb, result_map, source_mappings

if TYPE_CHECKING:
    from crm.services.touchpoint_claims import Claimed

# customer.<target> → the Customer field it sets directly.
_DIRECT_FIELDS = (
    "given_name", "family_name", "organization_name", "date_of_birth", "language", "tier",
    "lifetime_value", "status", "do_not_call", "do_not_email", "marketing_opt_in",
)  # fmt: skip
_ADDRESS_PARTS = ("line1", "city", "region", "postal_code", "country")


@dataclass
class ApplyContext:
    """What one worker run loads once: sources, their mappings and integration
    users, and the source keys already linked."""

    sources: dict[int, SourceSystem] = field(default_factory=dict)
    mappings: dict[int, dict[str, list[FieldMapping]]] = field(default_factory=dict)
    users: dict[int, User | None] = field(default_factory=dict)
    keys: dict[int, dict[str, int]] = field(default_factory=dict)

    def source(self, pk: int) -> SourceSystem:
        if pk not in self.sources:
            self.sources[pk] = SourceSystem.objects.get(pk=pk)
        return self.sources[pk]

    def mappings_of(self, source: SourceSystem) -> dict[str, list[FieldMapping]]:
        if source.pk not in self.mappings:
            self.mappings[source.pk] = source_mappings(source)
        return self.mappings[source.pk]

    def user_of(self, source: SourceSystem) -> User | None:
        if source.pk not in self.users:
            self.users[source.pk] = User.objects.filter(source_system=source).first()
        return self.users[source.pk]

    def prefetch_keys(self, source: SourceSystem, keys: list[str]) -> None:
        known = self.keys.setdefault(source.pk, {})
        missing = [k for k in keys if k and k not in known]
        if missing:
            known.update(source_keys_resolve(source=source, keys=missing))


def result_apply(result: Claimed, *, context: ApplyContext) -> Outcome:
    """Apply one claimed result (in the caller's savepoint); raise a data error
    (ValidationError, Conflict, FieldAccessDenied) to have it rejected.

    1. map its payload with the source's current mappings of its kind;
    2. find its customer (crm.identity): several candidates send it to review;
       nobody creates a customer from the mapped profile, linked to the source key;
    3. apply the effect of its kind."""
    source = context.source(result.source_system_id)
    actor = context.user_of(source)
    mapped = result_map(
        source=source, record_kind=result.record_kind, payload=result.payload,
        mappings=context.mappings_of(source),
    )  # fmt: skip
    customer_id, created, linked = result.customer_id, False, False
    if customer_id is None:
        if result.customer_key:
            context.prefetch_keys(source, [result.customer_key])
        found = customer_resolve(
            source=source, customer_key=result.customer_key, email=str(mapped.get("customer.email") or ""),
            phone=str(mapped.get("customer.phone") or ""), known_keys=context.keys.get(source.pk, {}),
        )  # fmt: skip
        if found.ambiguous:
            return Outcome(
                ResultStatus.REVIEW,
                error={"reason": "ambiguous", "candidates": found.candidates,
                       "message": f"{len(found.candidates)} customers match its e-mail or phone: attach it "
                                  "to one of them or create a new customer (admin, review queue)."},
            )  # fmt: skip
        if found.customer_id is None:
            customer_id = customer_from_mapped(mapped, source=source, actor=actor).pk
            created = True
        else:
            customer_id = found.customer_id
            linked = found.by == "source_key"
    if result.customer_key and not linked:
        source_record_link(source=source, external_key=result.customer_key, customer_id=customer_id)
        context.keys.setdefault(source.pk, {})[result.customer_key] = customer_id
    moment = result.occurred_at or timezone.now()
    kind = result.record_kind
    note: dict[str, Any] | None = None
    if kind == RecordKind.CUSTOMER:
        if result.customer_key:
            orders = profile_orders_load(source.pk, [result.customer_key]).get(result.customer_key)
            mapped, note = profile_newest_only(result, mapped, orders)
        if not created:
            _profile_apply(customer_id, mapped, source=source, actor=actor)
        if result.customer_key:
            profile_orders_record(source.pk, {result.customer_key: profile_stamps(result, mapped)})
    elif kind == RecordKind.INTERACTION:
        _interaction_apply(customer_id, mapped, result, source=source, actor=actor)
    elif kind == RecordKind.PURCHASE:
        _purchase_apply(customer_id, mapped, result, moment, source=source, actor=actor)
    elif kind == RecordKind.ACCOUNT:
        _account_apply(customer_id, mapped, source=source, actor=actor)
    elif kind == RecordKind.EVENT:
        _event_apply(customer_id, mapped, result, moment, source=source, actor=actor)
    else:  # refused at intake; a row written by other means
        raise ValidationError({"record_kind": f"“{kind}” is not a record kind."})
    return Outcome(ResultStatus.APPLIED, customer_id=customer_id, error=note)


# --- Results out of order ---------------------------------------------------------------------
# One key's results are claimed in the source's order, but a result can still arrive
# after a later one was applied (a source resending an old change, a slow feed). Its
# contacts, purchases and events are history and are recorded; a profile value it
# sets is written only if no later result of the key (``result_order``) set that
# target already. The key's source record remembers, per target, which result
# set it last. Results without a customer key have no order among themselves.

_PROFILE_PREFIXES = ("customer.", "address.")


def _profile_targets(mapped: dict[str, Any]) -> list[str]:
    return [t for t in mapped if t.startswith(_PROFILE_PREFIXES) and t != "customer.external_key"]


def _order_of(stamp: list[Any]) -> tuple[Any, ...]:
    sequence, occurred_at, pk = stamp
    return result_order(sequence, dt.datetime.fromisoformat(occurred_at) if occurred_at else None, pk)


def profile_stamps(result: Claimed, mapped: dict[str, Any]) -> dict[str, list[Any]]:
    """What a result applied records per profile target it set."""
    stamp = [result.sequence, result.occurred_at.isoformat() if result.occurred_at else None, result.id]
    return dict.fromkeys(_profile_targets(mapped), stamp)


def profile_newest_only(
    result: Claimed, mapped: dict[str, Any], orders: dict[str, list[Any]] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``mapped`` without the profile targets a later result of the key already
    set, and a note naming them (None when nothing was left out)."""
    if not orders:
        return mapped, None
    mine = result_order(result.sequence, result.occurred_at, result.id)
    newer = {t: orders[t] for t in _profile_targets(mapped) if t in orders and _order_of(orders[t]) > mine}
    if not newer:
        return mapped, None
    why = "Not written: a later result of this customer key ({}) set it already; the value sent stays in "
    fields = {t: why.format(_described(s, o)) + "this result's payload." for t, (s, o, _pk) in newer.items()}
    note = {"reason": "superseded", "fields": fields}
    return {k: v for k, v in mapped.items() if k not in newer}, note


def _described(sequence: int | None, occurred_at: str | None) -> str:
    if sequence is not None:
        return f"sequence {sequence}"
    return f"occurred at {occurred_at}" if occurred_at else "received after this one"


# As text, decoded here (the ORM's query of it cost a worker more to build than to run).
_LOAD_ORDERS = """
SELECT external_key, profile_orders::text FROM crm_sourcerecord
WHERE source_system_id = %(source)s AND profile_orders IS NOT NULL
  AND external_key = ANY(ARRAY(SELECT jsonb_array_elements_text(%(keys)s::jsonb)))
"""


def profile_orders_load(source_id: int, keys: list[str]) -> dict[str, dict[str, list[Any]]]:
    """The recorded stamps of these keys of a source (one query)."""
    if not keys:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_LOAD_ORDERS, {"source": source_id, "keys": json_codec.dumps(keys).decode()})
        return {key: json_codec.loads(orders) or {} for key, orders in cursor.fetchall()}


_RECORD_ORDERS = """
UPDATE crm_sourcerecord r SET profile_orders = COALESCE(r.profile_orders, '{}'::jsonb) || x.orders
FROM jsonb_to_recordset(%(rows)s) AS x(key text, orders jsonb)
WHERE r.source_system_id = %(source)s AND r.external_key = x.key
"""


def profile_orders_record(source_id: int, stamps: dict[str, dict[str, list[Any]]]) -> None:
    """Record the stamps of results just applied, per key (one statement)."""
    rows = [{"key": key, "orders": orders} for key, orders in stamps.items() if orders]
    if rows:
        with connection.cursor() as cursor:
            params: dict[str, Any] = {"rows": _jsonb(rows), "source": source_id}
            cursor.execute(_RECORD_ORDERS, params)


# --- Customers ------------------------------------------------------------------------------


def _profile_fields(mapped: dict[str, Any]) -> dict[str, Any]:
    return {name: mapped[f"customer.{name}"] for name in _DIRECT_FIELDS if f"customer.{name}" in mapped}


def _address_of(mapped: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any] | None:
    parts = {name: mapped[f"address.{name}"] for name in _ADDRESS_PARTS if f"address.{name}" in mapped}
    if not parts:
        return None
    address = {"kind": "home", "line1": "", "line2": "", "city": "", "region": "", "postal_code": "",
               "country": "", **(base or {})}  # fmt: skip
    # As customer_update normalises addresses: trimmed, the country in capitals.
    address.update(
        {k: str(v).strip().upper() if k == "country" else str(v).strip() for k, v in parts.items()}
    )
    return address


def _with_primary(items: list[dict[str, Any]], key: str, value: str, kind: str) -> list[dict[str, Any]]:
    """``items`` with ``value`` as the primary entry; the list itself when it already is."""
    for item in items:
        if item.get(key) == value and item.get("primary"):
            return items
    existing = next((i for i in items if i.get(key) == value), None)
    first = {key: value, "kind": (existing or {}).get("kind", kind), "primary": True}
    return [first, *({**i, "primary": False} for i in items if i.get(key) != value)]


def customer_from_mapped(mapped: dict[str, Any], *, source: SourceSystem, actor: User | None) -> Customer:
    """A new customer from a result's mapped profile, created as from ``source``
    (its customer.created event names the source)."""
    fields = _profile_fields(mapped)
    if not (fields.get("given_name") or fields.get("family_name") or fields.get("organization_name")):
        raise ValidationError(
            {"customer": "No customer matches this result, and a new customer needs a name: map "
                         "customer.given_name / customer.family_name (or customer.organization_name), "
                         "or send the customer's profile first."}
        )  # fmt: skip
    if fields.get("organization_name") and not (fields.get("given_name") or fields.get("family_name")):
        fields["kind"] = CustomerKind.BUSINESS
    if mapped.get("customer.phone"):
        fields["phones"] = [{"number": mapped["customer.phone"], "kind": "mobile", "primary": True}]
    if mapped.get("customer.email"):
        fields["emails"] = [{"address": mapped["customer.email"], "kind": "personal", "primary": True}]
    address = _address_of(mapped)
    if address is not None:
        fields["addresses"] = [address]
    return customer_create(actor=actor, source=source, **fields)


def profile_changes(customer: Customer, mapped: dict[str, Any]) -> dict[str, Any]:
    """The customer fields a result's mapped profile changes: fields as sent; the
    phone and e-mail become the primary ones; the address replaces the home one."""
    changes = {
        name: value for name, value in _profile_fields(mapped).items() if getattr(customer, name) != value
    }
    if mapped.get("customer.phone"):
        phones = _with_primary(list(customer.phones), "number", mapped["customer.phone"], "mobile")
        if phones != customer.phones:
            changes["phones"] = phones
    if mapped.get("customer.email"):
        emails = _with_primary(list(customer.emails), "address", mapped["customer.email"], "personal")
        if emails != customer.emails:
            changes["emails"] = emails
    home = next((a for a in customer.addresses if a.get("kind") == "home"), None)
    address = _address_of(mapped, base=home)
    if address is not None and address != home:
        others = [a for a in customer.addresses if a is not home]
        changes["addresses"] = [address, *others]
    return changes


def _profile_apply(
    customer_id: int, mapped: dict[str, Any], *, source: SourceSystem, actor: User | None
) -> None:
    """The profile fields the source sent, through customer_update (history,
    profile/address/phone/e-mail/consent events, live screens). A consent
    opt-out is in the row when this transaction commits: offers and calls
    read it from there."""
    customer = Customer.objects.select_for_update().get(pk=customer_id)
    changes = profile_changes(customer, mapped)
    if changes:
        customer_update(
            customer_id=customer_id, expected_version=customer.version, changes=changes, actor=actor,
            source=source,
        )  # fmt: skip


# --- Contacts, purchases, accounts, events ---------------------------------------------------


def _required(mapped: dict[str, Any], target: str, why: str) -> Any:
    value = mapped.get(target)
    if value in (None, ""):
        raise ValidationError({target: f"Missing: {why}"})
    return value


def _interaction_apply(
    customer_id: int, mapped: dict[str, Any], result: Claimed, *, source: SourceSystem, actor: User | None
) -> None:
    occurred_at = mapped.get("interaction.occurred_at") or result.occurred_at
    if occurred_at is None:
        raise ValidationError(
            {"occurred_at": "A contact needs its time: send occurred_at or map interaction.occurred_at."}
        )
    duration = mapped.get("interaction.duration_seconds")
    interaction_record(
        customer_id=customer_id,
        channel=_required(mapped, "interaction.channel", "map the channel (a constant works: a map "
                          "transform with a default)."),
        direction=_required(mapped, "interaction.direction", "map the direction (inbound or outbound)."),
        occurred_at=occurred_at,
        source=source,
        external_id=str(mapped.get("interaction.external_id") or result.external_id),
        actor=actor,
        campaign_code=str(mapped.get("interaction.campaign_code") or ""),
        disposition=str(mapped.get("interaction.disposition") or ""),
        subject=str(mapped.get("interaction.subject") or "")[:200],
        notes=str(mapped.get("interaction.notes") or ""),
        duration_seconds=int(duration) if duration is not None else None,
    )  # fmt: skip


def _amount(value: Any) -> float:
    # Event payloads are JSON, read by CEL conditions as doubles (event.amount > 100.0).
    return float(value if isinstance(value, Decimal | int | float) else Decimal(str(value)))


def _purchase_apply(
    customer_id: int, mapped: dict[str, Any], result: Claimed, moment: dt.datetime, *,
    source: SourceSystem, actor: User | None,
) -> None:  # fmt: skip
    amount = mapped.get("purchase.amount", mapped.get("event.amount"))
    if amount in (None, ""):
        raise ValidationError({"purchase.amount": "Missing: map the amount of the purchase."})
    payload: dict[str, Any] = {"amount": _amount(amount), "channel": source.kind}
    for name in ("currency", "product"):
        if mapped.get(f"purchase.{name}"):
            payload[name] = str(mapped[f"purchase.{name}"])
    business_event_record(
        type=events.TRANSACTION_PURCHASE.name, customer_id=customer_id, occurred_at=moment,
        payload=payload, source=source, idempotency_key=result.external_id, actor=actor,
    )  # fmt: skip


def _account_apply(
    customer_id: int, mapped: dict[str, Any], *, source: SourceSystem, actor: User | None
) -> None:
    number = str(mapped.get("account.number") or mapped.get("event.account_number") or "").strip().upper()
    if not number:
        raise ValidationError({"account.number": "Missing: map the account number."})
    status = mapped.get("account.status") or AccountStatus.OPEN
    account = Account.objects.filter(account_number=number).first()
    if account is not None and account.customer_id != customer_id:
        raise ValidationError(
            {"account.number": f"Account {number} belongs to another customer: check the customer key, or "
                               "have an administrator move the account."}
        )  # fmt: skip
    if account is None:
        account = account_open(
            customer_id=customer_id,
            product_code=str(_required(mapped, "account.product", "map the product code to open it.")),
            account_number=number, opened_on=mapped.get("account.opened_on"),
            balance=Decimal(str(mapped.get("account.balance") or "0.00")),
            currency=str(mapped.get("account.currency") or "USD"), actor=actor, source=source,
        )  # fmt: skip
    if status == AccountStatus.CLOSED and account.status != AccountStatus.CLOSED:
        account_close(
            account_id=account.pk, closed_on=mapped.get("account.closed_on"), actor=actor, source=source
        )


def _event_apply(
    customer_id: int, mapped: dict[str, Any], result: Claimed, moment: dt.datetime, *,
    source: SourceSystem, actor: User | None,
) -> None:  # fmt: skip
    event_type = str(_required(mapped, "event.type", "map the business event type."))
    payload: dict[str, Any] = {}
    if mapped.get("event.amount") not in (None, ""):
        payload["amount"] = _amount(mapped["event.amount"])
    if mapped.get("event.account_number"):
        payload["account_number"] = str(mapped["event.account_number"]).strip().upper()
    business_event_record(
        type=event_type, customer_id=customer_id, occurred_at=moment, payload=payload, source=source,
        idempotency_key=result.external_id, actor=actor,
    )  # fmt: skip
