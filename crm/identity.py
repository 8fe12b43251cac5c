"""Identity resolution: which customer a source's record speaks of.

The order, strictest first:

1. the source's own key (a SourceRecord for source + key): the source told us before;
2. exactly one customer with the record's normalised e-mail or phone (the indexed
   ``email_keys`` / ``phone_keys`` columns);
3. nobody: the caller may create a new customer, marked as created from the source.

Several customers matching is never settled by a guess: the caller puts the record
in a review queue with the candidates, for an administrator to decide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

from crm import selectors
from crm.bulk_sql import text_any
from crm.models import Customer, SourceRecord, SourceSystem
from crm.validation import normalize_email, normalize_phone


@dataclass(frozen=True)
class Resolution:
    """What identity resolution found: one customer, several candidates, or nobody."""

    customer_id: int | None = None
    candidates: list[int] = field(default_factory=list)
    by: str = ""  # "source_key", "email", "phone", "email+phone" or "" when nobody matched

    @property
    def ambiguous(self) -> bool:
        return self.customer_id is None and len(self.candidates) > 1

    @property
    def unmatched(self) -> bool:
        return self.customer_id is None and not self.candidates


def source_keys_resolve(*, source: SourceSystem, keys: Iterable[str]) -> dict[str, int]:
    """The customer of each of ``keys`` the source linked before, in one query
    (a worker resolves a whole claimed batch at once)."""
    wanted = sorted({k for k in keys if k})
    if not wanted:
        return {}
    return dict(
        SourceRecord.objects.filter(text_any("external_key", wanted), source_system=source).values_list(
            "external_key", "customer_id"
        )
    )


def _email_key(value: str) -> str:
    try:
        return normalize_email(value).lower() if value else ""
    except ValidationError:
        return ""  # an unreadable address matches nobody; the mapping reports it


def _phone_key(value: str, region: str | None) -> str:
    try:
        return normalize_phone(value, region=region) if value else ""
    except ValidationError:
        return ""


def customer_resolve(
    *,
    source: SourceSystem,
    customer_key: str = "",
    email: str = "",
    phone: str = "",
    known_keys: dict[str, int] | None = None,
) -> Resolution:
    """Find the customer a record of ``source`` speaks of (see the module's order).

    ``known_keys`` is the result of ``source_keys_resolve`` for a batch; without
    it the source key is looked up here. E-mail and phone are normalised first
    (a phone without a country code is read in the source's region)."""
    if customer_key:
        if known_keys is not None:
            found = known_keys.get(customer_key)
        else:
            found = source_keys_resolve(source=source, keys=[customer_key]).get(customer_key)
        if found is not None:
            return Resolution(customer_id=found, by="source_key")
    email_key = _email_key(email)
    phone_key = _phone_key(phone, source.phone_region or None)
    by_email: set[int] = set()
    by_phone: set[int] = set()
    if email_key:
        by_email = set(Customer.objects.filter(email_keys__contains=[email_key]).values_list("pk", flat=True))
    if phone_key:
        # Read whole, never sliced (see selectors.customers_by_phone).
        by_phone = set(selectors.customers_by_phone(phone_key).values_list("pk", flat=True))
    everyone = by_email | by_phone
    if len(everyone) == 1:
        only = next(iter(everyone))
        return Resolution(customer_id=only, by="email" if only in by_email else "phone")
    if by_email and by_phone and len(by_email & by_phone) == 1:
        # A shared household line matches two people; the e-mail tells which of them.
        return Resolution(customer_id=next(iter(by_email & by_phone)), by="email+phone")
    return Resolution(candidates=sorted(everyone))
