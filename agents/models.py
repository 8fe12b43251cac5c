"""The contact center floor: queues, agents' presence and the calls between them.

The customer record lives in crm; here is only what the desktop itself owns:
who is available for which queue, every change of an agent's state, and each
call as the telephony system reported it, from arrival to wrap-up.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone


class AgentState(models.TextChoices):
    OFFLINE = "offline", "Offline"
    AVAILABLE = "available", "Available"
    RINGING = "ringing", "Ringing"
    ON_CALL = "on_call", "On a call"
    WRAP_UP = "wrap_up", "Wrap-up"
    BREAK = "break", "On a break"


class BreakReason(models.TextChoices):
    LUNCH = "lunch", "Lunch"
    SHORT = "short", "Short break"
    TRAINING = "training", "Training"
    MEETING = "meeting", "Meeting"
    MISSED_CALL = "missed_call", "Missed a call"
    OTHER = "other", "Other"


class CallState(models.TextChoices):
    QUEUED = "queued", "Waiting in queue"
    RINGING = "ringing", "Ringing an agent"
    CONNECTED = "connected", "Connected"
    HELD = "held", "On hold"
    ENDED = "ended", "Ended"


class Queue(models.Model):
    """A line of calls that agents with its skill answer (sales, service, ...)."""

    code = models.CharField(
        max_length=40,
        unique=True,
        validators=[RegexValidator(r"^[a-z0-9][a-z0-9_-]*$", "Use lower-case letters, digits, - and _.")],
    )
    name = models.CharField(max_length=120)
    ring_seconds = models.PositiveSmallIntegerField(
        default=15,
        validators=[MinValueValidator(5)],
        help_text="How long a call rings one agent before it moves on to the next.",
    )
    wrap_up_seconds = models.PositiveSmallIntegerField(
        default=120, help_text="After-call work allowed before the agent is made available again."
    )
    service_level_seconds = models.PositiveSmallIntegerField(
        default=20, help_text="A call answered within this many seconds counts as within service level."
    )
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Disposition(models.Model):
    """How a call ended, as the agent records it at wrap-up; supervisors choose
    which a queue offers and what each counts as."""

    queue = models.ForeignKey(
        Queue, null=True, blank=True, on_delete=models.CASCADE, related_name="dispositions",
        help_text="Empty: offered in every queue.",
    )  # fmt: skip
    code = models.CharField(
        max_length=40, validators=[RegexValidator(r"^[a-z0-9_]+$", "Use lower-case letters, digits and _.")]
    )
    label = models.CharField(max_length=80)
    counts_as_contact = models.BooleanField(default=True, help_text="The customer was reached.")
    is_sale = models.BooleanField(default=False)
    sets_do_not_call = models.BooleanField(
        default=False, help_text="The customer asked not to be called: sets their do-not-call consent."
    )
    position = models.PositiveSmallIntegerField(default=0)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["position", "label"]
        constraints = [
            models.UniqueConstraint(fields=["queue", "code"], name="disposition_unique_code_per_queue"),
        ]

    def __str__(self) -> str:
        return self.label


class Agent(models.Model):
    """A staff member's presence on the floor and the queues they answer."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="agent"
    )
    queues = models.ManyToManyField(Queue, blank=True, related_name="agents", help_text="Skills.")
    state = models.CharField(max_length=10, choices=AgentState.choices, default=AgentState.OFFLINE)
    state_since = models.DateTimeField(default=timezone.now)
    break_reason = models.CharField(max_length=12, choices=BreakReason.choices, blank=True)
    # Longest idle first: the time the agent last became free for a call.
    idle_since = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    call = models.ForeignKey(
        "agents.Call", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The call ringing, connected or in wrap-up.",
    )  # fmt: skip

    class Meta:
        indexes = [
            models.Index(
                fields=["idle_since"],
                condition=models.Q(state="available"),
                name="agent_available_longest_idle",
            ),
        ]
        permissions = [
            ("view_floor", "Can watch the floor: agents' states, queues and service level"),
            ("manage_floor", "Can set another agent's state (e.g. offline)"),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.state})"


class AgentStateChange(models.Model):
    """Every change of an agent's state, kept: handle times, breaks and idle
    time are all read from here."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="changes")
    state = models.CharField(max_length=10, choices=AgentState.choices)
    reason = models.CharField(max_length=40, blank=True)
    call = models.ForeignKey(
        "agents.Call", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Who made the change when it was not the agent (a supervisor, the system is empty).",
    )  # fmt: skip
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["agent", "-at"], name="agentstatechange_agent_time")]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.state} at {self.at:%Y-%m-%d %H:%M:%S}"


class Call(models.Model):
    """One call as the telephony system reported it."""

    source_system = models.ForeignKey("crm.SourceSystem", on_delete=models.PROTECT, related_name="+")
    telephony_id = models.CharField(max_length=120, help_text="The telephony system's own id of the call.")
    direction = models.CharField(max_length=8, default="inbound")
    ani = models.CharField(max_length=40, help_text="The caller's number as the switch sent it.")
    caller_number = models.CharField(
        max_length=20, blank=True, help_text="ANI in E.164, when it reads as one."
    )
    dnis = models.CharField(max_length=40, blank=True, help_text="The number dialled.")
    queue = models.ForeignKey(Queue, on_delete=models.PROTECT, related_name="calls")
    customer = models.ForeignKey(
        "crm.Customer", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    candidates = models.JSONField(
        default=list, blank=True, help_text="Ids of the customers the number matched, when several did."
    )
    state = models.CharField(max_length=10, choices=CallState.choices, default=CallState.QUEUED)
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls",
        help_text="The agent it rings or is connected to.",
    )  # fmt: skip
    offers = models.PositiveSmallIntegerField(default=0, help_text="How many agents it has rung.")
    arrived_at = models.DateTimeField(default=timezone.now)
    ring_started_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=40, blank=True)
    disposition = models.CharField(max_length=40, blank=True)
    notes = models.TextField(blank=True)
    interaction = models.ForeignKey(
        "crm.Interaction", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The call's entry in the contact history, written at wrap-up.",
    )  # fmt: skip

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source_system", "telephony_id"], name="call_unique_telephony_id"
            ),
        ]
        indexes = [
            # Waiting calls, oldest first, per queue: what a newly free agent takes.
            models.Index(
                fields=["queue", "arrived_at"], condition=models.Q(state="queued"), name="call_waiting"
            ),
            # Ringing calls, for the sweep every two seconds (the table keeps every call ever).
            models.Index(
                fields=["ring_started_at"], condition=models.Q(state="ringing"), name="call_ringing"
            ),
        ]

    def __str__(self) -> str:
        return f"call {self.telephony_id} ({self.state})"


class CallEvent(models.Model):
    """An event the telephony system sent about a call, once per its own id."""

    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="events")
    event_id = models.CharField(max_length=120, help_text="The telephony system's id of this event.")
    kind = models.CharField(max_length=20)
    payload = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["call", "event_id"], name="callevent_unique_event_id")]

    def __str__(self) -> str:
        return f"{self.kind} ({self.event_id})"
