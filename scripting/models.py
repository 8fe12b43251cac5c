"""Call scripts: scripts, their numbered versions, where they run, and runs with their answers.

Why a version's flow is one validated JSON document (``ScriptVersion.graph``)
and not rows of steps, questions, branches and actions:

- A published version is read whole, by one primary-key fetch, on every step
  an agent takes; the runner, the validator, the diagram and the diff all work
  on the whole graph, never on one step alone.
- Immutability is one rule on one row: a PostgreSQL trigger (migration
  ``0002_published_versions_are_immutable``) refuses any UPDATE of a published
  or retired version's graph, number or script, and any DELETE of it. With
  child rows the same guarantee needs a trigger per table and a join back to
  the version on every write.
- ``scripting.validation`` checks the document's shape (keys, types, settings)
  before it is stored, so a graph in the database is always well formed.

What analytics count is relational: one ``Run`` per script run on a call (its
version, path and outcome) and one ``Answer`` per question answered, so
completion, drop-off, time per step and answer distributions are plain queries
over indexed columns of one version's runs.

Apps: scripting imports crm (and policies for offers) only. A call and its queue
live in agents, which imports scripting; so a run keeps the call's id, and an
assignment the queue's code, as plain values (as crm's Interaction keeps
``script_run_id``).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from crm.models.holdings import code_validator


class Script(models.Model):
    """A named script; its content lives in its versions."""

    code = models.CharField(max_length=40, unique=True, validators=[code_validator])
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        permissions = [("view_script_analytics", "Can see script analytics")]

    def __str__(self) -> str:
        return self.name


class VersionStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"
    RETIRED = "retired", "Retired"


class ScriptVersion(models.Model):
    """One version of a script's flow.

    A draft (at most one per script, no number) is what the designer edits.
    Publishing gives it the next number and freezes it; from then on the
    database refuses any change to its graph (see the module docstring). Retiring
    only stops new runs: runs already on it finish on it."""

    script = models.ForeignKey(Script, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField(null=True, blank=True, help_text="1, 2, ... once published.")
    status = models.CharField(max_length=10, choices=VersionStatus.choices, default=VersionStatus.DRAFT)
    graph = models.JSONField(default=dict, help_text="Steps, questions, branches, actions (validated).")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["script", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["script", "number"], name="scriptversion_unique_number"),
            models.UniqueConstraint(
                fields=["script"], condition=models.Q(status="draft"), name="scriptversion_one_draft"
            ),
            models.CheckConstraint(
                name="scriptversion_numbered_unless_draft",
                condition=models.Q(status="draft", number__isnull=True)
                | (~models.Q(status="draft") & models.Q(number__isnull=False)),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.script_id} v{self.number}" if self.number else f"{self.script_id} draft"

    @property
    def label(self) -> str:
        return f"v{self.number}" if self.number else "draft"


class Direction(models.TextChoices):
    ANY = "", "Any direction"
    INBOUND = "inbound", "Inbound"
    OUTBOUND = "outbound", "Outbound"


class Assignment(models.Model):
    """Which script runs for a queue, a campaign and a call direction; a blank
    value matches any. The most specific match wins (queue, then campaign, then
    direction), and the script's newest published version is the one started."""

    queue_code = models.CharField(max_length=40, blank=True, help_text="A queue's code; blank: any queue.")
    campaign_code = models.CharField(max_length=40, blank=True, help_text="Blank: any campaign or none.")
    direction = models.CharField(max_length=8, choices=Direction.choices, blank=True)
    script = models.ForeignKey(Script, on_delete=models.CASCADE, related_name="assignments")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["queue_code", "campaign_code", "direction"]
        constraints = [
            models.UniqueConstraint(
                fields=["queue_code", "campaign_code", "direction"], name="assignment_unique_target"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.queue_code or '*'}/{self.campaign_code or '*'}/{self.direction or '*'}"


class RunStatus(models.TextChoices):
    ACTIVE = "active", "In progress"
    COMPLETED = "completed", "Completed"
    ABANDONED = "abandoned", "Abandoned"


class Run(models.Model):
    """One script run on a call (or on a customer's screen without a call).

    ``path`` is the steps visited, in order, ending with the current one (back
    removes the last); ``visits`` keeps every arrival at a step with its time,
    including steps later left by back, for time per step and drop-off."""

    version = models.ForeignKey(ScriptVersion, on_delete=models.PROTECT, related_name="runs")
    customer = models.ForeignKey("crm.Customer", on_delete=models.CASCADE, related_name="+")
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    call_id = models.BigIntegerField(null=True, blank=True, help_text="The agents app's call, if any.")
    queue_code = models.CharField(max_length=40, blank=True)
    campaign_code = models.CharField(max_length=40, blank=True)
    direction = models.CharField(max_length=8, blank=True)
    call_facts = models.JSONField(
        default=dict, blank=True, help_text="The call's merge fields, copied at start: no query per step."
    )
    interaction = models.ForeignKey(
        "crm.Interaction", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The contact-history entry the answers are shown in.",
    )  # fmt: skip
    current_step = models.CharField(max_length=40)
    path = ArrayField(models.CharField(max_length=40), default=list)
    visits = models.JSONField(default=list, help_text='[["step", "ISO time"], ...] every arrival.')
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.ACTIVE)
    disposition = models.CharField(max_length=40, blank=True, help_text="Set by a record_disposition action.")
    offers_accepted = ArrayField(models.CharField(max_length=40), default=list, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The screen: this agent's run in progress for this customer.
            models.Index(
                fields=["customer", "agent"], condition=models.Q(status="active"), name="run_active"
            ),
            models.Index(fields=["version", "status"], name="run_by_version"),
            models.Index(fields=["call_id"], name="run_by_call"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.version}"


class Answer(models.Model):
    """The latest answer to one question in one run (a changed answer replaces it)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="answers")
    step = models.CharField(max_length=40)
    question = models.CharField(max_length=40)
    label = models.CharField(max_length=200, blank=True, help_text="The question as asked, for the history.")
    value = models.JSONField(help_text="Typed: true/false, text, a number, a list of choices, an ISO date.")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "question"], name="answer_one_per_question"),
        ]

    def __str__(self) -> str:
        return f"{self.question}={self.value!r}"
