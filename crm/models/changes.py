"""The change history of customer records: who changed which field, when, from what. Append-only."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class CustomerChange(models.Model):
    """One field of one customer changed by one write.

    Written by crm.services in the transaction of the change itself, so the
    history and the record cannot disagree. Rows are never updated, and deleted
    only together with their customer: a database trigger (migration 0006)
    refuses UPDATE, and DELETE while the customer still exists. The customer
    foreign key is declared ON DELETE CASCADE in the database (Django does not
    touch these rows when it deletes a customer), so erasing a customer erases
    the old and new values of their personal data too, while nobody can prune
    the history of a customer who is still on file.
    """

    customer = models.ForeignKey(
        "crm.Customer",
        on_delete=models.DO_NOTHING,
        db_constraint=False,  # declared by migration 0006 with ON DELETE CASCADE
        related_name="change_history",
        db_index=False,
    )
    version = models.PositiveIntegerField(help_text="The customer's version after this change.")
    field = models.CharField(max_length=40)
    old_value = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    new_value = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        # Never touched from Django: a user who changed records is deactivated, not
        # deleted (the database refuses the delete), and a self-service log-in goes
        # with its customer, whose history the database removes in the same statement.
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,  # checked per statement (migration 0018)
        help_text="Who made the change; empty for the system itself (imports, policies).",
    )
    source_system = models.ForeignKey(
        "crm.SourceSystem", on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["customer", "-at", "-id"], name="customerchange_customer_time"),
            models.Index(fields=["customer", "field", "-at", "-id"], name="customerchange_customer_field"),
        ]
        verbose_name = "customer change"

    def __str__(self) -> str:
        return f"{self.field} of customer {self.customer_id} (v{self.version}) at {self.at:%Y-%m-%d %H:%M}"

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("The change history of a customer is append-only.")
