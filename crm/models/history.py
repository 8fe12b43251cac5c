"""Contact history, business events and tasks."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from crm.models.choices import Channel, Direction, TaskKind, TaskStatus


class Interaction(models.Model):
    """One entry of a customer's contact history, on any channel.

    ``(source_system, external_id)`` is unique, so a touchpoint that sends the
    same result twice records it once. Its references (customer, agent, source)
    are checked by the database once per statement, not per row (migration 0018).
    """

    customer = models.ForeignKey(
        "crm.Customer", on_delete=models.CASCADE, related_name="interactions", db_index=False,
        db_constraint=False,
    )  # fmt: skip
    channel = models.CharField(max_length=8, choices=Channel.choices)
    direction = models.CharField(max_length=8, choices=Direction.choices)
    occurred_at = models.DateTimeField()
    # Indexed only where set (below): contacts from touchpoints, most of the table, have none.
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        db_constraint=False, db_index=False,
    )  # fmt: skip
    campaign_code = models.CharField(max_length=40, blank=True)
    disposition = models.CharField(max_length=40, blank=True)
    subject = models.CharField(max_length=200, blank=True)
    notes = models.TextField(blank=True)
    script_run_id = models.BigIntegerField(null=True, blank=True)
    duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    source_system = models.ForeignKey(
        "crm.SourceSystem", on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    external_id = models.CharField(max_length=120, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [
            # The timeline and the screen: newest first per customer.
            models.Index(fields=["customer", "-occurred_at", "-id"], name="interaction_timeline"),
            # An agent's contacts (deleting the user clears them from their contacts): a
            # contact a touchpoint sent has no agent, and costs this index no entry.
            models.Index(fields=["agent"], condition=models.Q(agent__isnull=False), name="interaction_agent"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["source_system", "external_id"],
                condition=~models.Q(external_id=""),
                name="interaction_unique_external_id_per_source",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.direction} {self.occurred_at:%Y-%m-%d %H:%M}"


class BusinessEvent(models.Model):
    """A fact about a customer that policies react to (see crm.events for the catalog).

    ``(source_system, idempotency_key)`` is unique, so a source that sends the
    same fact twice records it once. Its references (customer, source, actor) are
    checked by the database once per statement, not per row (migration 0018).
    """

    type = models.CharField(max_length=60)
    customer = models.ForeignKey(
        "crm.Customer",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="events",
        db_index=False,
        db_constraint=False,
    )
    occurred_at = models.DateTimeField()
    payload = models.JSONField(default=dict, blank=True)
    # No index of its own: the unique (source, key) one starts with it.
    source_system = models.ForeignKey(
        "crm.SourceSystem", on_delete=models.PROTECT, related_name="+", db_constraint=False, db_index=False
    )
    idempotency_key = models.CharField(max_length=200, help_text="Unique per source system.")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        # RESTRICT, not PROTECT: a self-service log-in is deleted with its customer,
        # whose events go in the same operation; any other user who acted is kept.
        on_delete=models.RESTRICT,
        related_name="+",
        db_constraint=False,
        help_text="The person or integration whose action raised the event; empty for the system.",
    )
    recorded_at = models.DateTimeField(default=timezone.now, editable=False)
    # The outbox (crm.services.event_dispatch): empty until every deferred listener
    # has run for this event, so a crash delays its listeners and never skips them.
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When every deferred listener had run; empty until then."
    )
    # Defaults in the database too: events are also inserted by raw, set-based SQL.
    dispatch_attempts = models.PositiveSmallIntegerField(default=0, db_default=0)
    dispatch_error = models.TextField(
        blank=True, default="", db_default="", help_text="Why the last dispatch of this event failed."
    )

    class Meta:
        indexes = [
            models.Index(fields=["customer", "-occurred_at"], name="event_customer_time"),
            models.Index(fields=["type", "-occurred_at"], name="event_type_time"),
            # The sweep reads only what is left to dispatch.
            models.Index(
                fields=["recorded_at", "id"],
                condition=models.Q(dispatched_at__isnull=True),
                name="event_undispatched",
            ),
        ]
        constraints = [
            # Keys are each source's own: two systems may both number their facts from 1.
            models.UniqueConstraint(
                fields=["source_system", "idempotency_key"], name="businessevent_unique_key_per_source"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.pk}"


class Task(models.Model):
    """Work for a person about a customer: a call back, a sales call, a follow-up."""

    customer = models.ForeignKey("crm.Customer", on_delete=models.CASCADE, related_name="tasks")
    kind = models.CharField(max_length=12, choices=TaskKind.choices)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=TaskStatus.choices, default=TaskStatus.OPEN)
    priority = models.PositiveSmallIntegerField(default=3, help_text="1 (highest) to 5.")
    due_at = models.DateTimeField(null=True, blank=True)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks"
    )
    # Unassigned work for a team: the code of the call queue whose agents may take it
    # (e.g. a policy's "have a sales rep call": queue:sales). A code, not a key: crm
    # knows no queues; the desk's work list matches it with the agent's skills.
    queue = models.CharField(max_length=40, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    origin = models.CharField(max_length=80, blank=True, help_text="What raised it, e.g. policy:42.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["customer", "due_at"],
                condition=models.Q(status__in=["open", "in_progress"]),
                name="task_open_by_customer",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                name="task_priority_1_to_5", condition=models.Q(priority__gte=1, priority__lte=5)
            ),
        ]

    def __str__(self) -> str:
        return self.title
