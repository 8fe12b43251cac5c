"""The catalog of business event types.

Events are the facts policies react to. Each type has a name, a short
description shown to supervisors when they author a policy, and a payload
schema: field name -> (type, required). Other apps add their own types with
``register`` at import time (their ``AppConfig.ready``); an event whose type is
not in the catalog is refused, never stored.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError

PayloadType = str  # "string" | "number" | "integer" | "boolean" | "date" | "datetime"
_TYPES = ("string", "number", "integer", "boolean", "date", "datetime")


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    payload: dict[str, tuple[PayloadType, bool]] = field(default_factory=dict)

    def validate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Return the payload with values checked; raise naming each bad field."""
        if not isinstance(payload, dict):
            raise ValidationError({"payload": "The payload must be a JSON object."})
        errors: dict[str, str] = {}
        for name, (kind, required) in self.payload.items():
            if name not in payload or payload[name] in (None, ""):
                if required:
                    errors[f"payload.{name}"] = f"{self.name} needs {name} ({kind})."
                continue
            problem = _type_problem(kind, payload[name])
            if problem:
                errors[f"payload.{name}"] = problem
        if errors:
            raise ValidationError(errors)
        return payload


def _type_problem(kind: PayloadType, value: Any) -> str | None:
    if kind == "string":
        return None if isinstance(value, str) else "Must be text."
    if kind == "boolean":
        return None if isinstance(value, bool) else "Must be true or false."
    if kind == "integer":
        return None if isinstance(value, int) and not isinstance(value, bool) else "Must be a whole number."
    if kind == "number":
        if isinstance(value, bool):
            return "Must be a number."
        try:
            Decimal(str(value))
        except InvalidOperation:
            return "Must be a number."
        return None
    if kind == "date":
        try:
            dt.date.fromisoformat(str(value))
        except ValueError:
            return "Must be a date as YYYY-MM-DD."
        return None
    if kind == "datetime":
        try:
            moment = dt.datetime.fromisoformat(str(value))
        except ValueError:
            return "Must be a date and time in ISO 8601, e.g. 2026-03-01T14:30:00Z."
        if moment.tzinfo is None:
            # A time without a zone is a different instant in every office: refuse it
            # rather than guess whose clock it was read from.
            return f"“{value}” has no time zone: add Z or an offset such as +02:00."
        return None
    return f"Unknown payload type {kind}."


CATALOG: dict[str, EventType] = {}


def register(event_type: EventType) -> EventType:
    for kind, _ in event_type.payload.values():
        if kind not in _TYPES:
            raise ValueError(f"{event_type.name}: unknown payload type {kind!r}")
    CATALOG[event_type.name] = event_type
    return event_type


def get(name: str) -> EventType:
    try:
        return CATALOG[name]
    except KeyError:
        raise ValidationError(
            {"type": f"“{name}” is not a known event type. Known types: {', '.join(sorted(CATALOG))}."}
        ) from None


CUSTOMER_CREATED = register(EventType("customer.created", "A new customer record was created."))
CUSTOMER_PROFILE_CHANGED = register(
    EventType(
        "customer.profile_changed",
        "Profile fields of a customer changed (the payload lists which).",
        {"fields": ("string", True)},
    )
)
CUSTOMER_ADDRESS_CHANGED = register(
    EventType(
        "customer.address_changed",
        "A customer reported a change of address.",
        {"city": ("string", False), "region": ("string", False), "country": ("string", False)},
    )
)
CUSTOMER_CONSENT_CHANGED = register(
    EventType(
        "customer.consent_changed",
        "A customer changed a contact consent (do-not-call, do-not-email, marketing).",
        {"consent": ("string", True), "value": ("boolean", True)},
    )
)
CUSTOMER_PHONE_CHANGED = register(
    EventType(
        "customer.phone_changed",
        "A customer's phone numbers changed (the payload has the primary number now).",
        {"phone": ("string", False)},
    )
)
CUSTOMER_EMAIL_CHANGED = register(
    EventType(
        "customer.email_changed",
        "A customer's e-mail addresses changed (the payload has the primary address now).",
        {"email": ("string", False)},
    )
)
HOUSEHOLD_JOINED = register(
    EventType("household.joined", "A customer joined a household.", {"household_id": ("integer", True)})
)
ACCOUNT_OPENED = register(
    EventType(
        "account.opened",
        "A customer opened an account in a product.",
        {"account_number": ("string", True), "product": ("string", True)},
    )
)
ACCOUNT_CLOSED = register(
    EventType(
        "account.closed",
        "A customer closed an account.",
        {"account_number": ("string", True), "product": ("string", True)},
    )
)
ACCOUNT_WITHDRAWAL = register(
    EventType(
        "account.withdrawal",
        "Money left an account (withdrawal, transfer out).",
        {"account_number": ("string", True), "amount": ("number", True), "currency": ("string", False)},
    )
)
ACCOUNT_DEPOSIT = register(
    EventType(
        "account.deposit",
        "Money came into an account.",
        {"account_number": ("string", True), "amount": ("number", True), "currency": ("string", False)},
    )
)
INTERACTION_RECORDED = register(
    EventType(
        "interaction.recorded",
        "A contact with the customer was recorded on some channel.",
        {"channel": ("string", True), "direction": ("string", True), "disposition": ("string", False)},
    )
)
TRANSACTION_PURCHASE = register(
    EventType(
        "transaction.purchase",
        "A customer bought something (point of sale, web shop, billing).",
        {
            "amount": ("number", True),
            "currency": ("string", False),
            "product": ("string", False),
            "channel": ("string", False),
        },
    )
)
