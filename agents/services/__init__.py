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

from agents.services.calls import (
    CALL_EVENTS,
    call_arrive,
    call_attach_customer,
    call_event,
    call_ring_timeout,
    desk_call_control,
    transfer_targets,
)
from agents.services.presence import (
    BUSY_STATES,
    CALLING_HOURS,
    MAX_CANDIDATES,
    SELF_STATES,
    CallNotFound,
    agent_for,
    agent_heartbeat,
    dispositions_for,
    presence_snapshot,
)
from agents.services.states import (
    agent_force_offline,
    agent_set_state,
    agent_sign_out,
    agents_gone_quiet,
)
from agents.services.wrap_up import (
    call_wrap_up,
    callbacks_due,
    calls_sweep,
    wrap_up_zone,
    wrap_ups_overdue,
)

__all__ = [
    "BUSY_STATES",
    "CALLING_HOURS",
    "CALL_EVENTS",
    "MAX_CANDIDATES",
    "SELF_STATES",
    "CallNotFound",
    "agent_for",
    "agent_force_offline",
    "agent_heartbeat",
    "agent_set_state",
    "agent_sign_out",
    "agents_gone_quiet",
    "call_arrive",
    "call_attach_customer",
    "call_event",
    "call_ring_timeout",
    "call_wrap_up",
    "callbacks_due",
    "calls_sweep",
    "desk_call_control",
    "dispositions_for",
    "presence_snapshot",
    "transfer_targets",
    "wrap_up_zone",
    "wrap_ups_overdue",
]
