"""Calls from the telephony system: arrival and routing to the longest-idle
agent with the skill, ringing and its timeout, call events (answered, held,
resumed, transferred, ended), transfers and the desk's call controls."""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from agents import realtime
from agents.models import (
    Agent,
    AgentState,
    BreakReason,
    Call,
    CallEvent,
    CallState,
    Queue,
)
from agents.services.presence import MAX_CANDIDATES, CallNotFound, _change
from crm import selectors
from crm.exceptions import Conflict
from crm.models import SourceSystem, User
from crm.realtime import batched as realtime_batched
from crm.validation import normalize_phone


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


# --- Calls ----------------------------------------------------------------------------


# Call-state commits do not wait for the disk. For the telephony system's calls and
# events only: a commit that waits for the write-ahead log's flush (4-8 ms on these
# disks) was the largest single cost of a call on the floor's hot path. The data stays
# consistent; what a crash of the database server itself (not of a web process) may
# lose is the last fraction of a second of call states, which the phone system, the
# owner of the call, reports again. The call's contact history, written at wrap-up, and
# every other write keep synchronous commits. Each hot statement says it itself
# (``set_config('synchronous_commit', 'off', true)``, i.e. SET LOCAL) instead of
# paying a round trip for it.


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
    queue = _active_queue(queue_code)
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
            realtime.agent_state_changed(call.agent, desk=False)  # the pop tells the desk
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
# Its commit does not wait for the disk (see call-state commits above).
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
    return number, selectors.customer_ids_by_phone(number)


@functools.cache
def _queue_sql() -> str:
    return (
        f"SELECT {', '.join(_columns('q', Queue))} FROM {Queue._meta.db_table} q "
        "WHERE q.code = %s AND q.active"
    )


def _active_queue(code: str) -> Queue | None:
    """The active queue of this code, read in SQL built once (see ``_lock_call``)."""
    with connection.cursor() as cursor:
        cursor.execute(_queue_sql(), [code])
        row = cursor.fetchone()
    queue: Queue | None = _from_row(Queue, row, 0)[0] if row is not None else None
    return queue


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


