"""Reads of the floor that the supervisor's view shares with its live refresh."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Avg, Count, DateTimeField, ExpressionWrapper, F, Min, Q, Value, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from agents.models import Agent, AgentState, Call, CallState, Queue
from crm.models import User
from crm.validation import format_phone


@dataclass(frozen=True)
class AgentRow:
    agent: Agent
    handled: int
    average_handle_seconds: int | None
    offers_accepted: int = 0
    offers_declined: int = 0

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
class WaitingCall:
    call: Call
    position: int  # 1: the next the queue's next free agent takes

    @property
    def caller(self) -> str:
        return (
            format_phone(self.call.caller_number)
            if self.call.caller_number
            else (self.call.ani or "withheld")
        )


@dataclass(frozen=True)
class OfferCounts:
    presented: int
    accepted: int
    declined: int

    @property
    def take_rate(self) -> int | None:
        """Percent of the offers answered today that were accepted."""
        answered = self.accepted + self.declined
        return round(100 * self.accepted / answered) if answered else None


@dataclass(frozen=True)
class Floor:
    agents: list[AgentRow]
    queues: list[QueueRow]
    states: dict[str, int]
    day_start: dt.datetime
    waiting: list[WaitingCall] = field(default_factory=list)
    waiting_total: int = 0
    offers: OfferCounts = OfferCounts(0, 0, 0)


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
    offers_by_agent = _offers_answered_by_agent(day_start)
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
            offers_accepted=offers_by_agent.get(a.pk, (0, 0))[0],
            offers_declined=offers_by_agent.get(a.pk, (0, 0))[1],
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
    waiting, waiting_total = _waiting_calls()
    return Floor(
        agents=agent_rows, queues=queue_rows, states=states, day_start=day_start, waiting=waiting,
        waiting_total=waiting_total, offers=_offers_today(day_start),
    )  # fmt: skip


# The floor lists this many waiting calls; past them it says how many more wait.
WAITING_SHOWN = 50


def _waiting_calls() -> tuple[list[WaitingCall], int]:
    """Calls waiting, each with its place in its queue (1: next to ring) — the
    place counted in SQL over every waiting call, so a long queue's tail still
    shows its true position: one query along the ``call_waiting`` index."""
    rows = list(
        Call.objects.filter(state=CallState.QUEUED)
        .select_related("queue")
        .annotate(
            position=Window(RowNumber(), partition_by=[F("queue_id")], order_by=[F("arrived_at"), F("id")]),
            total=Window(Count("id")),
        )
        .order_by("arrived_at", "id")[:WAITING_SHOWN]
    )
    total = rows[0].total if rows else 0  # type: ignore[attr-defined]
    return [WaitingCall(call=c, position=c.position) for c in rows], total  # type: ignore[attr-defined]


def _offers_today(day_start: dt.datetime) -> OfferCounts:
    """Offers put on agents' screens since ``day_start``, and the answers given today."""
    from policies.models import OfferChannel, OfferPresentation  # noqa: PLC0415  (policies' rows, read only)

    counts = OfferPresentation.objects.filter(channel=OfferChannel.AGENT_SCREEN).aggregate(
        presented=Count("id", filter=Q(presented_at__gte=day_start)),
        accepted=Count("id", filter=Q(responded_at__gte=day_start, status="accepted")),
        declined=Count("id", filter=Q(responded_at__gte=day_start, status="declined")),
    )
    return OfferCounts(counts["presented"], counts["accepted"], counts["declined"])


def _offers_answered_by_agent(day_start: dt.datetime) -> dict[int, tuple[int, int]]:
    """Per agent: offers the customer accepted and declined today, as the agent recorded them."""
    from policies.models import OfferChannel, OfferPresentation  # noqa: PLC0415

    rows = (
        OfferPresentation.objects.filter(
            channel=OfferChannel.AGENT_SCREEN, responded_at__gte=day_start, responded_by__isnull=False
        )
        .values("responded_by_id")
        .annotate(
            accepted=Count("id", filter=Q(status="accepted")),
            declined=Count("id", filter=Q(status="declined")),
        )
    )
    return {row["responded_by_id"]: (row["accepted"], row["declined"]) for row in rows}


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
    queue: str = ""

    def overdue(self, now: dt.datetime) -> bool:
        return self.due_at is not None and self.due_at < now


def work_list(*, user_id: int, limit: int = 15) -> list[WorkItem]:
    """The agent's open tasks, the callbacks anyone may take (escalated ones
    among them) and the unassigned tasks of the queues the agent answers (a
    policy's "have a sales rep call" for queue:sales), most urgent first: one query."""
    from crm.models import Task  # noqa: PLC0415  (crm's rows, read for the desk)

    my_queues = Queue.objects.filter(agents__user_id=user_id).values("code")
    rows = (
        Task.objects.filter(status__in=["open", "in_progress"])
        .filter(
            Q(assigned_to_id=user_id)
            | Q(assigned_to__isnull=True, kind="callback")
            | Q(assigned_to__isnull=True, queue__in=my_queues)
        )
        .select_related("customer")
        .only(
            "pk", "title", "kind", "due_at", "priority", "assigned_to_id", "queue", "customer__display_name"
        )
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
            queue=t.queue,
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
