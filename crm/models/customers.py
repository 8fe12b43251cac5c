"""Customers and the households they belong to."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from crm.models.choices import (
    AddressKind,
    CustomerKind,
    CustomerStatus,
    EmailKind,
    HouseholdRole,
    PhoneKind,
    PreferredChannel,
    Tier,
)
from crm.validation import (
    COUNTRY_RE,
    validate_birth_date,
    validate_language,
    validate_time_zone,
)

ADDRESS_FIELDS = ("kind", "line1", "line2", "city", "region", "postal_code", "country")


class Household(models.Model):
    """Customers living at one address; the unit for household-level views and offers."""

    name = models.CharField(max_length=200, help_text="e.g. “The Garcia household”.")
    line1 = models.CharField("address line 1", max_length=200, blank=True)
    line2 = models.CharField("address line 2", max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    region = models.CharField(max_length=100, blank=True, help_text="State or province.")
    postal_code = models.CharField(max_length=20, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166 code, e.g. US.")
    address_key = models.CharField(
        max_length=300, blank=True, editable=False, help_text="Folded address for matching."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["address_key"], name="household_address_key"),
            # The API lists households by name: a page is read off this index.
            models.Index(fields=["name", "id"], name="household_name_id"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.country and not COUNTRY_RE.match(self.country):
            raise ValidationError({"country": "Use a two-letter ISO country code such as US."})


class Customer(models.Model):
    """A person or a business: the centre of the record.

    Phones, e-mails and postal addresses are small lists kept on the row (so the
    screen reads them with the customer, no join); their normalised forms are
    copied into indexed array columns for lookup. ``version`` increases on every
    change and guards concurrent edits (optimistic locking).
    """

    kind = models.CharField(max_length=10, choices=CustomerKind.choices, default=CustomerKind.PERSON)
    given_name = models.CharField(max_length=100, blank=True)
    family_name = models.CharField(max_length=100, blank=True)
    organization_name = models.CharField(max_length=200, blank=True)
    display_name = models.CharField(max_length=300, editable=False)
    date_of_birth = models.DateField(null=True, blank=True, validators=[validate_birth_date])

    phones = models.JSONField(default=list, blank=True, help_text="[{number (E.164), kind, primary}]")
    emails = models.JSONField(default=list, blank=True, help_text="[{address, kind, primary}]")
    addresses = models.JSONField(
        default=list, blank=True, help_text="[{kind, line1, line2, city, region, postal_code, country}]"
    )

    tier = models.CharField(max_length=10, choices=Tier.choices, default=Tier.STANDARD)
    lifetime_value = models.DecimalField(
        max_digits=14, decimal_places=2, default=Decimal("0.00"),
        validators=[MinValueValidator(Decimal("0"))],
    )  # fmt: skip
    language = models.CharField(max_length=10, default="en", validators=[validate_language])
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    preferred_channel = models.CharField(
        max_length=10, choices=PreferredChannel.choices, default=PreferredChannel.PHONE
    )
    do_not_call = models.BooleanField(default=False)
    do_not_email = models.BooleanField(default=False)
    marketing_opt_in = models.BooleanField(default=False)
    consents_updated_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=CustomerStatus.choices, default=CustomerStatus.ACTIVE)

    household = models.ForeignKey(
        Household, null=True, blank=True, on_delete=models.SET_NULL, related_name="members"
    )
    household_role = models.CharField(max_length=10, choices=HouseholdRole.choices, blank=True)

    # Search keys, computed by crm.services from the fields above.
    sort_name = models.CharField(max_length=300, editable=False, db_index=True)
    name_phonetic = ArrayField(models.CharField(max_length=40), default=list, editable=False)
    search_vector = SearchVectorField(null=True, editable=False)
    phone_keys = ArrayField(models.CharField(max_length=16), default=list, editable=False)
    email_keys = ArrayField(models.CharField(max_length=254), default=list, editable=False)

    version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [
            GinIndex(fields=["phone_keys"], name="customer_phone_keys"),
            GinIndex(fields=["email_keys"], name="customer_email_keys"),
            GinIndex(fields=["name_phonetic"], name="customer_name_phonetic"),
            GinIndex(fields=["search_vector"], name="customer_search_vector"),
        ]
        constraints = [
            models.CheckConstraint(name="customer_version_positive", condition=models.Q(version__gte=1)),
            models.CheckConstraint(
                name="customer_lifetime_value_not_negative", condition=models.Q(lifetime_value__gte=0)
            ),
        ]
        permissions = [
            ("change_customer_standing", "Can change a customer's tier, lifetime value and status"),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.number})"

    @property
    def number(self) -> str:
        """The customer number agents read out and type: C-0000123."""
        return f"C-{self.pk:07d}" if self.pk else "C-new"

    @property
    def primary_phone(self) -> str:
        return _primary(self.phones, "number")

    @property
    def primary_email(self) -> str:
        return _primary(self.emails, "address")

    @property
    def primary_address(self) -> dict[str, Any] | None:
        for address in self.addresses:
            if address.get("kind") in ("home", "mailing"):
                return address
        return self.addresses[0] if self.addresses else None

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        if self.kind == CustomerKind.PERSON and not (self.given_name or self.family_name):
            errors.setdefault("family_name", []).append("A person needs a given or a family name.")
        if self.kind == CustomerKind.BUSINESS and not self.organization_name:
            errors.setdefault("organization_name", []).append("A business needs its name.")
        if self.household_id is None and self.household_role:
            errors.setdefault("household_role", []).append(
                "A role in a household needs a household: clear the role or set the household."
            )
        _check_items(errors, "phones", self.phones, "number", {k.value for k in PhoneKind})
        _check_items(errors, "emails", self.emails, "address", {k.value for k in EmailKind})
        for index, address in enumerate(self.addresses or []):
            if not isinstance(address, dict) or set(address) - set(ADDRESS_FIELDS):
                errors.setdefault("addresses", []).append(
                    f"Address {index + 1} must have only the fields {', '.join(ADDRESS_FIELDS)}."
                )
                continue
            if address.get("kind") not in {k.value for k in AddressKind}:
                errors.setdefault("addresses", []).append(
                    f"Address {index + 1}: kind must be one of {', '.join(AddressKind.values)}."
                )
            if not address.get("line1") or not address.get("city"):
                errors.setdefault("addresses", []).append(
                    f"Address {index + 1} needs at least line1 and city."
                )
            if address.get("country") and not COUNTRY_RE.match(address["country"]):
                errors.setdefault("addresses", []).append(
                    f"Address {index + 1}: country must be a two-letter ISO code such as US."
                )
        if errors:
            raise ValidationError(errors)


def _primary(items: list[dict[str, Any]], key: str) -> str:
    for item in items or []:
        if item.get("primary"):
            return str(item.get(key, ""))
    return str(items[0].get(key, "")) if items else ""


def _check_items(errors: dict[str, list[str]], field: str, items: Any, key: str, kinds: set[str]) -> None:
    if not isinstance(items, list):
        errors.setdefault(field, []).append("Must be a list.")
        return
    primaries = 0
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not item.get(key):
            errors.setdefault(field, []).append(f"Entry {index + 1} needs a {key}.")
            continue
        if item.get("kind", "other") not in kinds:
            errors.setdefault(field, []).append(
                f"Entry {index + 1}: kind must be one of {', '.join(sorted(kinds))}."
            )
        primaries += bool(item.get("primary"))
    if primaries > 1:
        errors.setdefault(field, []).append("Only one entry can be primary.")
