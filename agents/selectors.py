"""Reads of the floor that the supervisor's view shares with its live refresh."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any

from django.db.models import Avg, Count, DateTimeField, ExpressionWrapper, F, Min, Q, Value
from django.utils import timezone

from agents.models import Agent, AgentState, Call, CallState, Queue
from crm.models import User
from crm.validation import format_phone


@dataclass(frozen=True)
class AgentRow:
    agent: Agent
    handled: int
    average_handle_seconds: int | None

    @property
    def caller(self) -> str:
        call = self.agent.call
        if call is None:
            return ""
        return format_phone(call.caller_number) if call.caller_number else call.ani


@dataclass(frozen=True)
class QueueRow:
    queue: Queue
    waiting: int
    longest_wait_since: dt.datetime | None
    offered: int
    answered: int
    within_service_level: int
    abandoned: int

    @property
    def service_level(self) -> int | None:
        """Percent of today's answered and abandoned calls answered within the queue's level."""
        counted = self.answered + self.abandoned
        return round(100 * self.within_service_level / counted) if counted else None


@dataclass(frozen=True)
class Floor:
    agents: list[AgentRow]
    queues: list[QueueRow]
    states: dict[str, int]
    day_start: dt.datetime


def start_of_day(zone: str, now: dt.datetime | None = None) -> dt.datetime:
    """Midnight today on the named clock (the viewer's), as an instant."""
    try:
        tz = zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = zoneinfo.ZoneInfo("UTC")
    local = (now or timezone.now()).astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def floor(*, zone: str, now: dt.datetime | None = None) -> Floor:
    """The floor now and today (since midnight in ``zone``): four queries
    whatever the number of agents, queues and calls."""
    day_start = start_of_day(zone, now)
    agents = list(
        Agent.objects.select_related("user", "call")
        .exclude(state=AgentState.OFFLINE, state_since__lt=day_start)
        .order_by("user__first_name", "user__username")
    )
    handled = {
        row["agent_id"]: row
        for row in Call.objects.filter(answered_at__gte=day_start, agent__isnull=False)
        .values("agent_id")
        .annotate(
            n=Count("id"),
            aht=Avg(F("ended_at") - F("answered_at"), filter=Q(state=CallState.ENDED)),
        )
    }
    agent_rows = [
        AgentRow(
            agent=a,
            handled=handled.get(a.pk, {}).get("n", 0),
            average_handle_seconds=int(h.total_seconds())
            if (h := handled.get(a.pk, {}).get("aht"))
            else None,
        )
        for a in agents
    ]
    queues = list(
        Queue.objects.filter(active=True)
        .annotate(
            waiting=Count("calls", filter=Q(calls__state=CallState.QUEUED)),
            longest=Min("calls__arrived_at", filter=Q(calls__state=CallState.QUEUED)),
            offered=Count("calls", filter=Q(calls__arrived_at__gte=day_start)),
            answered=Count(
                "calls", filter=Q(calls__arrived_at__gte=day_start, calls__answered_at__isnull=False)
            ),
            within=Count(
                "calls",
                filter=Q(
                    calls__arrived_at__gte=day_start,
                    calls__answered_at__isnull=False,
                    calls__answered_at__lte=ExpressionWrapper(
                        F("calls__arrived_at") + Value(dt.timedelta(seconds=1)) * F("service_level_seconds"),
                        output_field=DateTimeField(),
                    ),
                ),
            ),
            abandoned=Count(
                "calls", filter=Q(calls__arrived_at__gte=day_start, calls__end_reason="abandoned")
            ),
        )
        .order_by("name")
    )
    queue_rows = [
        QueueRow(
            queue=q,
            waiting=q.waiting,  # type: ignore[attr-defined]
            longest_wait_since=q.longest,  # type: ignore[attr-defined]
            offered=q.offered,  # type: ignore[attr-defined]
            answered=q.answered,  # type: ignore[attr-defined]
            within_service_level=q.within,  # type: ignore[attr-defined]
            abandoned=q.abandoned,  # type: ignore[attr-defined]
        )
        for q in queues
    ]
    states = {state: 0 for state in AgentState.values}
    for row in agent_rows:
        states[row.agent.state] += 1
    return Floor(agents=agent_rows, queues=queue_rows, states=states, day_start=day_start)


@dataclass(frozen=True)
class WorkItem:
    task_id: int
    title: str
    kind: str
    due_at: dt.datetime | None
    priority: int
    customer_id: int
    customer_name: str
    mine: bool

    def overdue(self, now: dt.datetime) -> bool:
        return self.due_at is not None and self.due_at < now


def work_list(*, user_id: int, limit: int = 15) -> list[WorkItem]:
    """The agent's open tasks and the callbacks anyone may take (escalated ones
    among them), most urgent first: one query."""
    from crm.models import Task  # noqa: PLC0415  (crm's rows, read for the desk)

    rows = (
        Task.objects.filter(status__in=["open", "in_progress"])
        .filter(Q(assigned_to_id=user_id) | Q(assigned_to__isnull=True, kind="callback"))
        .select_related("customer")
        .only("pk", "title", "kind", "due_at", "priority", "assigned_to_id", "customer__display_name")
        .order_by("priority", F("due_at").asc(nulls_last=True), "pk")[:limit]
    )
    return [
        WorkItem(
            task_id=t.pk,
            title=t.title,
            kind=t.get_kind_display(),
            due_at=t.due_at,
            priority=t.priority,
            customer_id=t.customer_id,
            customer_name=t.customer.display_name,
            mine=t.assigned_to_id == user_id,
        )
        for t in rows
    ]


def script_call_facts(user: User) -> dict[str, Any]:
    """The agent's current call as a call script reads it (settings.SCRIPTING_CALL_FACTS):
    which script runs (queue, direction) and the call's merge fields. Empty off a call."""
    call = (
        Call.objects.filter(
            agent__user=user, state__in=[CallState.RINGING, CallState.CONNECTED, CallState.HELD]
        )
        .select_related("queue")
        .order_by("-arrived_at")
        .first()
    )
    if call is None:
        return {}
    return {
        "call_id": call.pk, "queue_code": call.queue.code, "queue": call.queue.name,
        "state": call.state, "customer_id": call.customer_id or 0,
        "direction": call.direction, "caller_number": format_phone(call.caller_number or call.ani),
        "dialled_number": call.dnis,
    }  # fmt: skip


def script_queues() -> list[tuple[str, str]]:
    """The queues a call script can be assigned to, as (code, name), by name
    (settings.SCRIPTING_QUEUES: scripting does not import agents)."""
    return list(Queue.objects.filter(active=True).order_by("name").values_list("code", "name"))
