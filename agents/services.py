"""Presence and routing: every write about agents' states and calls.

Two rules hold under any concurrency, and each is kept by row locks taken in
one order (the call first, then the agent):

- a call rings at most one agent at a time, and is connected to at most one;
- an agent is rung by at most one call at a time, and is on at most one.

A call goes to the available agent with the queue's skill who has been idle
longest; with nobody available it waits in its queue, and the next agent of
that queue to become available takes the call that has waited longest. A call
not answered within the queue's ring time moves on to the next agent, and the
agent who missed it is put on a break so that they are not rung again unseen.
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from agents import realtime
from agents.models import (
    Agent,
    AgentState,
    AgentStateChange,
    BreakReason,
    Call,
    CallEvent,
    CallState,
    Disposition,
    Queue,
)
from crm import selectors
from crm import services as crm_services
from crm.exceptions import Conflict
from crm.models import SourceSystem, User
from crm.realtime import batched as realtime_batched
from crm.validation import normalize_phone
from scripting import services as scripting_services

# States an agent may choose for themselves; the others follow from calls.
SELF_STATES = {AgentState.AVAILABLE, AgentState.BREAK, AgentState.OFFLINE}
BUSY_STATES = {AgentState.RINGING, AgentState.ON_CALL}
# Outbound calls and callbacks only 08:00-21:00 on the customer's clock (US TCPA).
CALLING_HOURS = (8, 21)
# Beyond this many matches the pop shows a search instead of a list.
MAX_CANDIDATES = 20


class CallNotFound(Exception):
    """The telephony system named a call the CRM never received."""


# --- Agents --------------------------------------------------------------------------


def agent_for(*, user: User) -> Agent:
    """The user's presence row, created offline on first use."""
    agent, _ = Agent.objects.get_or_create(user=user)
    return agent


def agent_set_state(
    *, user: User, state: str, reason: str = "", by: User | None = None, now: dt.datetime | None = None
) -> Agent:
    """Change an agent's own state (available, a break with its reason, offline).

    1. Lock the agent; refuse a change while a call rings or is connected (the
       call decides: it ends, or moves on).
    2. Record the change; an agent becoming available is idle from now.
    3. Going available takes the longest-waiting call of the agent's queues."""
    if state not in SELF_STATES:
        raise ValidationError({"state": f"Choose one of {', '.join(sorted(SELF_STATES))}."})
    if state == AgentState.BREAK and reason not in BreakReason.values:
        raise ValidationError({"reason": f"Say why: one of {', '.join(BreakReason.values)}."})
    now = now or timezone.now()
    with transaction.atomic(), realtime_batched():
        agent = agent_for(user=user)
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if agent.state in BUSY_STATES and by is None:
            raise Conflict({"state": f"You are {agent.get_state_display().lower()}: finish the call first."})
        if agent.state == AgentState.WRAP_UP and by is None:
            raise Conflict({"state": "Finish the wrap-up first: choose how the call ended."})
        _change(agent, state, reason=reason if state == AgentState.BREAK else "", by=by, now=now)
        if state == AgentState.AVAILABLE:
            _take_waiting_call(agent, now=now)
    return agent


def _change(
    agent: Agent,
    state: str,
    *,
    reason: str = "",
    call: Call | None = None,
    by: User | None = None,
    now: dt.datetime,
) -> None:
    """Write ``agent``'s new state (locked by the caller) and its history row, and
    tell the agent's screens and the floor view once it commits."""
    agent.state = state
    agent.state_since = now
    agent.break_reason = reason if state == AgentState.BREAK else ""
    if state == AgentState.AVAILABLE:
        agent.idle_since = now
        agent.call = None
    elif state in (AgentState.OFFLINE, AgentState.BREAK):
        agent.call = None
    elif call is not None:
        agent.call = call
    agent.save(update_fields=["state", "state_since", "break_reason", "idle_since", "call"])
    AgentStateChange.objects.create(agent=agent, state=state, reason=reason, call=call, changed_by=by, at=now)
    extra: dict[str, Any] = {}
    if state == AgentState.WRAP_UP and call is not None:
        # The wrap-up form needs them at once, whoever ended the call.
        extra["dispositions"] = [{"code": d.code, "label": d.label} for d in dispositions_for(call.queue_id)]
    realtime.agent_state_changed(agent, **extra)