_WAITING_SQL = f"""
SELECT c.id FROM {Call._meta.db_table} c
WHERE c.state = %s AND c.queue_id IN (
    SELECT q.queue_id FROM {Agent.queues.through._meta.db_table} q WHERE q.agent_id = %s
)
ORDER BY c.arrived_at, c.id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""


def _take_waiting_call(agent: Agent, *, now: dt.datetime) -> None:
    """The agent (locked, just available) takes the longest-waiting call of their queues.

    Asked in hand-written SQL: every call that ends while ringing, and every agent
    who becomes available, asks it, and nearly always nobody waits; the ORM's
    building of the question cost more than the answer."""
    with connection.cursor() as cursor:
        cursor.execute(_WAITING_SQL, [CallState.QUEUED, agent.pk])
        row = cursor.fetchone()
    if row is not None:
        call = Call.objects.select_related("queue").get(pk=row[0])  # locked just above
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
        call = _lock_call(source=source, telephony_id=telephony_id)
        if call is None:
            raise CallNotFound(telephony_id)
        # The event, once: a repeat inserts nothing (the call is locked, so nobody else
        # is inserting it). Inserted before the state is checked; a refusal below rolls
        # it back with everything else.
        if not _record_event(call=call, event_id=event_id, kind=kind, payload=payload, now=now):
            return call, False
        if call.state not in _ALLOWED[kind]:
            raise Conflict(
                {"kind": f"The call is {call.get_state_display().lower()}: “{kind}” cannot happen now."}
            )
        agent = _lock_agent(call.agent_id) if call.agent_id else None
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
        call.save(update_fields=_EVENT_FIELDS)
        realtime.call_changed(call)
    return call, True


# The call and the agent of an event are read in hand-written SQL built once per
# process from the models' columns, as the API token is (crm/authentication.py):
# the ORM's building and compiling of these two locking reads was a third of an
# event's CPU in the web process, at 50 calls a second on the floor's hot path.
_LOCK_MODELS: tuple[type[Any], ...] = (Call, Queue, Agent, User)


def _columns(alias: str, model: type[Any]) -> list[str]:
    quote = connection.ops.quote_name
    return [f"{alias}.{quote(field.column)}" for field in model._meta.concrete_fields]


def _from_row(model: type[Any], row: tuple[Any, ...], start: int) -> tuple[Any, int]:
    """The instance of ``model`` whose columns start at ``start`` (None when its
    primary key is null: an outer join found nothing), and where the next start."""
    fields = model._meta.concrete_fields
    values = list(row[start : start + len(fields)])
    if values[0] is None:
        return None, start + len(fields)
    # What the ORM's compiler does for its own rows: JSON comes from the driver as text.
    for index, field in enumerate(fields):
        if values[index] is not None and hasattr(field, "from_db_value"):
            values[index] = field.from_db_value(values[index], None, connection)
    return model.from_db(connection.alias, [f.attname for f in fields], values), start + len(fields)


# The statements below are built once per process from the models' fields (the
# SELECT lists follow the models as they change), on first use.


@functools.cache
def _lock_call_sql() -> str:
    selected = [column for alias, model in zip("cqau", _LOCK_MODELS, strict=True)
                for column in _columns(alias, model)]  # fmt: skip
    return (
        f"SELECT {', '.join(selected)}, set_config('synchronous_commit', 'off', true) "
        f"FROM {Call._meta.db_table} c JOIN {Queue._meta.db_table} q ON q.id = c.queue_id "
        f"LEFT JOIN {Agent._meta.db_table} a ON a.user_id = c.agent_id "
        f"LEFT JOIN {User._meta.db_table} u ON u.id = a.user_id "
        "WHERE c.source_system_id = %s AND c.telephony_id = %s FOR UPDATE OF c"
    )


@functools.cache
def _lock_agent_sql() -> str:
    return (
        f"SELECT {', '.join(_columns('a', Agent))} FROM {Agent._meta.db_table} a "
        "WHERE a.user_id = %s FOR UPDATE"
    )


def _lock_call(*, source: SourceSystem, telephony_id: str) -> Call | None:
    """The call, locked (not its agent: ``_lock_agent`` locks that, after), with its
    queue, agent and agent's user attached; its transaction's commit does not
    wait for the disk (call-state commits, above)."""
    with connection.cursor() as cursor:
        cursor.execute(_lock_call_sql(), [source.pk, telephony_id])
        row = cursor.fetchone()
    if row is None:
        return None
    call, start = _from_row(Call, row, 0)
    queue, start = _from_row(Queue, row, start)
    agent, start = _from_row(Agent, row, start)
    user, _ = _from_row(User, row, start)
    Call.queue.field.set_cached_value(call, queue)
    Call.source_system.field.set_cached_value(call, source)
    Call.agent.field.set_cached_value(call, agent)
    if agent is not None:
        Agent.user.field.set_cached_value(agent, user)
    result: Call = call
    return result


def _lock_agent(agent_id: int) -> Agent:
    """The agent's row, locked (after the call's: the order every writer keeps)."""
    with connection.cursor() as cursor:
        cursor.execute(_lock_agent_sql(), [agent_id])
        row = cursor.fetchone()
    if row is None:
        raise Agent.DoesNotExist(f"No agent {agent_id}.")
    agent: Agent = _from_row(Agent, row, 0)[0]
    return agent


# What an event may change on the call (``_ring`` and ``_route`` save their own).
_EVENT_FIELDS = ["state", "answered_at", "ended_at", "end_reason", "queue", "agent", "arrived_at"]

_EVENT_SQL = f"""
INSERT INTO {CallEvent._meta.db_table} (call_id, event_id, kind, payload, at)
VALUES (%s, %s, %s, %s::jsonb, %s)
ON CONFLICT (call_id, event_id) DO NOTHING
RETURNING id
"""


def _record_event(*, call: Call, event_id: str, kind: str, payload: dict[str, Any], now: dt.datetime) -> bool:
    """Insert the call's event; False when the telephony system sent it before."""
    with connection.cursor() as cursor:
        cursor.execute(_EVENT_SQL, [call.pk, event_id, kind, json.dumps(payload), now])
        return cursor.fetchone() is not None


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
