"""The states an agent chooses or is put in (available, break, offline; forced
offline by a supervisor or by a silent desk). Becoming available takes the
call that has waited longest."""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from agents.models import (
    Agent,
    AgentState,
    BreakReason,
)
from agents.services.calls import _take_waiting_call
from agents.services.presence import BUSY_STATES, SELF_STATES, _change, agent_for
from crm.exceptions import Conflict
from crm.models import User
from crm.realtime import batched as realtime_batched


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
