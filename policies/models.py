"""Interaction policies, offers and the decisions the engine takes.

A policy names the business events that trigger it, a CEL condition over
``{event, customer, history}`` and actions from the registry in
``policies.actions``; every decision the engine takes for a matching policy is
a row, unique per (event, policy), so a redelivered event decides nothing twice.
Offers put in front of a customer are ``OfferPresentation`` rows with a
sequence per customer: a screen that reconnects asks for what came after the
last number it saw.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from crm.models.holdings import code_validator


class OfferChannel(models.TextChoices):
    AGENT_SCREEN = "agent_screen", "Agent screen"
    SELF_SERVICE = "self_service", "Self-service web"
    EMAIL = "email", "E-mail"
    OUTBOUND_CALL = "outbound_call", "Outbound call"


class OfferStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class Offer(models.Model):
    """Something the bank proposes to a customer, with what to say on each channel.

    The contact rules that belong to one offer (how often, how soon again after a
    decline) live on the row; those across offers are settings (POLICIES_*)."""

    code = models.CharField(max_length=40, unique=True, validators=[code_validator])
    name = models.CharField(max_length=120)
    product = models.ForeignKey(
        "crm.Product", null=True, blank=True, on_delete=models.PROTECT, related_name="offers"
    )
    talking_points = models.TextField(blank=True, help_text="What the agent says, on the agent screen.")
    self_service_text = models.TextField(blank=True, help_text="What the customer reads on the web.")
    channels = ArrayField(
        models.CharField(max_length=16, choices=OfferChannel.choices),
        default=list,
        help_text="Where this offer may be presented.",
    )
    value = models.DecimalField(
        max_digits=12, decimal_places=2, default=Decimal("0.00"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Expected value to the bank of one acceptance; ranks offers in arbitration.",
    )  # fmt: skip
    marketing = models.BooleanField(
        default=True,
        help_text="A marketing offer is never presented to a customer without marketing consent "
        "or with an open complaint; a service offer (a fee refund) is.",
    )
    max_presentations = models.PositiveSmallIntegerField(
        default=3, help_text="At most this many presentations to one customer per period."
    )
    # At most a year: the contact rules read a year of presentations (POLICIES_RULES_LOOKBACK_DAYS).
    period_days = models.PositiveSmallIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(365)]
    )
    cooling_off_days = models.PositiveSmallIntegerField(
        default=30, validators=[MaxValueValidator(365)],
        help_text="Days after a decline before this offer is presented again.",
    )  # fmt: skip
    expires_after_hours = models.PositiveSmallIntegerField(
        default=72, validators=[MinValueValidator(1)], help_text="An unanswered presentation expires then."
    )
    valid_from = models.DateTimeField(null=True, blank=True)
    valid_to = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=OfferStatus.choices, default=OfferStatus.DRAFT)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                name="offer_valid_window_in_order",
                condition=models.Q(valid_from__isnull=True)
                | models.Q(valid_to__isnull=True)
                | models.Q(valid_to__gt=models.F("valid_from")),
            ),
        ]

    def __str__(self) -> str:
        return self.name


class PolicyStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    RETIRED = "retired", "Retired"


class Policy(models.Model):
    """When one of ``trigger_types`` happens and ``condition`` holds, run ``actions``.

    ``condition`` and ``actions`` are checked when the policy is saved
    (policies.services.policy_save): a bad one never reaches the engine.
    ``version`` grows on every change; compiled conditions are cached per
    (id, version)."""

    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    trigger_types = ArrayField(
        models.CharField(max_length=60), help_text="Business event types (crm.events) that trigger it."
    )
    condition = models.TextField(
        blank=True,
        help_text='A CEL expression over event, customer and history, e.g. customer.tier == "platinum" '
        "&& event.amount > 10000.0; empty: always.",
    )
    actions = models.JSONField(
        default=list, help_text='[{"action": "present_offer", "settings": {...}}] (policies.actions).'
    )
    priority = models.PositiveSmallIntegerField(
        default=50, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="1-100; with the offer's value, ranks competing offers.",
    )  # fmt: skip
    active_from = models.DateTimeField(null=True, blank=True)
    active_until = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=PolicyStatus.choices, default=PolicyStatus.DRAFT)
    holdout_percent = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(100)],
        help_text="This share of qualifying customers gets nothing (the control group).",
    )  # fmt: skip
    version = models.PositiveIntegerField(default=1, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name_plural = "policies"
        ordering = ["-priority", "id"]
        constraints = [
            models.CheckConstraint(
                name="policy_priority_1_to_100", condition=models.Q(priority__gte=1, priority__lte=100)
            ),
            models.CheckConstraint(
                name="policy_holdout_0_to_100", condition=models.Q(holdout_percent__lte=100)
            ),
            models.CheckConstraint(
                name="policy_active_window_in_order",
                condition=models.Q(active_from__isnull=True)
                | models.Q(active_until__isnull=True)
                | models.Q(active_until__gt=models.F("active_from")),
            ),
        ]

    def __str__(self) -> str:
        return self.name


class DecisionOutcome(models.TextChoices):
    ACTED = "acted", "Acted (offer presented or task created)"
    HELD_OUT = "held_out", "Held out (control group)"
    SUPPRESSED = "suppressed", "Suppressed by a contact rule"
    OUTRANKED = "outranked", "Outranked by a better offer"
    FAILED = "failed", "Condition failed to evaluate"


class Decision(models.Model):
    """What the engine decided for one policy whose condition held on one event.

    Policies whose condition did not hold leave no row: at hundreds of events a
    second and dozens of candidate policies each, those rows would outnumber
    everything else and say nothing a replay cannot."""

    # No index of their own: the unique (event, policy) and decision_policy_outcome
    # lead with them (each index is written on every insert, ~1.5 decisions an event).
    event = models.ForeignKey("crm.BusinessEvent", on_delete=models.CASCADE, related_name="+", db_index=False)
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="decisions", db_index=False)
    policy_version = models.PositiveIntegerField()
    customer = models.ForeignKey(
        "crm.Customer", null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    outcome = models.CharField(max_length=10, choices=DecisionOutcome.choices)
    reason = models.CharField(max_length=200, blank=True)
    task = models.ForeignKey(
        "crm.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False,
        help_text="The task a create_task action made (its origin is policy:<id>).",
    )  # fmt: skip
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event", "policy"], name="decision_once_per_event_and_policy"),
        ]
        indexes = [
            # Per-policy statistics (presented, held out, suppressed over time).
            models.Index(fields=["policy", "outcome", "created_at"], name="decision_policy_outcome"),
            models.Index(fields=["customer", "-created_at"], name="decision_customer_time"),
            # A task deleted sets its decisions' task to NULL; most decisions have none.
            models.Index(fields=["task"], condition=models.Q(task__isnull=False), name="decision_task"),
        ]

    def __str__(self) -> str:
        return f"{self.policy_id} on event {self.event_id}: {self.outcome}"


class EventEvaluation(models.Model):
    """The claim on an event: inserted once, by whichever of the on-commit pass and
    the worker's pass gets there first; the other finds it and does nothing."""

    event = models.OneToOneField(
        "crm.BusinessEvent", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    evaluated_at = models.DateTimeField(default=timezone.now)
    candidates = models.PositiveSmallIntegerField(default=0)
    matched = models.PositiveSmallIntegerField(default=0)

    def __str__(self) -> str:
        return f"event {self.event_id}: {self.matched} of {self.candidates} policies matched"


class PresentationStatus(models.TextChoices):
    PRESENTED = "presented", "Presented"
    ACCEPTED = "accepted", "Accepted"
    DECLINED = "declined", "Declined"
    EXPIRED = "expired", "Expired"


class OfferPresentation(models.Model):
    """One offer in front of one customer on one channel.

    ``sequence`` counts the customer's presentations from 1 without gaps: a
    screen that saw number n asks for every row after n, once, in order."""

    offer = models.ForeignKey(Offer, on_delete=models.PROTECT, related_name="presentations")
    customer = models.ForeignKey(
        "crm.Customer", on_delete=models.CASCADE, related_name="offer_presentations", db_index=False
    )
    channel = models.CharField(max_length=16, choices=OfferChannel.choices)
    policy = models.ForeignKey(
        Policy, null=True, blank=True, on_delete=models.PROTECT, related_name="presentations"
    )
    event = models.ForeignKey(
        "crm.BusinessEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    sequence = models.PositiveIntegerField()
    status = models.CharField(
        max_length=10, choices=PresentationStatus.choices, default=PresentationStatus.PRESENTED
    )
    presented_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    responded_at = models.DateTimeField(null=True, blank=True)
    responded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        db_index=False,
    )  # fmt: skip
    # E-mail and outbound-call offers are sent by the e-mail platform and the dialer:
    # set when the integration acknowledges it has taken the offer for delivery.
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "sequence"], name="presentation_sequence_per_customer"
            ),
            models.CheckConstraint(
                name="presentation_responded_has_time",
                condition=models.Q(status="presented") | models.Q(responded_at__isnull=False),
            ),
        ]
        indexes = [
            # The contact rules read a customer's recent presentations; catch-up reads by sequence.
            models.Index(fields=["customer", "-presented_at"], name="presentation_customer_time"),
            models.Index(
                fields=["expires_at"], condition=models.Q(status="presented"), name="presentation_open_expiry"
            ),
            # The delivery feed of each integration channel: what is still to be taken, oldest first.
            models.Index(
                fields=["channel", "id"],
                condition=models.Q(status="presented", delivered_at__isnull=True)
                & models.Q(channel__in=["email", "outbound_call"]),
                name="presentation_to_deliver",
            ),
            # A user deleted sets their answers' responded_by to NULL; an offer is
            # presented unanswered, and many are answered by the customer.
            models.Index(
                fields=["responded_by"],
                condition=models.Q(responded_by__isnull=False),
                name="presentation_responded_by",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.offer_id} to {self.customer_id} on {self.channel} (#{self.sequence})"


class PresentationCounter(models.Model):
    """The last presentation number given to a customer. The statement that
    numbers new presentations takes it with an upsert, which locks the row until
    its transaction ends and, when it had to wait, reads the number the other
    transaction left: one customer's numbers are given, and committed, in order,
    without a lock taken by a statement of its own (``offers_present``)."""

    customer = models.OneToOneField(
        "crm.Customer", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    last = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.last}"


class CustomerTag(models.Model):
    """A label a policy put on a customer (``tag_customer``), e.g. "mortgage-prospect"."""

    customer = models.ForeignKey("crm.Customer", on_delete=models.CASCADE, related_name="policy_tags")
    tag = models.CharField(max_length=40, validators=[code_validator])
    policy = models.ForeignKey(Policy, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["customer", "tag"], name="customertag_once")]

    def __str__(self) -> str:
        return self.tag
