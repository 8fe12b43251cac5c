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

    @property
    def fields(self) -> dict[str, PayloadType]:
        """Each payload field and its type (for policy conditions and the authoring pages)."""
        return {name: kind for name, (kind, _) in self.payload.items()}

    def validate(self, payload: dict[str, Any], *, strict: bool = False) -> dict[str, Any]:
        """Return the payload with values checked; raise naming each bad field.

        ``strict`` also refuses fields the type does not declare (the events API:
        an integrator's misspelt field would be stored and never read by a policy);
        internal paths keep extra fields a mapping may carry."""
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
        unknown = sorted(set(payload) - set(self.payload)) if strict else []
        for name in unknown:
            # A misspelt field would be stored and never read by any policy.
            known = ", ".join(sorted(self.payload)) or "no fields"
            errors[f"payload.{name}"] = f"{self.name} has no field {name}: its fields are {known}."
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

# --- Money movements reported by the channels they happened on -----------------------------
# account.withdrawal / account.deposit above are ledger movements (the core system's
# postings, the demo's history). transaction.* join them rather than replace them: they
# are what a touchpoint (ATM, branch, online banking, point of sale) reports as it
# happens, with the channel, which is what a real-time policy wants to know. A policy
# about any withdrawal lists both types; its condition may then use only the fields
# the two have in common (amount, account_number).
TRANSACTION_WITHDRAWAL = register(
    EventType(
        "transaction.withdrawal",
        "A customer took money out of an account, as the channel reported it (ATM, branch, online).",
        {
            "amount": ("number", True),
            "account_number": ("string", True),
            "channel": ("string", True),
            "currency": ("string", False),
        },
    )
)
TRANSACTION_DEPOSIT = register(
    EventType(
        "transaction.deposit",
        "A customer put money into an account, as the channel reported it.",
        {
            "amount": ("number", True),
            "account_number": ("string", True),
            "channel": ("string", True),
            "currency": ("string", False),
        },
    )
)
TRANSACTION_PURCHASE = register(
    EventType(
        # One definition for the touchpoint import (amount, currency, product, channel)
        # and for channels that say more (the account, the merchant and its category).
        "transaction.purchase",
        "A customer bought something (point of sale, web shop, billing).",
        {
            "amount": ("number", True),
            "currency": ("string", False),
            "product": ("string", False),
            "channel": ("string", False),
            "account_number": ("string", False),
            "merchant": ("string", False),
            "merchant_category": ("string", False),
        },
    )
)

# --- Digital touchpoints -----------------------------------------------------------------
WEB_PAGE_VIEW = register(
    EventType(
        "web.page_view",
        "A signed-in customer viewed a page of the web site (e.g. the mortgage calculator).",
        {"url": ("string", True), "page_category": ("string", False), "session_id": ("string", False)},
    )
)
EMAIL_OPENED = register(
    EventType(
        "email.opened",
        "A customer opened an e-mail the bank sent.",
        {"message_id": ("string", True), "campaign_code": ("string", False)},
    )
)
EMAIL_CLICKED = register(
    EventType(
        "email.clicked",
        "A customer clicked a link in an e-mail the bank sent.",
        {"url": ("string", True), "message_id": ("string", False), "campaign_code": ("string", False)},
    )
)

# --- Calls (from the telephony system and the agent's wrap-up) -----------------------------
CALL_ENDED = register(
    EventType(
        "call.ended",
        "A call with the customer ended.",
        {
            "call_id": ("string", True),
            "direction": ("string", True),
            "duration_seconds": ("integer", True),
            "queue": ("string", False),
            "agent": ("string", False),
        },
    )
)
CALL_DISPOSITION = register(
    EventType(
        "call.disposition",
        "An agent wrapped up a call with a disposition (sale, callback requested, complaint, ...).",
        {"disposition": ("string", True), "call_id": ("string", False), "agent": ("string", False)},
    )
)
COMPLAINT_OPENED = register(
    EventType(
        "complaint.opened",
        "The customer made a complaint; marketing offers are suppressed until it is resolved.",
        {"category": ("string", False), "channel": ("string", False)},
    )
)
COMPLAINT_RESOLVED = register(
    EventType(
        "complaint.resolved",
        "A complaint of the customer was resolved.",
        {"category": ("string", False)},
    )
)
CONSENT_CHANGED = register(
    EventType(
        # customer.consent_changed is raised when the record's consent changes; this is
        # the touchpoint's own report (an unsubscribe link, an IVR opt-out), which the
        # import applies to the record.
        "consent.changed",
        "A touchpoint reported that the customer gave or withdrew a consent (call, e-mail, marketing).",
        {"consent": ("string", True), "value": ("boolean", True), "channel": ("string", False)},
    )
)

# --- Offers: every response flows back into the loop ---------------------------------------
_OFFER_FIELDS: dict[str, tuple[PayloadType, bool]] = {
    "offer": ("string", True),
    "channel": ("string", True),
    "presentation_id": ("integer", True),
    "policy_id": ("integer", False),
}
OFFER_PRESENTED = register(
    EventType("offer.presented", "An offer was put in front of the customer on a channel.", _OFFER_FIELDS)
)
OFFER_ACCEPTED = register(
    EventType(
        "offer.accepted", "The customer accepted an offer (themselves or through an agent).", _OFFER_FIELDS
    )
)
OFFER_DECLINED = register(
    EventType(
        "offer.declined",
        "The customer declined an offer; the contact rules cool off before offering it again.",
        {**_OFFER_FIELDS, "reason": ("string", False)},
    )
)
OFFER_EXPIRED = register(
    EventType("offer.expired", "An offer went unanswered until it expired.", _OFFER_FIELDS)
)
