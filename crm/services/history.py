"""Contact history and the follow-up work (tasks) it leads to."""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from crm import events, realtime
from crm.exceptions import Conflict
from crm.models import Interaction, SourceSystem, Task, User
from crm.models.choices import TaskStatus
from crm.services.events import business_event_record
from crm.services.sources import crm_source

# --- Contact history ---------------------------------------------------------------


def interaction_record(
    *,
    customer_id: int,
    channel: str,
    direction: str,
    occurred_at: dt.datetime,
    source: SourceSystem | None = None,
    external_id: str = "",
    agent: User | None = None,
    actor: User | None = None,
    campaign_code: str = "",
    disposition: str = "",
    subject: str = "",
    notes: str = "",
    duration_seconds: int | None = None,
    script_run_id: int | None = None,
) -> tuple[Interaction, bool]:
    """Record one contact. A repeat of (source, external_id) for the same customer
    returns the first, unchanged; for another customer it is a Conflict (returning
    the first would hand one customer's contact to a caller asking about another).

    ``actor`` is who recorded it (an integration's user, say); when not given, the
    agent who handled the contact is."""
    source = source or crm_source()
    if external_id:
        existing = Interaction.objects.filter(source_system=source, external_id=external_id).first()
        if existing is not None:
            return _repeat_of(existing, customer_id), False
    if occurred_at.tzinfo is None:
        raise ValidationError({"occurred_at": "Give the time with a time zone (e.g. …Z or +02:00)."})
    if occurred_at > timezone.now() + dt.timedelta(minutes=5):
        raise ValidationError({"occurred_at": "The contact is dated in the future: check the time."})
    interaction = Interaction(
        customer_id=customer_id, channel=channel, direction=direction, occurred_at=occurred_at,
        source_system=source, external_id=external_id, agent=agent, campaign_code=campaign_code,
        disposition=disposition, subject=subject, notes=notes, duration_seconds=duration_seconds,
        script_run_id=script_run_id,
    )  # fmt: skip
    interaction.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            interaction.save()
            business_event_record(
                type=events.INTERACTION_RECORDED.name, customer_id=customer_id, occurred_at=occurred_at,
                payload={"channel": channel, "direction": direction, "disposition": disposition},
                source=source, idempotency_key=f"interaction.recorded:{interaction.pk}",
                actor=actor or agent,
            )  # fmt: skip
    except IntegrityError:
        # Another worker recorded the same (source, external_id) between our check and insert.
        if not external_id:
            raise
        first = Interaction.objects.filter(source_system=source, external_id=external_id).first()
        if first is None:  # not the key after all (an unknown customer, say)
            raise
        return _repeat_of(first, customer_id), False
    realtime.send_on_commit(
        realtime.customer_group(customer_id), realtime.interaction_recorded(customer_id, interaction.pk)
    )
    return interaction, True


def _repeat_of(first: Interaction, customer_id: int) -> Interaction:
    if first.customer_id != customer_id:
        raise Conflict(
            {
                "external_id": (
                    f"Your source system already used “{first.external_id}” for a contact of another "
                    "customer record: give each contact its own external_id, or record it on that "
                    "customer."
                )
            }
        )
    return first


# --- Tasks --------------------------------------------------------------------------------


def task_create(
    *,
    customer_id: int,
    kind: str,
    title: str,
    description: str = "",
    priority: int = 3,
    due_at: dt.datetime | None = None,
    assigned_to: User | None = None,
    created_by: User | None = None,
    origin: str = "",
    queue: str = "",
) -> Task:
    """A task; ``queue``: unassigned work for the agents of that call queue (a code)."""
    task = Task(
        customer_id=customer_id, kind=kind, title=title.strip(), description=description, priority=priority,
        due_at=due_at, assigned_to=assigned_to, created_by=created_by, origin=origin, queue=queue,
    )  # fmt: skip
    task.full_clean()
    task.save()
    if assigned_to is not None:
        realtime.send_on_commit(
            realtime.agent_group(assigned_to.pk),
            {"type": "crm.event", "event": "task.assigned", "task_id": task.pk, "customer_id": customer_id},
        )
    return task


def task_set_status(*, task_id: int, status: str, actor: User | None = None) -> Task:
    if status not in TaskStatus.values:
        raise ValidationError({"status": f"Use one of: {', '.join(TaskStatus.values)}."})
    with transaction.atomic():
        task = Task.objects.select_for_update().get(pk=task_id)
        task.status = status
        task.completed_at = timezone.now() if status in (TaskStatus.DONE, TaskStatus.CANCELLED) else None
        task.save(update_fields=["status", "completed_at"])
    return task


# An overdue callback first goes to anyone who can take it, then to the top of the list.
ESCALATE_TO_ANYONE_AFTER = dt.timedelta(minutes=15)
ESCALATE_TO_TOP_AFTER = dt.timedelta(minutes=60)


def tasks_escalate_overdue(*, now: dt.datetime | None = None) -> list[Task]:
    """Escalate open callbacks that nobody called back in time.

    1. Overdue by ESCALATE_TO_ANYONE_AFTER and still assigned: unassigned, so
       any agent of the floor can take it (the owner is told).
    2. Overdue by ESCALATE_TO_TOP_AFTER: priority 1, which puts it first in
       every work list and on the supervisors' floor.
    Each step changes a row once, so running this every minute is harmless.
    Returns the tasks changed."""
    now = now or timezone.now()
    open_callbacks = Task.objects.filter(
        kind="callback", status__in=[TaskStatus.OPEN, TaskStatus.IN_PROGRESS], due_at__isnull=False
    )
    changed: list[Task] = []
    with transaction.atomic():
        to_anyone = open_callbacks.select_for_update(skip_locked=True).filter(
            assigned_to__isnull=False, due_at__lt=now - ESCALATE_TO_ANYONE_AFTER
        )
        for task in to_anyone:
            owner = task.assigned_to_id
            task.assigned_to = None
            task.save(update_fields=["assigned_to"])
            realtime.send_on_commit(
                realtime.agent_group(owner),  # type: ignore[arg-type]
                {
                    "type": "crm.event",
                    "event": "task.escalated",
                    "task_id": task.pk,
                    "customer_id": task.customer_id,
                },
            )
            changed.append(task)
        to_top = open_callbacks.select_for_update(skip_locked=True).filter(
            priority__gt=1, due_at__lt=now - ESCALATE_TO_TOP_AFTER
        )
        for task in to_top:
            task.priority = 1
            task.save(update_fields=["priority"])
            changed.append(task)
    return changed