def agent_force_offline(*, user: User, by: User) -> Agent:
    """A supervisor takes an agent off the floor. Never one with a call ringing or
    connected (the caller is real); from a break or wrap-up, yes."""
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent_for(user=user).pk)
        if agent.state in BUSY_STATES:
            raise Conflict(
                {"state": f"{user.get_full_name() or user.username} is on a call: wait for it to end."}
            )
        if agent.state != AgentState.OFFLINE:
            _change(agent, AgentState.OFFLINE, reason="set by supervisor", by=by, now=timezone.now())
    return agent


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


def agent_heartbeat(*, user: User, now: dt.datetime | None = None) -> None:
    """The desk is open: one UPDATE, no lock held beyond it."""
    Agent.objects.filter(user=user).update(heartbeat_at=now or timezone.now())


def agents_gone_quiet(*, silent_seconds: int = 60, now: dt.datetime | None = None) -> int:
    """Agents whose desk stopped beating (browser closed, network gone) while
    available or on a break go offline, so no call rings an empty chair. Agents
    on a call keep it: the call, not the browser, decides."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=silent_seconds)
    quiet = Agent.objects.filter(
        state__in=[AgentState.AVAILABLE, AgentState.BREAK, AgentState.WRAP_UP], heartbeat_at__lt=cutoff
    ).values_list("user_id", flat=True)
    moved = 0
    for user_id in list(quiet):
        with transaction.atomic():
            agent = Agent.objects.select_for_update(skip_locked=True).filter(pk=user_id).first()
            if agent is None or agent.state in BUSY_STATES or agent.heartbeat_at is None:
                continue
            if agent.heartbeat_at >= cutoff:
                continue
            _change(agent, AgentState.OFFLINE, reason="desk closed", now=now)
            moved += 1
    return moved


def agent_sign_out(*, user: User) -> None:
    """Signing out ends availability (a call in progress is the telephony system's)."""
    with transaction.atomic():
        agent = Agent.objects.select_for_update().filter(user=user).first()
        if agent is not None and agent.state not in BUSY_STATES and agent.state != AgentState.OFFLINE:
            _change(agent, AgentState.OFFLINE, reason="signed out", now=timezone.now())


def desk_call_control(*, user: User, call_id: int, kind: str, payload: dict[str, Any] | None = None) -> Call:
    """The agent's desk asks for answer, hold, resume or hang-up on their own call.

    Without a switch in the product, the request is applied as the switch's
    confirmation would be (a real deployment's bridge forwards it and reports
    back through the telephony API; the event id makes either way count once)."""
    call = Call.objects.select_related("source_system").filter(pk=call_id, agent__user=user).first()
    if call is None:
        raise CallNotFound(str(call_id))
    updated, _ = call_event(
        source=call.source_system,
        telephony_id=call.telephony_id,
        event_id=f"desk:{kind}:{call.offers}:{call.events.count()}",
        kind=kind,
        payload=payload,
    )
    return updated


def dispositions_for(queue_id: int) -> list[Disposition]:
    """The queue's own dispositions and those offered in every queue."""
    return list(
        Disposition.objects.filter(active=True)
        .filter(Q(queue_id=queue_id) | Q(queue__isnull=True))
        .order_by("position", "label")
    )


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


def presence_snapshot(*, user: User) -> dict[str, Any]:
    """What a desk shows when it (re)connects: the agent's state and their call."""
    agent = Agent.objects.select_related("call__queue").filter(user=user).first()
    if agent is None:
        return {"state": AgentState.OFFLINE, "since": None, "reason": "", "call": None}
    call = agent.call
    snapshot: dict[str, Any] = {
        "state": agent.state,
        "since": agent.state_since.isoformat(),
        "reason": agent.break_reason,
        "call": realtime.call_shape(call) if call is not None else None,
    }
    if agent.state == AgentState.WRAP_UP and call is not None:
        offered = dispositions_for(call.queue_id)
        snapshot["dispositions"] = [{"code": d.code, "label": d.label} for d in offered]
    return snapshot


# --- Calls ----------------------------------------------------------------------------


def _call_state_commit() -> None:
    """The current transaction's commit returns without waiting for the disk.

    For the telephony system's calls and events only: a commit that waits for the
    write-ahead log's flush (4-8 ms on these disks) was the largest single cost of
    a call on the floor's hot path. The data stays consistent; what a crash of the
    database server itself (not of a web process) may lose is the last fraction
    of a second of call states, which the phone system, the owner of the call,
    reports again. The call's contact history, written at wrap-up, and every other
    write keep synchronous commits."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")


def call_arrive(
    *,
    source: SourceSystem,
    telephony_id: str,
    ani: str,
    dnis: str = "",
    queue_code: str,
    now: dt.datetime | None = None,
) -> tuple[Call, bool]:
    """A new inbound call: match the caller, then ring the longest-idle agent of
    the queue, or wait in it. Sent twice, the same call is returned (False).

    The hot path of the floor (a phone system at 50 calls a second): the call is
    inserted and routed in one statement (``_ARRIVE_SQL``) without looking for it
    first; a repeat inserts nothing. The frames to the desks leave together after
    the statement's commit."""
    queue = Queue.objects.filter(code=queue_code, active=True).first()
    if queue is None:
        raise ValidationError({"queue": f"No active queue “{queue_code}”: use the code of an active queue."})
    now = now or timezone.now()
    caller_number, customer_ids = _match_caller(ani)
    with realtime_batched():
        call = _insert_and_ring(
            source=source, telephony_id=telephony_id, ani=ani[:40], caller_number=caller_number,
            dnis=dnis[:40], queue=queue, customer_ids=customer_ids, now=now,
        )  # fmt: skip
        if call is None:
            existing = (
                Call.objects.select_related("queue", "agent__user")
                .filter(source_system=source, telephony_id=telephony_id)
                .get()
            )
            return existing, False
        if call.agent is not None:
            realtime.agent_state_changed(call.agent)
            realtime.call_offered(call)
        else:
            realtime.queue_changed(queue.pk)  # a new call joins the queue
    return call, True


# One statement, one round trip: take the longest-idle available agent of the
# queue (skipping one another transaction holds), insert the call ringing them
# (or waiting, with nobody free; nothing when the call id is known already), put
# the agent in the ringing state and keep the change. It is what ``_route`` and
# ``_ring`` do for a call that exists, written out for the arrival: at 50 calls a
# second the ORM's seven statements (BEGIN to COMMIT) were most of a call's time.
# Its commit does not wait for the disk (``_call_state_commit``).
_ARRIVE_SQL = """
WITH picked AS (
    SELECT a.user_id FROM agents_agent a
    JOIN agents_agent_queues q ON q.agent_id = a.user_id AND q.queue_id = %(queue)s
    WHERE a.state = %(available)s
    ORDER BY a.idle_since, a.user_id
    LIMIT 1
    FOR UPDATE OF a SKIP LOCKED
), inserted AS (
    INSERT INTO agents_call (
        source_system_id, telephony_id, direction, ani, caller_number, dnis, queue_id, customer_id,
        candidates, state, agent_id, offers, arrived_at, ring_started_at, end_reason, disposition, notes
    )
    SELECT %(source)s, %(telephony_id)s, 'inbound', %(ani)s, %(caller_number)s, %(dnis)s, %(queue)s,
        %(customer)s, %(candidates)s::jsonb,
        CASE WHEN p.user_id IS NULL THEN %(queued)s ELSE %(ringing)s END, p.user_id,
        CASE WHEN p.user_id IS NULL THEN 0 ELSE 1 END, %(now)s,
        CASE WHEN p.user_id IS NULL THEN NULL ELSE %(now)s END, '', '', ''
    FROM (SELECT 1) AS one LEFT JOIN picked p ON TRUE
    ON CONFLICT (source_system_id, telephony_id) DO NOTHING
    RETURNING id, agent_id
), rung AS (
    UPDATE agents_agent a SET state = %(ringing)s, state_since = %(now)s, break_reason = '', call_id = i.id
    FROM inserted i WHERE a.user_id = i.agent_id
    RETURNING a.user_id, a.idle_since, a.heartbeat_at
), logged AS (
    INSERT INTO agents_agentstatechange (agent_id, state, reason, call_id, changed_by_id, at)
    SELECT r.user_id, %(ringing)s, '', i.id, NULL, %(now)s FROM rung r CROSS JOIN inserted i
)
SELECT i.id, r.user_id, r.idle_since, r.heartbeat_at, u.username,
    set_config('synchronous_commit', 'off', true)
FROM inserted i LEFT JOIN rung r ON TRUE LEFT JOIN crm_user u ON u.id = r.user_id
"""


def _insert_and_ring(
    *, source: SourceSystem, telephony_id: str, ani: str, caller_number: str, dnis: str, queue: Queue,
    customer_ids: list[int], now: dt.datetime,
) -> Call | None:  # fmt: skip
    """The new call (ringing its agent, or waiting), or None when the telephony
    system reported this call id before."""
    customer_id = customer_ids[0] if len(customer_ids) == 1 else None
    candidates = customer_ids[:MAX_CANDIDATES] if len(customer_ids) > 1 else []
    with connection.cursor() as cursor:
        cursor.execute(
            _ARRIVE_SQL,
            {
                "queue": queue.pk, "source": source.pk, "telephony_id": telephony_id, "ani": ani,
                "caller_number": caller_number, "dnis": dnis, "customer": customer_id,
                "candidates": json.dumps(candidates), "now": now, "available": AgentState.AVAILABLE,
                "queued": CallState.QUEUED, "ringing": CallState.RINGING,
            },
        )  # fmt: skip
        row = cursor.fetchone()
    if row is None:
        return None
    call_id, agent_id, idle_since, heartbeat_at, username, _ = row
    call = Call(
        pk=call_id, source_system=source, telephony_id=telephony_id, ani=ani, caller_number=caller_number,
        dnis=dnis, queue=queue, customer_id=customer_id, candidates=candidates,
        state=CallState.QUEUED if agent_id is None else CallState.RINGING,
        offers=0 if agent_id is None else 1, arrived_at=now,
        ring_started_at=None if agent_id is None else now,
    )  # fmt: skip
    call._state.adding = False
    if agent_id is not None:
        agent = Agent(
            user=User(pk=agent_id, username=username), state=AgentState.RINGING, state_since=now,
            break_reason="", idle_since=idle_since, heartbeat_at=heartbeat_at, call=call,
        )  # fmt: skip
        agent._state.adding = False
        call.agent = agent
    return call


def _match_caller(ani: str) -> tuple[str, list[int]]:
    try:
        number = normalize_phone(ani)
    except ValidationError:
        return "", []  # withheld or unreadable: a new-customer form without a number
    ids = sorted(selectors.customers_by_phone(number).values_list("pk", flat=True))
    return number, ids


def _route(call: Call, *, now: dt.datetime, new: bool = False) -> None:
    """Ring the longest-idle available agent with the call's queue, if any (the
    call is locked, or new, in the caller's transaction)."""
    agent = (
        # Skip an agent another transaction holds: it is being rung, or changing state.
        Agent.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("user")  # the API's answer names the agent
        .filter(state=AgentState.AVAILABLE, queues=call.queue)
        .order_by("idle_since", "pk")
        .first()
    )
    if agent is None:
        if call.state != CallState.QUEUED or call.agent_id is not None:
            call.state = CallState.QUEUED
            call.agent = None
            call.save(update_fields=["state", "agent"])
            realtime.queue_changed(call.queue_id)
        elif new:
            realtime.queue_changed(call.queue_id)  # a new call joins the queue
        return
    _ring(call, agent, now=now)


def _ring(call: Call, agent: Agent, *, now: dt.datetime) -> None:
    call.state = CallState.RINGING
    call.agent = agent
    call.offers += 1
    call.ring_started_at = now
    call.save(update_fields=["state", "agent", "offers", "ring_started_at"])
    _change(agent, AgentState.RINGING, call=call, now=now)
    realtime.call_offered(call)
    # No timer message per call: the beat's sweep (every two seconds) moves on a
    # ring that has lasted longer than the queue allows. A countdown task per
    # call cost a broker round trip on the hot path of every arrival.


def _take_waiting_call(agent: Agent, *, now: dt.datetime) -> None:
    """The agent (locked, just available) takes the longest-waiting call of their queues."""
    call = (
        Call.objects.select_for_update(skip_locked=True)
        .filter(state=CallState.QUEUED, queue__in=agent.queues.all())
        .order_by("arrived_at", "pk")
        .first()
    )
    if call is not None:
        _ring(call, agent, now=now)
        realtime.queue_changed(call.queue_id)


def call_attach_customer(*, call_id: int, customer_id: int) -> None:
    """The agent found or created the caller's record: the call (and its wrap-up
    entry in the contact history) belongs to that customer."""
    Call.objects.filter(pk=call_id, customer__isnull=True).update(customer_id=customer_id, candidates=[])


def call_ring_timeout(*, call_id: int, offer: int, now: dt.datetime | None = None) -> bool:
    """The ``offer``-th ring of the call went unanswered: put that agent on a break
    (missed call) and ring the next. False when the call has moved on since."""
    now = now or timezone.now()
    with transaction.atomic():
        call = Call.objects.select_for_update().filter(pk=call_id).first()
        if call is None or call.state != CallState.RINGING or call.offers != offer or call.agent_id is None:
            return False
        agent = Agent.objects.select_for_update().get(pk=call.agent_id)
        _change(agent, AgentState.BREAK, reason=BreakReason.MISSED_CALL, now=now)
        _route(call, now=now)
    return True


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


# The telephony events a call accepts in each state: anything else is out of order.
_ALLOWED: dict[str, set[str]] = {
    "answered": {CallState.RINGING},
    "held": {CallState.CONNECTED},
    "resumed": {CallState.HELD},
    "transferred": {CallState.CONNECTED, CallState.HELD},
    "ended": {CallState.QUEUED, CallState.RINGING, CallState.CONNECTED, CallState.HELD},
}
CALL_EVENTS = tuple(_ALLOWED)


def call_event(
    *,
    source: SourceSystem,
    telephony_id: str,
    event_id: str,
    kind: str,
    payload: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> tuple[Call, bool]:
    """Apply one event the telephony system sent about a call; once per event id.

    1. Lock the call; an unknown call is CallNotFound, an event already applied
       returns the call unchanged (False).
    2. Refuse an event the call's state does not allow (a Conflict naming both),
       changing nothing.
    3. Apply it: answered connects the ringing agent; held and resumed; transferred
       to a queue routes it again; ended frees the agent into wrap-up."""
    if kind not in _ALLOWED:
        raise ValidationError({"kind": f"“{kind}” is not a call event: use one of {', '.join(CALL_EVENTS)}."})
    payload = payload or {}
    now = now or timezone.now()
    with transaction.atomic(), realtime_batched():
        _call_state_commit()
        call = (
            Call.objects.select_for_update(of=("self",))
            .select_related("queue", "agent__user")
            .filter(source_system=source, telephony_id=telephony_id)
            .first()
        )
        if call is None:
            raise CallNotFound(telephony_id)
        if CallEvent.objects.filter(call=call, event_id=event_id).exists():
            return call, False
        if call.state not in _ALLOWED[kind]:
            raise Conflict(
                {"kind": f"The call is {call.get_state_display().lower()}: “{kind}” cannot happen now."}
            )
        CallEvent.objects.create(call=call, event_id=event_id, kind=kind, payload=payload, at=now)
        agent = Agent.objects.select_for_update().get(pk=call.agent_id) if call.agent_id else None
        if kind == "answered":
            call.state = CallState.CONNECTED
            call.answered_at = now
            if agent is not None:
                _change(agent, AgentState.ON_CALL, call=call, now=now)
        elif kind == "held":
            call.state = CallState.HELD
        elif kind == "resumed":
            call.state = CallState.CONNECTED
        elif kind == "transferred":
            _transfer(call, agent, payload, now=now)
        elif kind == "ended":
            was = call.state
            call.state = CallState.ENDED
            call.ended_at = now
            call.end_reason = "abandoned" if was in (CallState.QUEUED, CallState.RINGING) else "completed"
            if agent is not None:
                if was == CallState.RINGING:
                    _change(agent, AgentState.AVAILABLE, now=now)
                    _take_waiting_call(agent, now=now)
                else:
                    _change(agent, AgentState.WRAP_UP, call=call, now=now)
            if was == CallState.QUEUED:
                realtime.queue_changed(call.queue_id)
        call.save()
        realtime.call_changed(call)
    return call, True


def _transfer(call: Call, agent: Agent | None, payload: dict[str, Any], *, now: dt.datetime) -> None:
    """To a queue (routed there like a new call) or to a named agent, who must be
    available and have the queue's skill; a refused transfer changes nothing (the
    caller's transaction rolls back, the event included)."""
    queue_code = payload.get("queue")
    username = payload.get("agent")
    if not queue_code and not username:
        raise ValidationError(
            {"queue": "Name the queue (queue) or the agent (agent) the call is transferred to."}
        )
    queue = call.queue
    if queue_code:
        found = Queue.objects.filter(code=queue_code, active=True).first()
        if found is None:
            raise ValidationError({"queue": f"No active queue “{queue_code}”."})
        queue = found
    target = _transfer_target(str(username), queue, current=agent) if username else None
    if agent is not None:
        _change(agent, AgentState.WRAP_UP, call=call, now=now)
    call.queue = queue
    call.agent = None
    call.answered_at = None
    call.arrived_at = now  # its wait in the new queue starts now
    if target is not None:
        _ring(call, target, now=now)
    else:
        _route(call, now=now)


def _transfer_target(username: str, queue: Queue, *, current: Agent | None) -> Agent:
    """The named agent, locked, if they may take the call now; else why not."""
    user = User.objects.filter(username=username, is_active=True, agent__isnull=False).first()
    if user is None:
        raise ValidationError(
            {"agent": f"No agent “{username}”: give the user name of an agent on the floor."}
        )
    name = user.get_full_name() or user.username
    if current is not None and current.pk == user.pk:
        raise Conflict({"agent": "The call is already yours: transfer it to someone else."})
    # Skip a row another transaction holds (that agent is being rung, or changing
    # state): two agents transferring to each other at once must not deadlock.
    target = (
        Agent.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("user")
        .filter(pk=user.pk)
        .first()
    )
    if target is None or target.state != AgentState.AVAILABLE:
        state = target.get_state_display().lower() if target is not None else "busy"
        raise Conflict(
            {"agent": f"{name} is {state}, not available: transfer to an available agent or to the queue."}
        )
    if not target.queues.filter(pk=queue.pk).exists():
        raise Conflict(
            {"agent": f"{name} does not answer {queue.name} calls: choose an agent with that skill."}
        )
    return target


def transfer_targets(*, user: User) -> dict[str, Any]:
    """Where the agent's connected call may go: available agents with its queue's
    skill (longest idle first) and the active queues."""
    agent = Agent.objects.select_related("call__queue").filter(user=user).first()
    call = agent.call if agent is not None else None
    if call is None or call.state not in (CallState.CONNECTED, CallState.HELD):
        return {"agents": [], "queues": []}
    agents = (
        Agent.objects.filter(state=AgentState.AVAILABLE, queues=call.queue_id)
        .exclude(pk=user.pk)
        .select_related("user")
        .order_by("idle_since", "pk")[:50]
    )
    return {
        "agents": [{"username": a.user.username, "name": a.user.get_full_name() or a.user.username}
                   for a in agents],
        "queues": [{"code": q.code, "name": q.name} for q in Queue.objects.filter(active=True)],
    }  # fmt: skip
