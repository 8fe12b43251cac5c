"""After the call: wrap-up with a disposition, notes and a callback; the call
entering the contact history; overdue wrap-ups, due callbacks and the sweep
that moves unanswered rings on."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from agents import realtime
from agents.models import (
    Agent,
    AgentState,
    Call,
    CallState,
)
from agents.services.calls import _route, _take_waiting_call, call_ring_timeout
from agents.services.presence import CALLING_HOURS, _change, dispositions_for
from crm import services as crm_services
from crm.exceptions import Conflict
from crm.models import User
from crm.realtime import batched as realtime_batched
from scripting import services as scripting_services


def callbacks_due(*, now: dt.datetime | None = None, window: dt.timedelta = dt.timedelta(minutes=1)) -> int:
    """Every minute: each callback that fell due in the last minute pops up on its
    agent's desk; overdue ones are escalated (crm.services.tasks_escalate_overdue)."""
    from crm.models import Task  # noqa: PLC0415  (crm's model, read here only)

    now = now or timezone.now()
    due = Task.objects.filter(
        kind="callback", status="open", assigned_to__isnull=False, due_at__gt=now - window, due_at__lte=now
    ).values("pk", "customer_id", "assigned_to_id", "title")
    told = 0
    for task in due:
        realtime.callback_due(agent_id=task["assigned_to_id"], task_id=task["pk"],
                              customer_id=task["customer_id"], title=task["title"])  # fmt: skip
        told += 1
    escalated = crm_services.tasks_escalate_overdue(now=now)
    if escalated:
        realtime.queue_changed(0)  # the floor re-reads itself
    return told + len(escalated)


