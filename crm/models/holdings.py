"""Products and the accounts customers hold in them."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from crm import clock
from crm.models.choices import AccountStatus, ProductCategory

code_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]*$", "Use lower-case letters, digits, - and _ (e.g. gold-card)."
)
currency_validator = RegexValidator(r"^[A-Z]{3}$", "Use a three-letter ISO 4217 code such as USD.")


class Product(models.Model):
    code = models.CharField(max_length=40, unique=True, validators=[code_validator])
    name = models.CharField(max_length=120)
    category = models.CharField(max_length=12, choices=ProductCategory.choices)
    description = models.TextField(blank=True)
    active = models.BooleanField(default=True, help_text="Inactive products cannot be opened.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Account(models.Model):
    """A customer's holding of a product, with its status and balance."""

    customer = models.ForeignKey(
        "crm.Customer", on_delete=models.PROTECT, related_name="accounts", db_index=False
    )
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="accounts")
    account_number = models.CharField(
        max_length=34,
        unique=True,
        validators=[RegexValidator(r"^[A-Z0-9-]{4,34}$", "Use 4-34 capital letters, digits or -.")],
    )
    status = models.CharField(max_length=8, choices=AccountStatus.choices, default=AccountStatus.OPEN)
    balance = models.DecimalField(max_digits=16, decimal_places=2, default=Decimal("0.00"))
    currency = models.CharField(max_length=3, default="USD", validators=[currency_validator])
    opened_on = models.DateField(default=clock.today_utc)
    closed_on = models.DateField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["customer", "status"], name="account_customer_status"),
            # The API lists accounts newest first: a page is read off this index
            # instead of sorting every account.
            models.Index(fields=["-opened_on", "id"], name="account_opened_on_id"),
        ]
        constraints = [
            models.CheckConstraint(
                name="account_closed_has_closed_on",
                condition=~models.Q(status="closed") | models.Q(closed_on__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account_number} ({self.product_id})"

    def clean(self) -> None:
        if self.closed_on and self.opened_on and self.closed_on < self.opened_on:
            raise ValidationError({"closed_on": "An account cannot close before it opened."})
