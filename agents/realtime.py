"""What the floor's screens are told, and in which groups (names from crm.realtime).

Frames only tell; the rows are the truth. A desktop that reconnects reads its
agent's state and call again instead of replaying frames.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crm.realtime import agent_group, send_on_commit
from crm.validation import format_phone

if TYPE_CHECKING:
    from agents.models import Agent, Call

FLOOR_GROUP = "floor"  # supervisors' floor view


def call_shape(call: Call) -> dict[str, Any]:
    return {
        "call_id": call.pk,
        "state": call.state,
        "queue": call.queue.code if call.queue_id else None,
        "caller_number": format_phone(call.caller_number) if call.caller_number else call.ani,
        "queue_name": call.queue.name if call.queue_id else None,
        "wrap_up_seconds": call.queue.wrap_up_seconds if call.queue_id else None,
        "customer_id": call.customer_id,
        "candidates": list(call.candidates),
        "answered_at": call.answered_at.isoformat() if call.answered_at else None,
        "ring_started_at": call.ring_started_at.isoformat() if call.ring_started_at else None,
    }


def agent_state_changed(agent: Agent, *, desk: bool = True, **extra: Any) -> None:
    """To the floor, and to the agent's own desk unless ``desk`` is False: a call's
    arrival tells the desk with its pop alone (``call_offered`` says ringing, since
    when and which call), one frame instead of two on the floor's hot path."""
    message = {
        **extra,
        "type": "crm.event",
        "event": "agent.state",
        "agent_id": agent.pk,
        "state": agent.state,
        "reason": agent.break_reason,
        "since": agent.state_since.isoformat(),
        "call_id": agent.call_id,
        "call": call_shape(agent.call) if agent.call is not None else None,
    }
    if desk:
        send_on_commit(agent_group(agent.pk), message)
    send_on_commit(FLOOR_GROUP, message)


def call_offered(call: Call) -> None:
    """The screen pop: the ringing agent's desktop opens the caller's record (or a
    pick list, or a new-customer form) before the agent says hello."""
    if call.agent_id is None:
        return
    send_on_commit(
        agent_group(call.agent_id), {"type": "crm.event", "event": "call.offered", **call_shape(call)}
    )


def call_changed(call: Call) -> None:
    message = {"type": "crm.event", "event": "call.changed", **call_shape(call)}
    if call.agent_id is not None:
        send_on_commit(agent_group(call.agent_id), message)
    send_on_commit(FLOOR_GROUP, message)


def queue_changed(queue_id: int) -> None:
    send_on_commit(FLOOR_GROUP, {"type": "crm.event", "event": "queue.changed", "queue_id": queue_id})


def callback_due(*, agent_id: int, task_id: int, customer_id: int, title: str) -> None:
    from crm.realtime import send_now  # noqa: PLC0415

    # Sent at once: the beat task that finds it writes nothing to wait for.
    send_now(
        agent_group(agent_id),
        {
            "type": "crm.event",
            "event": "callback.due",
            "task_id": task_id,
            "customer_id": customer_id,
            "title": title,
        },
    )