def call_wrap_up(
    *,
    user: User,
    disposition: str,
    notes: str = "",
    callback_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> Agent:
    """The agent finishes after-call work.

    1. Lock the agent (in wrap-up) and read its call.
    2. Check the disposition is one the call's queue offers, and a callback is
       in the future and within calling hours on the customer's clock.
    3. Record the call in the customer's contact history (phone, inbound, its
       length, the agent, the disposition, the notes), once per call.
    4. A do-not-call disposition sets the customer's consent; a callback becomes
       a task for this agent at that time.
    5. The agent is available again and takes the longest-waiting call."""
    now = now or timezone.now()
    with transaction.atomic(), realtime_batched():
        agent = Agent.objects.select_for_update().filter(user=user).first()
        if agent is None or agent.state != AgentState.WRAP_UP or agent.call_id is None:
            raise Conflict({"state": "You are not wrapping up a call."})
        call = (
            Call.objects.select_for_update(of=("self",))
            .select_related("queue", "customer", "source_system")
            .get(pk=agent.call_id)
        )
        chosen = next((d for d in dispositions_for(call.queue_id) if d.code == disposition), None)
        if chosen is None:
            offered = ", ".join(d.code for d in dispositions_for(call.queue_id)) or "none configured"
            raise ValidationError({"disposition": f"Choose how the call ended: one of {offered}."})
        customer = call.customer
        if callback_at is not None:
            _check_callback(callback_at, zone=customer.time_zone if customer else "", now=now)
        call.disposition = chosen.code
        call.notes = notes.strip()
        if customer is not None:
            call.interaction = _record_call(
                call, user=user, disposition=chosen.code, notes=call.notes, now=now
            )
            if chosen.sets_do_not_call and not customer.do_not_call:
                crm_services.customer_update(
                    customer_id=customer.pk, expected_version=customer.version,
                    changes={"do_not_call": True}, actor=user,
                )  # fmt: skip
            if callback_at is not None:
                crm_services.task_create(
                    customer_id=customer.pk, kind="callback", title=f"Call back {customer.display_name}",
                    description=call.notes, due_at=callback_at, assigned_to=user, created_by=user,
                    origin=f"call:{call.pk}",
                )  # fmt: skip
        call.save(update_fields=["disposition", "notes", "interaction"])
        _change(agent, AgentState.AVAILABLE, now=now)
        _take_waiting_call(agent, now=now)
    return agent


def wrap_up_zone(*, user: User) -> str:
    """The clock a callback is typed on: the customer's of the call in wrap-up."""
    zone = (
        Agent.objects.filter(user=user, call__customer__isnull=False)
        .values_list("call__customer__time_zone", flat=True)
        .first()
    )
    return zone or "UTC"


def wrap_ups_overdue(*, now: dt.datetime | None = None) -> int:
    """After-call work past its queue's limit ends by itself: the call goes into
    the contact history without an outcome (the agent may add notes later), and
    the agent is available again, so the queue is not left waiting on a form."""
    now = now or timezone.now()
    finished = 0
    wrapping = Agent.objects.filter(state=AgentState.WRAP_UP, call__isnull=False).select_related(
        "call__queue"
    )
    for agent in wrapping:
        call = agent.call
        if call is None or now - agent.state_since <= dt.timedelta(seconds=call.queue.wrap_up_seconds):
            continue
        with transaction.atomic():
            locked = Agent.objects.select_for_update(skip_locked=True).filter(pk=agent.pk).first()
            if locked is None or locked.state != AgentState.WRAP_UP or locked.call_id != call.pk:
                continue
            _record_call(call, user=locked.user, disposition="", notes="", now=now)
            _change(locked, AgentState.AVAILABLE, reason="wrap-up time over", now=now)
            _take_waiting_call(locked, now=now)
            finished += 1
    return finished


def _record_call(call: Call, *, user: User, disposition: str, notes: str, now: dt.datetime) -> Any:
    """The call's entry in its customer's contact history, and its business
    events for the policies: ``call.ended`` and, when the agent chose one,
    ``call.disposition`` (each once per call: keyed by the telephony system's id)."""
    customer = call.customer
    if customer is None:
        return None
    answered = call.answered_at or call.arrived_at
    ended = call.ended_at or now
    duration = max(0, int((ended - answered).total_seconds()))
    interaction, _ = crm_services.interaction_record(
        customer_id=customer.pk, channel="phone", direction=call.direction, occurred_at=answered,
        source=call.source_system, external_id=f"call:{call.telephony_id}", agent=user,
        disposition=disposition, subject=f"Call · {call.queue.name}", notes=notes,
        duration_seconds=duration, script_run_id=scripting_services.run_for_call(call_id=call.pk),
    )  # fmt: skip
    Call.objects.filter(pk=call.pk).update(interaction=interaction)
    # The call's script answers are shown in this entry; a run left unfinished ends here.
    scripting_services.runs_link_interaction(call_id=call.pk, interaction=interaction)
    ended_payload = {"call_id": call.telephony_id, "direction": call.direction, "duration_seconds": duration,
                     "queue": call.queue.code, "agent": user.username}  # fmt: skip
    facts: list[tuple[str, dict[str, Any]]] = [("call.ended", ended_payload)]
    if disposition:
        facts.append(
            (
                "call.disposition",
                {"disposition": disposition, "call_id": call.telephony_id, "agent": user.username},
            )
        )
    for event_type, payload in facts:
        crm_services.business_event_record(
            type=event_type, occurred_at=ended, payload=payload, source=call.source_system,
            idempotency_key=f"call:{call.telephony_id}:{event_type}", customer_id=customer.pk, actor=user,
        )  # fmt: skip
    return interaction


def _check_callback(when: dt.datetime, *, zone: str, now: dt.datetime) -> None:
    if timezone.is_naive(when):
        raise ValidationError({"callback_at": "Give the callback time with its zone."})
    if when <= now:
        raise ValidationError({"callback_at": "The callback time has passed: choose a time ahead."})
    try:
        local = when.astimezone(zoneinfo.ZoneInfo(zone)) if zone else when
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        local = when
    if not CALLING_HOURS[0] <= local.hour < CALLING_HOURS[1]:
        raise ValidationError(
            {
                "callback_at": f"That is {local:%H:%M} for the customer ({zone or 'UTC'}): calls are allowed "
                f"{CALLING_HOURS[0]:02d}:00-{CALLING_HOURS[1]:02d}:00 their time."
            }
        )


def calls_sweep(*, now: dt.datetime | None = None) -> int:
    """Beat's pass every two seconds: a call that has rung as long as its queue
    allows moves on to the next agent, and a waiting call is
    offered to an available agent the router skipped while another transaction
    held that agent's row. Returns how many calls moved."""
    now = now or timezone.now()
    moved = 0
    for call in Call.objects.filter(state=CallState.RINGING).select_related("queue"):
        started = call.ring_started_at or call.arrived_at
        if now - started >= dt.timedelta(seconds=call.queue.ring_seconds):
            moved += call_ring_timeout(call_id=call.pk, offer=call.offers, now=now)
    moved += wrap_ups_overdue(now=now)
    waiting = Call.objects.filter(state=CallState.QUEUED).order_by("arrived_at").values_list("pk", flat=True)
    for call_id in waiting[:200]:
        with transaction.atomic():
            locked = (
                # The call's row only: a lock on its queue's row would serialize the queue.
                Call.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(pk=call_id, state=CallState.QUEUED)
                .select_related("queue")
                .first()
            )
            if locked is not None:
                _route(locked, now=now)
                moved += locked.state == CallState.RINGING
    return moved
