"""How a source system's fields become the common definitions.

Two registries, read both when a FieldMapping is saved (``validate_mapping``)
and when a record is mapped (``apply_mappings``):

- TARGETS: the common fields a source may fill, with the type they hold;
- TRANSFORMS: named functions from the source's text to that value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError

from crm.models.choices import AccountStatus, Channel, CustomerStatus, Direction, Tier
from crm.validation import normalize_email, normalize_phone, validate_time_zone

TARGETS: dict[str, str] = {
    "customer.external_key": "Key of the customer in the source system",
    "customer.given_name": "Given name",
    "customer.family_name": "Family name",
    "customer.organization_name": "Organisation name",
    "customer.date_of_birth": "Date of birth",
    "customer.phone": "Phone number",
    "customer.email": "E-mail address",
    "customer.language": "Language code",
    # Mapping one of these is also what lets the source's integration set it through
    # the API (crm.field_access): standing and consents change only by decision.
    "customer.tier": "Tier",
    "customer.lifetime_value": "Lifetime value",
    "customer.status": "Customer status",
    "customer.do_not_call": "Do not call (consent)",
    "customer.do_not_email": "Do not e-mail (consent)",
    "customer.marketing_opt_in": "Marketing opt-in (consent)",
    "address.line1": "Address line 1",
    "address.city": "City",
    "address.region": "State or province",
    "address.postal_code": "Postal code",
    "address.country": "Country code",
    "interaction.external_id": "Id of the contact in the source system",
    "interaction.channel": "Channel",
    "interaction.direction": "Direction",
    "interaction.occurred_at": "When the contact happened",
    "interaction.disposition": "Outcome",
    "interaction.notes": "Notes",
    "interaction.duration_seconds": "Duration in seconds",
    "interaction.campaign_code": "Campaign the contact belongs to (a campaign response)",
    "interaction.subject": "Subject",
    "account.number": "Account number",
    "account.product": "Product code",
    "account.status": "Account status (open, dormant, closed)",
    "account.opened_on": "Date the account opened",
    "account.closed_on": "Date the account closed",
    "account.balance": "Balance",
    "account.currency": "Currency (ISO 4217)",
    "purchase.amount": "Purchase amount",
    "purchase.currency": "Purchase currency (ISO 4217)",
    "purchase.product": "What was bought (product code or name)",
    "event.type": "Business event type",
    "event.amount": "Amount",
    "event.account_number": "Account number",
}


def _text(value: str, args: dict[str, Any]) -> str:
    return value.strip()


def _upper(value: str, args: dict[str, Any]) -> str:
    return value.strip().upper()


def _lower(value: str, args: dict[str, Any]) -> str:
    return value.strip().lower()


def _phone(value: str, args: dict[str, Any]) -> str:
    return normalize_phone(value, region=args.get("region"))


def _email(value: str, args: dict[str, Any]) -> str:
    return normalize_email(value)


def _date(value: str, args: dict[str, Any]) -> dt.date:
    fmt = args.get("format", "%Y-%m-%d")
    try:
        return dt.datetime.strptime(value.strip(), fmt).date()  # noqa: DTZ007  (a date, no time)
    except ValueError:
        raise ValidationError(f"“{value}” is not a date in the format {fmt}.") from None


def _datetime(value: str, args: dict[str, Any]) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"“{value}” is not an ISO 8601 date and time.") from None
    if moment.tzinfo is None:
        zone = args.get("time_zone")
        if not zone:
            raise ValidationError(f"“{value}” has no time zone: add Z or an offset such as +02:00.")
        # The source's wall clock (its time zone, or the mapping's own): a time
        # the clock skips in spring is read as if the clock had not moved yet, one it
        # shows twice in autumn as the first of the two (zoneinfo's fold=0).
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment.astimezone(dt.UTC)


def _decimal(value: str, args: dict[str, Any]) -> Decimal:
    try:
        return Decimal(value.strip().replace(",", ""))
    except InvalidOperation:
        raise ValidationError(f"“{value}” is not a number.") from None


def _integer(value: str, args: dict[str, Any]) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValidationError(f"“{value}” is not a whole number.") from None


_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


def _boolean(value: str, args: dict[str, Any]) -> bool:
    key = value.strip().lower()
    if key in _TRUE | _FALSE:
        return key in _TRUE
    raise ValidationError(f"“{value}” is not yes or no: use true/false, yes/no, y/n or 1/0.")


def _map(value: str, args: dict[str, Any]) -> Any:
    table: dict[str, Any] = args.get("values", {})
    key = value.strip()
    if key in table:
        return table[key]
    if "default" in args:
        return args["default"]
    raise ValidationError(f"“{value}” is not one of the mapped values: {', '.join(table)}.")


TRANSFORMS: dict[str, Callable[[str, dict[str, Any]], Any]] = {
    "text": _text,
    "upper": _upper,
    "lower": _lower,
    "phone_e164": _phone,
    "email": _email,
    "date": _date,
    "datetime": _datetime,
    "decimal": _decimal,
    "integer": _integer,
    "boolean": _boolean,
    "map": _map,
}

_CHOICES: dict[str, set[Any]] = {
    "interaction.channel": set(Channel.values),
    "interaction.direction": set(Direction.values),
    "customer.tier": set(Tier.values),
    "customer.status": set(CustomerStatus.values),
    "account.status": set(AccountStatus.values),
    "customer.do_not_call": {True, False},
    "customer.do_not_email": {True, False},
    "customer.marketing_opt_in": {True, False},
}


def _allowed(values: set[Any]) -> str:
    # Booleans as the JSON a mapping is written in: true, false.
    return ", ".join(sorted(str(v).lower() if isinstance(v, bool) else str(v) for v in values))


def validate_mapping(target: str, transform: str, args: dict[str, Any]) -> None:
    errors: dict[str, str] = {}
    if target not in TARGETS:
        errors["target"] = f"“{target}” is not a known target. Use one of: {', '.join(TARGETS)}."
    if transform not in TRANSFORMS:
        errors["transform"] = f"“{transform}” is not a known transform. Use one of: {', '.join(TRANSFORMS)}."
    if transform == "map":
        values = args.get("values") if isinstance(args, dict) else None
        if not isinstance(values, dict) or not values:
            errors["transform_args"] = 'The map transform needs {"values": {"source": "target", ...}}.'
        elif target in _CHOICES:
            bad = sorted(str(v) for v in values.values() if v not in _CHOICES[target])
            if bad:
                errors["transform_args"] = (
                    f"{', '.join(bad)} not allowed for {target}: use {_allowed(_CHOICES[target])}."
                )
    zone = args.get("time_zone") if isinstance(args, dict) else None
    if transform == "datetime" and zone:
        try:
            validate_time_zone(zone)
        except ValidationError as exc:
            errors["transform_args"] = " ".join(exc.messages)
    if errors:
        raise ValidationError(errors)


class MappingRow(Protocol):
    source_field: str
    target: str
    transform: str
    transform_args: dict[str, Any]
    required: bool


def apply_mappings(
    record: dict[str, str], mappings: Iterable[MappingRow], *, time_zone: str = "", phone_region: str = ""
) -> dict[str, Any]:
    """Map one source record; raise a ValidationError naming every bad source field.

    ``time_zone`` and ``phone_region`` are the source system's: a ``datetime``
    value without an offset is read on the source's clock (a mapping's own
    ``time_zone`` argument wins; with neither it is refused), and a phone number
    without a country code in the source's region (a mapping's ``region``
    argument wins; with neither, the CRM's default region)."""
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for mapping in mappings:
        raw = record.get(mapping.source_field)
        if raw is None or str(raw).strip() == "":
            if mapping.required:
                errors[mapping.source_field] = f"Required (maps to {mapping.target})."
            continue
        args = mapping.transform_args or {}
        if mapping.transform == "datetime" and time_zone and not args.get("time_zone"):
            args = {**args, "time_zone": time_zone}
        elif mapping.transform == "phone_e164" and phone_region and not args.get("region"):
            args = {**args, "region": phone_region}
        try:
            value = TRANSFORMS[mapping.transform](str(raw), args)
        except ValidationError as exc:
            errors[mapping.source_field] = " ".join(exc.messages)
            continue
        allowed = _CHOICES.get(mapping.target)
        if allowed is not None and value not in allowed:
            errors[mapping.source_field] = f"“{value}” is not one of {_allowed(allowed)}."
            continue
        out[mapping.target] = value
    if errors:
        raise ValidationError(errors)
    return out
