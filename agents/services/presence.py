"""Agents' presence: who an agent is, a state change written and announced, the
dispositions of a queue, the heartbeat and the desk's snapshot. The base the
other service modules build on."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from agents import realtime
from agents.models import (
    Agent,
    AgentState,
    AgentStateChange,
    Call,
    Disposition,
)
from crm.models import User

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


# The new state and its history row in one statement: every state change of the
# floor (a ring, an answer, a hang-up, a break) writes both, and the ORM's building of
# the two was most of the CPU of a change. Same columns as ``Agent.save(update_fields=
# ...)`` and ``AgentStateChange.objects.create`` would write.
_CHANGE_SQL = f"""
WITH changed AS (
    UPDATE {Agent._meta.db_table} SET state = %(state)s, state_since = %(since)s,
        break_reason = %(break_reason)s, idle_since = %(idle_since)s, call_id = %(call)s
    WHERE user_id = %(agent)s
    RETURNING user_id
)
INSERT INTO {AgentStateChange._meta.db_table} (agent_id, state, reason, call_id, changed_by_id, at)
SELECT user_id, %(state)s, %(reason)s, %(logged_call)s, %(by)s, %(since)s FROM changed
"""


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
    with connection.cursor() as cursor:
        cursor.execute(_CHANGE_SQL, {
            "agent": agent.pk, "state": state, "since": now, "break_reason": agent.break_reason,
            "idle_since": agent.idle_since, "call": agent.call_id, "reason": reason,
            "logged_call": call.pk if call is not None else None, "by": by.pk if by is not None else None,
        })  # fmt: skip
    extra: dict[str, Any] = {}
    if state == AgentState.WRAP_UP and call is not None:
        # The wrap-up form needs them at once, whoever ended the call.
        extra["dispositions"] = [{"code": d.code, "label": d.label} for d in dispositions_for(call.queue_id)]
    realtime.agent_state_changed(agent, **extra)


def agent_heartbeat(*, user: User, now: dt.datetime | None = None) -> None:
    """The desk is open: one UPDATE, no lock held beyond it."""
    Agent.objects.filter(user=user).update(heartbeat_at=now or timezone.now())


def dispositions_for(queue_id: int) -> list[Disposition]:
    """The queue's own dispositions and those offered in every queue."""
    return list(
        Disposition.objects.filter(active=True)
        .filter(Q(queue_id=queue_id) | Q(queue__isnull=True))
        .order_by("position", "label")
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
