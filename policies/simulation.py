"""Simulation before go-live: replay one policy (a draft, usually) over the
business events recorded in the last N days, as the engine would have decided
them then, and count what would have happened. Nothing is written but the
run's state, kept in the cache for a day (a run is a question, not a record).

The engine's own functions do the work (``engine.facts_load`` as of each
event's time, ``engine.evaluate`` with the policies active today competing in
arbitration; the policy's own active window is ignored: a draft meant to start
tomorrow is replayed too), so a simulation can never disagree with the engine about a
condition or a contact rule. What it cannot know: how customers would have
answered the offers it makes up (they count as waiting for an answer, so later
ones meet the "already waiting" rule until they expire), and answers given
after an event (a decline recorded later is already known).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from crm.models import BusinessEvent, Customer
from policies import engine
from policies.models import DecisionOutcome, Policy, PresentationStatus

logger = logging.getLogger(__name__)

MAX_DAYS = 90
CHUNK = 500
KEEP_SECONDS = 86_400
TOP_REASONS = 8


@dataclass
class SimulationState:
    """A run as the page shows it; stored as a dict in the cache."""

    id: str
    policy_id: int
    policy_version: int
    days: int
    status: str = "queued"  # queued | running | done | failed
    total: int = 0
    done: int = 0
    matched: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    # offer code -> channel -> customers who would have received it
    offers: dict[str, dict[str, int]] = field(default_factory=dict)
    customers_reached: int = 0
    customers_stopped: int = 0
    reasons: list[tuple[str, int]] = field(default_factory=list)
    error: str = ""
    started_at: str = ""
    finished_at: str = ""

    @property
    def percent(self) -> int:
        if self.status == "done":
            return 100
        return int(self.done * 100 / self.total) if self.total else 0

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


def _key(run_id: str) -> str:
    return f"policies:simulation:{run_id}"


def _store(state: SimulationState) -> None:
    cache.set(_key(state.id), asdict(state), timeout=KEEP_SECONDS)


def simulation_get(run_id: str) -> SimulationState | None:
    raw = cache.get(_key(run_id))
    if not isinstance(raw, dict):
        return None
    raw["reasons"] = [tuple(r) for r in raw.get("reasons", [])]
    return SimulationState(**raw)


def simulation_start(*, policy_id: int, days: int) -> SimulationState:
    """Queue a replay of the policy as it is saved now over the last ``days`` days;
    the worker runs it (policies.tasks.policy_simulate) after this commits."""
    from policies import tasks  # noqa: PLC0415  (tasks import this module)

    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days: replay between 1 and {MAX_DAYS} days of events.")
    policy = Policy.objects.get(pk=policy_id)
    state = SimulationState(
        id=secrets.token_urlsafe(12), policy_id=policy.pk, policy_version=policy.version, days=days
    )
    _store(state)
    transaction.on_commit(lambda: tasks.policy_simulate.delay(state.id))
    return state


def simulation_run(run_id: str) -> SimulationState | None:
    """The replay itself (in the worker).

    1. Load the policy and build it as the engine would (its condition compiled).
    2. Read the trigger events of the window in order, in chunks, each with its
       customer; decide each as of its own time, alongside the policies active now.
    3. Presentations the replay makes count in the contact rules of the later
       events of the same customer (caps, one waiting offer per channel).
    4. Store the progress after each chunk, and the tallies at the end."""
    state = simulation_get(run_id)
    if state is None or state.finished:
        return state  # expired, or a redelivered task whose run already ended
    try:
        _replay(state)
    except Exception as exc:
        logger.exception("simulation %s failed", run_id)
        state.status = "failed"
        state.error = f"The replay stopped: {exc}"[:300]
        state.finished_at = timezone.now().isoformat()
        _store(state)
    return state


def _replay(state: SimulationState) -> None:
    policy = Policy.objects.get(pk=state.policy_id)
    candidate = engine.candidate_for(policy)
    if candidate is None:
        raise ValueError("the condition no longer compiles: open the policy and save it again")
    now = timezone.now()
    events = BusinessEvent.objects.filter(
        type__in=policy.trigger_types,
        customer__isnull=False,
        occurred_at__gte=now - dt.timedelta(days=state.days),
        occurred_at__lte=now,
    )
    state.status = "running"
    state.total = events.count()
    state.started_at = now.isoformat()
    _store(state)

    index = engine.policy_index()
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    reached: dict[tuple[str, str], set[int]] = defaultdict(set)
    stopped: set[int] = set()
    made: dict[int, list[engine.PastPresentation]] = defaultdict(list)
    ids = list(events.order_by("occurred_at", "id").values_list("id", flat=True))
    for start in range(0, len(ids), CHUNK):
        chunk = list(
            BusinessEvent.objects.filter(pk__in=ids[start : start + CHUNK]).order_by("occurred_at", "id")
        )
        customers = Customer.objects.only(*engine.CUSTOMER_COLUMNS).in_bulk({e.customer_id for e in chunk})
        for event in chunk:
            customer = customers.get(event.customer_id)
            if customer is None:
                continue
            moment = event.occurred_at
            others = [c for c in index.candidates(event.type, moment) if c.id != candidate.id]
            _, facts = engine.facts_load(event, customer, moment, as_of=True)
            facts.presentations.extend(made[customer.pk])
            plan = engine.evaluate(
                sorted([*others, candidate], key=lambda c: (-c.priority, c.id)), facts, moment
            )
            verdict = next((v for v in plan.verdicts if v.candidate.id == candidate.id), None)
            if verdict is None:
                continue
            outcomes[verdict.outcome] += 1
            chosen = [p for p in verdict.proposals if p.chosen]
            for proposal in chosen:
                reached[(proposal.offer.code, proposal.channel)].add(customer.pk)
                made[customer.pk].append(
                    engine.PastPresentation(
                        offer_id=proposal.offer.id, channel=proposal.channel,
                        status=PresentationStatus.PRESENTED, presented_at=moment, responded_at=None,
                        expires_at=moment + dt.timedelta(hours=proposal.offer.expires_after_hours),
                    )
                )  # fmt: skip
            if verdict.outcome in (DecisionOutcome.SUPPRESSED, DecisionOutcome.OUTRANKED):
                stopped.add(customer.pk)
            for why in _stops(verdict):
                reasons[_reason_kind(why)] += 1
        state.done = min(start + CHUNK, len(ids))
        state.matched = sum(outcomes.values())
        _store(state)
    offers: dict[str, dict[str, int]] = defaultdict(dict)
    for (code, channel), who in sorted(reached.items()):
        offers[code][channel] = len(who)
    state.outcomes = dict(outcomes)
    state.offers = dict(offers)
    state.customers_reached = len({c for who in reached.values() for c in who})
    state.customers_stopped = len(stopped)
    state.reasons = reasons.most_common(TOP_REASONS)
    state.status = "done"
    state.done = state.total
    state.finished_at = timezone.now().isoformat()
    _store(state)


def _stops(verdict: engine.Verdict) -> list[str]:
    """Every contact rule or ranking that stopped part of what the policy wanted."""
    stops = [p.suppressed for p in verdict.proposals if p.suppressed]
    if verdict.outcome in (DecisionOutcome.OUTRANKED, DecisionOutcome.FAILED):
        stops.append(engine.verdict_reason(verdict))
    elif verdict.outcome == DecisionOutcome.ACTED and verdict.note:
        stops.append(verdict.note)
    return stops


def _reason_kind(reason: str) -> str:
    """A reason without its particulars ("Cooling off: declined on 2026-11-02, ..."
    -> "Cooling off"), so equal causes add up."""
    head = reason.split(":", 1)[0].strip().rstrip(".")
    return head or reason


def describe(state: SimulationState) -> dict[str, Any]:
    """The outcome labels the page shows, with their counts."""
    return {str(label): state.outcomes.get(value, 0) for value, label in DecisionOutcome.choices}
