"""The touchpoint inbox: results as sources sent them, durable before they are applied.

A batch POSTed by a source (or a file imported for it) is stored here in one
transaction and answered 202; Celery workers then claim pending results in
batches, map them onto the common definitions and apply them to the customer
record. ``(source_system, external_id)`` is unique, so a result sent twice is
stored once and applied once.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from crm.models.choices import BatchOrigin, RecordKind, ResultStatus


class TouchpointBatch(models.Model):
    """One POST (or one imported file) of results from a source system."""

    source_system = models.ForeignKey("crm.SourceSystem", on_delete=models.PROTECT, related_name="batches")
    origin = models.CharField(max_length=4, choices=BatchOrigin.choices, default=BatchOrigin.API)
    file_name = models.CharField(max_length=255, blank=True)
    received_at = models.DateTimeField(default=timezone.now, editable=False)
    submitted = models.PositiveIntegerField(default=0, help_text="Items the source sent.")
    accepted = models.PositiveIntegerField(default=0, help_text="Items stored in the inbox (new ones).")
    duplicates = models.PositiveIntegerField(
        default=0, help_text="Items whose external id this source had sent before: stored once, not again."
    )
    refused = models.PositiveIntegerField(default=0, help_text="Items refused at intake.")
    intake_errors = models.JSONField(
        default=list, blank=True, help_text="Per refused item: its index, external id and errors by field."
    )
    completed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the last of its results left the pending state."
    )

    class Meta:
        indexes = [models.Index(fields=["source_system", "-received_at"], name="batch_source_time")]
        verbose_name = "touchpoint batch"
        verbose_name_plural = "touchpoint batches"

    def __str__(self) -> str:
        return f"batch {self.pk} from {self.source_system_id}"


class TouchpointResult(models.Model):
    """One result (a contact, a profile change, a purchase, ...) as the source sent it."""

    # No index of their own: every result is written again once applied (its claim,
    # a row lock, writes no new version), into every index, and the (batch, status)
    # index and the unique (source, external id) one already start with these.
    # References checked by the database once per statement, not per row (migration 0018).
    batch = models.ForeignKey(
        TouchpointBatch, on_delete=models.CASCADE, related_name="results", db_index=False, db_constraint=False
    )
    source_system = models.ForeignKey(
        "crm.SourceSystem", on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    external_id = models.CharField(max_length=120, help_text="The source's own id of this result.")
    record_kind = models.CharField(max_length=12, choices=RecordKind.choices)
    customer_key = models.CharField(
        max_length=120, blank=True, help_text="The source's own key of the customer, when it sent one."
    )
    sequence = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="The source's order of results: one customer key's results apply by sequence, then "
        "occurred_at, then arrival; a result without a sequence comes before the numbered ones.",
    )
    occurred_at = models.DateTimeField(null=True, blank=True)
    payload = models.JSONField(help_text="The fields as the source sent them.")
    status = models.CharField(max_length=8, choices=ResultStatus.choices, default=ResultStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.JSONField(
        null=True,
        blank=True,
        help_text="Why it was rejected or dead-lettered; on an applied profile change, the values a later "
        "result had set already (superseded).",
    )
    # Indexed only where set (below): every result arrives without one.
    customer = models.ForeignKey(
        "crm.Customer",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    received_at = models.DateTimeField(default=timezone.now, editable=False)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=64, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source_system", "external_id"], name="touchpointresult_unique_external_id_per_source"
            ),
        ]
        indexes = [
            # Workers and the beat sweep look only at what is still to do.
            models.Index(
                fields=["received_at", "id"],
                condition=models.Q(status="pending"),
                name="touchpointresult_pending",
            ),
            models.Index(fields=["batch", "status"], name="touchpointresult_batch_status"),
            # A customer's results (deleting the customer clears them): a result not
            # yet applied has none, so intake writes no entry for it.
            models.Index(
                fields=["customer"],
                condition=models.Q(customer__isnull=False),
                name="touchpointresult_customer",
            ),
            # What holds a result back: earlier ones of its key still pending or in review.
            models.Index(
                fields=["source_system", "customer_key", "sequence", "occurred_at"],
                condition=models.Q(status__in=["pending", "review"]),
                name="touchpointresult_waiting_order",
            ),
        ]
        verbose_name = "touchpoint result"

    def __str__(self) -> str:
        return f"{self.record_kind} {self.external_id} ({self.status})"


class SeenSignature(models.Model):
    """The signature of a signed request a source sent, kept while a copy of the
    request could still pass the 5-minute clock check, so the copy is refused as
    a replay. In PostgreSQL, not the cache: a Redis restart must not forget them.
    Unique per source and digest, so of two copies sent at once exactly one gets
    through; a beat task deletes rows past the window."""

    source_system = models.ForeignKey("crm.SourceSystem", on_delete=models.CASCADE, related_name="+")
    digest = models.CharField(max_length=64, help_text="The hex HMAC-SHA256 the request carried.")
    seen_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source_system", "digest"], name="seensignature_unique_digest"),
        ]
        indexes = [models.Index(fields=["seen_at"], name="seensignature_seen_at")]
        verbose_name = "seen request signature"

    def __str__(self) -> str:
        return f"{self.digest[:12]}… from {self.source_system_id} at {self.seen_at:%Y-%m-%d %H:%M:%S}"
