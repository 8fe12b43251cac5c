"""The access log: who read which customer record, how and when. Append-only."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from crm.models.choices import AccessChannel


class AccessLogEntry(models.Model):
    """One staff read of a customer record.

    Rows are never updated or deleted: a database trigger (migration
    0003) rejects UPDATE and DELETE, so not even a bug or a shell session can
    rewrite history. ``customer_id`` carries no foreign key for the same reason.

    The table is partitioned by month on ``at`` (migration 0007): retention drops
    whole months (``manage.py access_log_retention``), never rows. In the database
    the primary key is (id, at), as a partitioned table's key must hold the
    partition key; ``id`` comes from one sequence, so Django keeps it as the key.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    customer_id = models.BigIntegerField()
    channel = models.CharField(max_length=8, choices=AccessChannel.choices)
    path = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["customer_id", "-at"], name="accesslog_customer_time"),
            models.Index(fields=["user", "-at"], name="accesslog_user_time"),
        ]
        verbose_name = "access log entry"
        verbose_name_plural = "access log entries"

    def __str__(self) -> str:
        return f"{self.user_id} read {self.customer_id} via {self.channel} at {self.at:%Y-%m-%d %H:%M}"

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("The access log is append-only.")
