"""The decision engine: from a business event to offers, tasks and decision rows.

For each event of a customer:

1. candidates: the active policies triggered by its type, from an in-process
   index (refreshed when a policy or an offer changes, and at most
   ``POLICIES_INDEX_MAX_AGE_SECONDS`` old), within their active window;
2. claim the event (one ``EventEvaluation`` row): the on-commit pass and the
   worker's pass may both see it, and only the first decides;
3. facts, read once: the customer, their recent events (``history``) and
   recent offer presentations (the contact rules);
4. ``evaluate`` (pure, no I/O: what ``bench/policy_decision.py`` measures):
   CEL conditions, holdouts, contact rules, arbitration;
5. ``apply``: the actions' effects and one ``Decision`` per matching policy,
   in one transaction; frames to the screens leave on commit.

Where it runs: as a real-time listener (on commit, in the process that recorded
the event) so an offer reaches the agent's screen without waiting for a worker
(the event-to-offer target is 10 ms at the median), and as a deferred listener
so an event whose on-commit pass never ran (the process died, the pass failed)
is still decided, once, when the worker dispatches it. The claim makes the
second pass a single insert that finds the row. ``POLICIES_DECIDE_ON_COMMIT``
turns the first pass off (then the worker decides everything).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cel
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from crm import realtime
from crm.models import BusinessEvent, Customer
from crm.selectors import source_systems
from crm.services.events import server_bound_cursor
from policies import actions as action_registry
from policies import conditions
from policies.models import (
    Decision,
    DecisionOutcome,
    Offer,
    OfferStatus,
    Policy,
    PolicyStatus,
    PresentationStatus,
)
from policies.services import SEQUENCE_LOCK_SQL, ActionRun, offers_present, sequence_lock_params

logger = logging.getLogger(__name__)

GENERATION_KEY = "crm:policies:index-generation"
COMPLAINT_OPENED, COMPLAINT_RESOLVED = "complaint.opened", "complaint.resolved"


# --- The index of active policies ----------------------------------------------------------


@dataclass(frozen=True)
class OfferInfo:
    id: int
    code: str
    name: str
    value: float
    marketing: bool
    channels: frozenset[str]
    max_presentations: int
    period_days: int
    cooling_off_days: int
    expires_after_hours: int
    status: str
    valid_from: dt.datetime | None
    valid_to: dt.datetime | None
    talking_points: str
    self_service_text: str
    value_text: str = ""  # the value as its Decimal prints, for the frames

    def is_live(self, moment: dt.datetime) -> bool:
        if self.status != OfferStatus.ACTIVE:
            return False
        if self.valid_from is not None and moment < self.valid_from:
            return False
        return self.valid_to is None or moment < self.valid_to


@dataclass(frozen=True)
class Candidate:
    id: int
    version: int
    name: str
    priority: int
    holdout_percent: int
    active_from: dt.datetime | None
    active_until: dt.datetime | None
    program: cel.Program | None
    # (offer, channels) of each present_offer action; (name, settings) of the others.
    offers: tuple[tuple[OfferInfo, tuple[str, ...]], ...]
    others: tuple[tuple[str, dict[str, Any]], ...]

    def in_window(self, moment: dt.datetime) -> bool:
        if self.active_from is not None and moment < self.active_from:
            return False
        return self.active_until is None or moment < self.active_until


@dataclass
class PolicyIndex:
    by_type: dict[str, tuple[Candidate, ...]]
    generation: int
    loaded_at: float

    def candidates(self, event_type: str, moment: dt.datetime) -> list[Candidate]:
        return [c for c in self.by_type.get(event_type, ()) if c.in_window(moment)]


_lock = threading.Lock()
_index: PolicyIndex | None = None
_checked_at = 0.0
# The Redis channel on which a committed change to a policy or an offer is announced
# (its message: the new generation). Not a cache key: pub/sub channels are global.
CHANGES_CHANNEL = "crm:policies:index-changed"
# One round trip: the generation bumped and the new number published together.
_ANNOUNCE = "local g = redis.call('INCR', KEYS[1]) redis.call('PUBLISH', ARGV[1], g) return g"


_client: tuple[int, Any] | None = None


def _redis() -> Any:
    """This process's client for the generation and the announcements (a fork gets its own)."""
    global _client  # noqa: PLW0603
    import redis  # noqa: PLC0415  (only the processes that decide need it)

    if _client is None or _client[0] != os.getpid():
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        _client = (os.getpid(), client)
    return _client[1]


class _ChangeListener:
    """One thread per process, subscribed to CHANGES_CHANNEL: a policy paused or an
    offer edited in any process reaches this one about a millisecond after its
    commit, before this process's next decision, and a decision never pays a
    round trip to learn that nothing changed.

    ``generation`` is the newest generation announced. While the thread is not
    subscribed (starting, Redis down, reconnecting) ``live`` is False and
    ``policy_index`` falls back to asking Redis at most every
    POLICIES_INDEX_CHECK_SECONDS; the maximum age bounds what a lost
    announcement (a process that died between its commit and its publish) can cost."""

    def __init__(self) -> None:
        self.generation = 0
        self.live = False
        self._pid = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def ensure_running(self) -> None:
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            # A forked worker process inherits the fields but not the thread.
            self._pid, self.live = os.getpid(), False
            self._thread = threading.Thread(target=self._run, name="policy-index-changes", daemon=True)
            self._thread.start()

    def heard(self, generation: int) -> None:
        # Taken as it comes, not the largest seen: Redis publishes the generations in
        # order (the Lua script bumps and publishes at once), and one that went back
        # (Redis restarted empty) must still differ from the index's.
        self.generation = generation

    def _run(self) -> None:
        pause = 0.1
        while True:
            pubsub = None
            try:
                client = _redis()
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANGES_CHANNEL)
                # Subscribed first, then read: a change announced in between is heard twice, never missed.
                self.heard(int(client.get(GENERATION_KEY) or 0))
                self.live, pause = True, 0.1
                while True:
                    message = pubsub.get_message(timeout=30.0)  # the timeout only keeps the socket checked
                    if message is not None and message.get("type") == "message":
                        self.heard(int(message["data"]))
            except Exception:
                self.live = False
                logger.warning("policy changes: not subscribed, polling until Redis is back", exc_info=True)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        logger.debug("closing the policy-change subscription failed", exc_info=True)


_listener = _ChangeListener()


def _generation() -> int:
    try:
        return int(_redis().get(GENERATION_KEY) or 0)
    except Exception:  # noqa: BLE001  (Redis down: keep the index we have until its age runs out)
        logger.warning("could not read the policy index generation")
        return _index.generation if _index else 0


def policy_index() -> PolicyIndex:
    """The active policies by event type. Rebuilt when a change was announced (heard
    at once by this process's listener; while it is not subscribed, asked of Redis
    at most every POLICIES_INDEX_CHECK_SECONDS), and past its maximum age."""
    global _index, _checked_at  # noqa: PLW0603  (a process-wide cache by design)
    _listener.ensure_running()
    now = time.monotonic()
    index = _index
    if _listener.live:
        generation = _listener.generation
    elif index is not None and now - _checked_at < settings.POLICIES_INDEX_CHECK_SECONDS:
        generation = index.generation
    else:
        generation = _generation()
        _checked_at = now
    if (
        index is not None
        and index.generation == generation
        and now - index.loaded_at <= settings.POLICIES_INDEX_MAX_AGE_SECONDS
    ):
        return index
    with _lock:
        if (
            _index is None
            or _index.generation != generation
            or now - _index.loaded_at > settings.POLICIES_INDEX_MAX_AGE_SECONDS
        ):
            _index = index_build(generation=generation)
        return _index


def index_forget() -> None:
    """Rebuild this process's index on its next use."""
    global _index  # noqa: PLW0603
    with _lock:
        _index = None


def index_changed_on_commit() -> None:
    """A policy or an offer is being changed in the current transaction: this process
    rebuilds at once (it reads this transaction's rows), every process once it
    commits. Called by the services, the admin and the models' signals; announced
    once per transaction however many rows changed."""
    index_forget()
    pending = transaction.get_connection().run_on_commit
    if any(hook is index_invalidate for _, hook, _ in pending):
        return
    transaction.on_commit(index_invalidate)


def index_invalidate() -> None:
    """A policy or an offer changed (call on commit): this process rebuilds at once,
    every other one as soon as its listener hears the new generation."""
    index_forget()
    try:
        _redis().eval(_ANNOUNCE, 1, GENERATION_KEY, CHANGES_CHANNEL)
    except Exception:  # noqa: BLE001
        logger.warning("could not announce a policy change; other processes see it within their max age")


def index_build(*, generation: int = 0) -> PolicyIndex:
    offers = {o.code: offer_info(o) for o in Offer.objects.exclude(status=OfferStatus.RETIRED)}
    by_type: dict[str, list[Candidate]] = defaultdict(list)
    for policy in Policy.objects.filter(status=PolicyStatus.ACTIVE).order_by("-priority", "id"):
        candidate = _candidate(policy, offers)
        if candidate is None:
            continue
        for event_type in policy.trigger_types:
            by_type[event_type].append(candidate)
    return PolicyIndex(
        by_type={k: tuple(v) for k, v in by_type.items()}, generation=generation, loaded_at=time.monotonic()
    )


def candidate_for(policy: Policy) -> Candidate | None:
    """One policy as the engine would run it, whatever its status (a simulation
    replays a draft); None when its condition no longer compiles."""
    codes = [a.get("settings", {}).get("offer") for a in policy.actions if isinstance(a, dict)]
    offers = {o.code: offer_info(o) for o in Offer.objects.filter(code__in=[c for c in codes if c])}
    return _candidate(policy, offers)


def offer_info(offer: Offer) -> OfferInfo:
    return OfferInfo(
        id=offer.pk, code=offer.code, name=offer.name, value=float(offer.value), marketing=offer.marketing,
        channels=frozenset(offer.channels), max_presentations=offer.max_presentations,
        period_days=offer.period_days, cooling_off_days=offer.cooling_off_days,
        expires_after_hours=offer.expires_after_hours, status=offer.status, valid_from=offer.valid_from,
        valid_to=offer.valid_to, talking_points=offer.talking_points,
        self_service_text=offer.self_service_text, value_text=str(offer.value),
    )  # fmt: skip


def _candidate(policy: Policy, offers: dict[str, OfferInfo]) -> Candidate | None:
    try:
        program = conditions.compiled(policy.pk, policy.version, policy.condition or "")
    except Exception:
        logger.exception("policy %s: its condition no longer compiles; it is skipped", policy.pk)
        return None
    offer_actions: list[tuple[OfferInfo, tuple[str, ...]]] = []
    others: list[tuple[str, dict[str, Any]]] = []
    for item in policy.actions:
        name = item.get("action")
        if name not in action_registry.ACTIONS:
            # Never run a name read from the database that the registry does not know.
            logger.error("policy %s names unknown action %r; the action is skipped", policy.pk, name)
            continue
        settings_ = item.get("settings", {})
        if action_registry.ACTIONS[name].arbitrated:
            offer = offers.get(settings_.get("offer", ""))
            if offer is not None:
                offer_actions.append((offer, tuple(settings_.get("channels", ()))))
        else:
            others.append((name, settings_))
    return Candidate(
        id=policy.pk, version=policy.version, name=policy.name, priority=policy.priority,
        holdout_percent=policy.holdout_percent, active_from=policy.active_from,
        active_until=policy.active_until, program=program, offers=tuple(offer_actions), others=tuple(others),
    )  # fmt: skip


# --- Facts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PastPresentation:
    offer_id: int
    channel: str
    status: str
    presented_at: dt.datetime
    responded_at: dt.datetime | None
    expires_at: dt.datetime


@dataclass
class Facts:
    event: dict[str, Any]
    customer: dict[str, Any]
    history: conditions.History
    presentations: list[PastPresentation] = field(default_factory=list)
    open_complaint: bool = False


def event_map(event: BusinessEvent) -> dict[str, Any]:
    """The event as a condition sees it: declared fields with their CEL types
    (absent optional ones as their empty value), plus type and source."""
    from crm import events  # noqa: PLC0415

    out: dict[str, Any] = {}
    for name, kind in events.get(event.type).fields.items():
        value = event.payload.get(name)
        cel_type = conditions.PAYLOAD_TO_CEL[kind]
        if value is None or value == "":
            out[name] = conditions.ZERO[cel_type]
        elif cel_type == "double":
            out[name] = float(value)
        elif cel_type == "int":
            out[name] = int(value)
        elif cel_type == "bool":
            out[name] = bool(value)
        else:
            out[name] = str(value)
    source = source_systems().get(event.source_system_id)
    out["type"] = event.type
    out["source"] = source.code if source else ""
    return out


def customer_map(customer: Customer, today: dt.date) -> dict[str, Any]:
    born = customer.date_of_birth
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day)) if born else 0
    address = customer.primary_address or {}
    return {
        "id": customer.pk, "kind": customer.kind, "tier": customer.tier,
        "lifetime_value": float(customer.lifetime_value), "status": customer.status,
        "language": customer.language, "time_zone": customer.time_zone,
        "preferred_channel": customer.preferred_channel, "do_not_call": customer.do_not_call,
        "do_not_email": customer.do_not_email, "marketing_opt_in": customer.marketing_opt_in,
        "age": age, "country": address.get("country", ""), "in_household": customer.household_id is not None,
    }  # fmt: skip


CUSTOMER_COLUMNS = (
    "id", "kind", "tier", "lifetime_value", "status", "language", "time_zone", "preferred_channel",
    "do_not_call", "do_not_email", "marketing_opt_in", "date_of_birth", "addresses", "household_id",
)  # fmt: skip


def _facts_sql(*, with_customer: bool, as_of: bool) -> str:
    """One statement for the facts of one event (built once per variant): the
    customer's row when asked, their history aggregated per event type (the ages
    in days, as ``conditions.History`` keeps them) and their presentations, the
    last two as JSON text that ``json.loads`` reads in C. The ORM's three
    queries cost three round trips, their compilation, and a Python datetime
    parse for each of up to POLICIES_HISTORY_LIMIT history rows."""
    key = (with_customer, as_of)
    sql = _FACTS_SQL.get(key)
    if sql is not None:
        return sql
    events_until = (
        " AND occurred_at <= %(now)s" if as_of else ""
    )  # the event itself counts, as when decided live
    shown_until = " AND p.presented_at < %(now)s" if as_of else ""
    history = (
        "(SELECT coalesce(json_object_agg(t.type, t.ages), '{}')::text FROM ("
        " SELECT h.type, array_agg(greatest(extract(epoch FROM %(now)s - h.occurred_at), 0)::float8 / 86400)"
        " AS ages FROM (SELECT type, occurred_at FROM crm_businessevent"
        f"  WHERE customer_id = %(customer)s AND occurred_at >= %(since)s{events_until}"
        "  ORDER BY occurred_at DESC LIMIT %(limit)s) h GROUP BY h.type) t)"
    )
    shown = (
        "(SELECT coalesce(json_agg(json_build_array(p.offer_id, p.channel, p.status, p.presented_at,"
        " p.responded_at, p.expires_at)), '[]')::text FROM policies_offerpresentation p"
        f" WHERE p.customer_id = %(customer)s AND p.presented_at >= %(lookback)s{shown_until})"
    )
    if with_customer:
        columns = ", ".join(
            f"c.{column}::text" if column == "addresses" else f"c.{column}"
            for column in _customer_columns()[0]
        )
        sql = f"SELECT {columns}, {history}, {shown} FROM crm_customer c WHERE c.id = %(customer)s"
    else:
        sql = f"SELECT {history}, {shown}"
    _FACTS_SQL[key] = sql
    return sql


_FACTS_SQL: dict[tuple[bool, bool], str] = {}


def _customer_columns() -> tuple[list[str], list[str]]:
    """Columns and attribute names of CUSTOMER_COLUMNS in the model's field order
    (``Model.from_db`` with some fields deferred takes the values in that order)."""
    fields = [f for f in Customer._meta.concrete_fields if {f.name, f.attname} & set(CUSTOMER_COLUMNS)]
    return [f.column for f in fields], [f.attname for f in fields]


def facts_load(
    event: BusinessEvent, customer: Customer | None, now: dt.datetime, *, as_of: bool = False
) -> tuple[Customer, Facts]:
    """The facts of one event in one statement: the customer's events within
    POLICIES_HISTORY_DAYS (at most POLICIES_HISTORY_LIMIT), their presentations
    within the longest period any offer's rules look back, and the customer's
    row too when ``customer`` is None (Customer.DoesNotExist if there is none).
    ``as_of``: only what was known at ``now`` (a simulation replaying the past)."""
    customer_id = customer.pk if customer is not None else event.customer_id
    params = {
        "customer": customer_id, "now": now, "limit": settings.POLICIES_HISTORY_LIMIT,
        "since": now - dt.timedelta(days=settings.POLICIES_HISTORY_DAYS),
        "lookback": now - dt.timedelta(days=settings.POLICIES_RULES_LOOKBACK_DAYS),
    }  # fmt: skip
    with server_bound_cursor() as cursor:
        cursor.execute(_facts_sql(with_customer=customer is None, as_of=as_of), params)
        row = cursor.fetchone()
    if row is None:
        raise Customer.DoesNotExist(f"customer {customer_id}")
    if customer is None:
        attnames = _customer_columns()[1]
        values = list(row[: len(attnames)])
        addresses = attnames.index("addresses")
        values[addresses] = json.loads(values[addresses]) if values[addresses] else []
        customer = Customer.from_db(connection.alias, attnames, values)
        row = row[len(attnames) :]
    ages: dict[str, list[float]] = json.loads(row[0])
    parse = dt.datetime.fromisoformat
    presentations = [
        PastPresentation(
            offer, channel, status, parse(shown), parse(answered) if answered else None, parse(ends)
        )
        for offer, channel, status, shown, answered, ends in json.loads(row[1])
    ]
    opened, resolved = ages.get(COMPLAINT_OPENED), ages.get(COMPLAINT_RESOLVED)
    return customer, Facts(
        event=event_map(event),
        customer=customer_map(customer, now.date()),
        history=conditions.History(ages),
        presentations=presentations,
        # The last complaint opened is younger than the last one resolved.
        open_complaint=bool(opened) and (not resolved or min(resolved) > min(opened)),  # type: ignore[arg-type]
    )


# --- Evaluation (pure) ---------------------------------------------------------------------


@dataclass(slots=True)
class Proposal:
    candidate: Candidate
    offer: OfferInfo
    channel: str
    score: float
    suppressed: str = ""
    outranked_by: list[Proposal] = field(default_factory=list)
    chosen: bool = False


@dataclass(slots=True)
class Verdict:
    candidate: Candidate
    outcome: str
    note: str = ""
    proposals: list[Proposal] = field(default_factory=list)
    run_others: tuple[tuple[str, dict[str, Any]], ...] = ()


@dataclass
class Plan:
    verdicts: list[Verdict]

    @property
    def presentations(self) -> list[Proposal]:
        return [p for v in self.verdicts for p in v.proposals if p.chosen]


def in_holdout(customer_id: int, policy_id: int, percent: int) -> bool:
    """Stable across processes and restarts (not Python's salted hash): a customer
    stays in or out of a policy's control group for the life of the policy."""
    if percent <= 0:
        return False
    digest = hashlib.blake2b(f"{customer_id}:{policy_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 < percent * 100


def evaluate(candidates: Sequence[Candidate], facts: Facts, now: dt.datetime) -> Plan:
    """Conditions, holdouts, contact rules and arbitration for one event; no I/O."""
    context = conditions.evaluation_context(event=facts.event, customer=facts.customer, history=facts.history)
    customer_id = facts.customer["id"]
    verdicts: list[Verdict] = []
    proposals: list[Proposal] = []
    # Many policies offer the same few offers: each (offer, channel) is judged once,
    # over that offer's own past presentations only.
    rules: dict[tuple[int, str], str] = {}
    by_offer: dict[int, list[PastPresentation]] = defaultdict(list)
    for past in facts.presentations:
        by_offer[past.offer_id].append(past)
    for candidate in candidates:
        if candidate.program is not None:
            try:
                matched = candidate.program.execute(context)
            except Exception as exc:  # noqa: BLE001  (the interpreter's errors have several kinds)
                verdicts.append(Verdict(candidate, DecisionOutcome.FAILED, f"Condition failed: {exc}"[:200]))
                continue
            if matched is not True:
                continue
        if candidate.holdout_percent and in_holdout(customer_id, candidate.id, candidate.holdout_percent):
            verdicts.append(
                Verdict(candidate, DecisionOutcome.HELD_OUT, f"Control group ({candidate.holdout_percent}%).")
            )
            continue
        verdict = Verdict(candidate, DecisionOutcome.ACTED)
        others = []
        for name, action_settings in candidate.others:  # usually none: offers are the common action
            if (
                name == "create_task"
                and action_settings.get("kind") == "sales_call"
                and facts.customer["do_not_call"]
            ):
                verdict.note = "No sales call: the customer asked not to be called."
                continue
            others.append((name, action_settings))
        verdict.run_others = tuple(others)
        for offer, channels in candidate.offers:
            for channel in channels:
                proposal = Proposal(candidate, offer, channel, score=candidate.priority * offer.value)
                key = (offer.id, channel)
                rule = rules.get(key)
                if rule is None:
                    rule = rules[key] = _contact_rule(offer, channel, facts, by_offer.get(offer.id, ()), now)
                proposal.suppressed = rule
                verdict.proposals.append(proposal)
                proposals.append(proposal)
        verdicts.append(verdict)
    _arbitrate(proposals, facts, now)
    for verdict in verdicts:
        if verdict.outcome == DecisionOutcome.ACTED:
            _conclude(verdict)
    return Plan(verdicts)


def _contact_rule(
    offer: OfferInfo, channel: str, facts: Facts, history: Sequence[PastPresentation], now: dt.datetime
) -> str:
    """The first contact rule that stops this offer on this channel, or ""."""
    customer = facts.customer
    if not offer.is_live(now):
        return f"The offer {offer.code} is not live."
    if channel not in offer.channels:
        return f"The offer {offer.code} is not made for {channel}."
    if channel == "outbound_call" and customer["do_not_call"]:
        return "Do not call: no outbound call."
    if channel == "email" and customer["do_not_email"]:
        return "Do not e-mail: no e-mail."
    if offer.marketing and not customer["marketing_opt_in"]:
        return "No marketing consent."
    if offer.marketing and facts.open_complaint:
        return "An open complaint: no marketing offers until it is resolved."
    period_start = now - dt.timedelta(days=offer.period_days)
    cooling_start = now - dt.timedelta(days=offer.cooling_off_days)
    shown = 0
    for past in history:
        if past.status == PresentationStatus.PRESENTED and past.channel == channel and past.expires_at > now:
            return f"The offer {offer.code} is already waiting for an answer on {channel}."
        if (
            past.status == PresentationStatus.DECLINED
            and past.responded_at
            and past.responded_at >= cooling_start
        ):
            return (
                f"Cooling off: declined on {past.responded_at:%Y-%m-%d}, "
                f"{offer.cooling_off_days} days to wait."
            )
        if past.presented_at >= period_start:
            shown += 1
    if shown >= offer.max_presentations:
        return f"Cap reached: {shown} presentations of {offer.code} in {offer.period_days} days."
    return ""


def _arbitrate(proposals: list[Proposal], facts: Facts, now: dt.datetime) -> None:
    """Per channel, the best priority × value first; keep the top N (fewer when the
    channel's daily limit for the customer is nearly used); one offer once per channel."""
    top_n: int = settings.POLICIES_TOP_N_PER_CHANNEL
    limits: dict[str, int] = settings.POLICIES_CHANNEL_DAILY_LIMITS
    day_ago = now - dt.timedelta(days=1)
    by_channel: dict[str, list[Proposal]] = defaultdict(list)
    for proposal in proposals:
        if not proposal.suppressed:
            by_channel[proposal.channel].append(proposal)
    for channel, contenders in by_channel.items():
        used = sum(1 for p in facts.presentations if p.channel == channel and p.presented_at >= day_ago)
        room = min(top_n, max(limits.get(channel, top_n) - used, 0))
        if room == 0:
            for proposal in contenders:
                proposal.suppressed = f"Channel limit: {limits.get(channel)} a day on {channel} reached."
            continue
        contenders.sort(key=lambda p: (-p.score, -p.candidate.priority, p.candidate.id))
        kept: list[Proposal] = []
        for proposal in contenders:
            same = next((k for k in kept if k.offer.id == proposal.offer.id), None)
            if same is not None:
                proposal.outranked_by = [same]  # the same offer, from a stronger policy
            elif len(kept) < room:
                proposal.chosen = True
                kept.append(proposal)
            else:
                proposal.outranked_by = kept  # full from here on: the list no longer changes


def _conclude(verdict: Verdict) -> None:
    if verdict.run_others or any(p.chosen for p in verdict.proposals):
        return
    if any(p.outranked_by for p in verdict.proposals):
        verdict.outcome = DecisionOutcome.OUTRANKED
    else:
        verdict.outcome = DecisionOutcome.SUPPRESSED


def verdict_reason(verdict: Verdict) -> str:
    """Why, in words, for the decision row (built only when the row is written)."""
    if verdict.outcome in (DecisionOutcome.FAILED, DecisionOutcome.HELD_OUT):
        return verdict.note
    chosen = [p for p in verdict.proposals if p.chosen]
    stopped = next((p.suppressed for p in verdict.proposals if p.suppressed), "")
    if chosen:
        return "Presented " + "; ".join(f"{p.offer.code} on {p.channel}" for p in chosen) + "."
    if verdict.run_others:
        names = ", ".join(name for name, _ in verdict.run_others)
        return f"Ran {names}." + (f" Offer stopped: {stopped}" if stopped else "")
    if verdict.outcome == DecisionOutcome.OUTRANKED:
        lost = next(p for p in verdict.proposals if p.outranked_by)
        return f"Outranked on {lost.channel} by {', '.join(w.offer.code for w in lost.outranked_by)}."
    return stopped or verdict.note or "Nothing to do."


# --- Applying a plan, and the listeners ----------------------------------------------------


def apply(
    plan: Plan, *, event: BusinessEvent, now: dt.datetime, write_decisions: bool = True, locked: bool = False
) -> list[Decision]:
    """The actions' effects and the decision rows (inside the caller's transaction;
    ``write_decisions=False``: the caller wrote them with its claim; ``locked``: and
    took the customer's sequence lock with it). The offers chosen are presented
    together (``offers_present``: a fixed number of statements for all of them),
    from the index's copy of each offer."""
    assert event.customer_id is not None  # noqa: S101  (decide() skips events of no customer)
    offers_present(
        event=event, customer_id=event.customer_id, now=now,
        items=[(p.candidate.id, p.offer, p.channel) for p in plan.presentations], locked=locked,
    )  # fmt: skip
    decisions: list[Decision] = []
    for verdict in plan.verdicts:
        run = ActionRun(event=event, customer_id=event.customer_id, policy_id=verdict.candidate.id, now=now)
        task = None
        for name, action_settings in verdict.run_others:
            result = action_registry.implementation(name)(run=run, settings=action_settings)
            if name == "create_task":
                task = result
        decisions.append(
            Decision(
                event_id=event.pk,
                policy_id=verdict.candidate.id,
                policy_version=verdict.candidate.version,
                customer_id=event.customer_id,
                outcome=verdict.outcome,
                reason=verdict_reason(verdict)[:200],
                task=task,
                created_at=now,
            )
        )
    if not write_decisions:
        return []
    Decision.objects.bulk_create(decisions)
    return decisions


# The claim: the one row that says this event was decided. With ``relaxed``, the
# transaction it opens commits without waiting for its WAL to reach the disk
# (synchronous_commit off, for this transaction only). That is safe because
# everything it writes can be written again: the event row itself was committed
# durably by the request that recorded it, and stays undispatched until the
# worker's pass, whose own commit is durable and flushes the WAL up to and
# including this transaction's. So a PostgreSQL crash in between (the only
# thing that can lose such a commit) loses claim, decisions and presentations
# together, and the worker's pass then decides the event afresh. A screen told
# of an offer whose row was lost so is set right by the rows when it reloads.
_CLAIM = (
    "INSERT INTO policies_eventevaluation (event_id, evaluated_at, candidates, matched)"
    " VALUES (%s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
_CLAIM_RELAXED = (
    "INSERT INTO policies_eventevaluation (event_id, evaluated_at, candidates, matched)"
    " SELECT %s, %s, %s, %s FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)


def decide(
    event: BusinessEvent, *, customer: Customer | None = None, relaxed: bool = False
) -> list[Decision] | None:
    """Decide once for one event; None when there was nothing to decide or another
    pass already did.

    The facts are read and the plan made before the claim, so that the claim can
    say how many policies matched in the same statement; a pass that then finds
    the claim taken (another pass decided the event meanwhile) throws its plan
    away. The worker's pass skips events already claimed before reading anything
    (``decide_events``)."""
    if event.customer_id is None:
        return None
    now = timezone.now()
    if now - event.occurred_at > dt.timedelta(hours=settings.POLICIES_EVENT_MAX_AGE_HOURS):
        return None
    candidates = policy_index().candidates(event.type, now)
    if not candidates:
        return None
    try:
        _, facts = facts_load(event, customer, now)
    except Customer.DoesNotExist:
        return None  # erased since: nothing to decide
    plan = evaluate(candidates, facts, now)
    claim: list[Any] = [event.pk, now, len(candidates), len(plan.verdicts)]
    with transaction.atomic():
        # A concurrent pass blocks here until the first commits, then finds the row.
        if any(name == "create_task" for v in plan.verdicts for name, _ in v.run_others):
            # A decision names its task: the tasks first, the decisions after them.
            with server_bound_cursor() as cursor:
                cursor.execute(_CLAIM_RELAXED if relaxed else _CLAIM, claim)
                if cursor.fetchone() is None:
                    return None
            with realtime.batched():  # the frames of every offer this event raised leave together, on commit
                return apply(plan, event=event, now=now)
        decisions = _claim_with_decisions(plan, event=event, now=now, claim=claim, relaxed=relaxed)
        if decisions is None:
            return None
        with realtime.batched():
            apply(plan, event=event, now=now, write_decisions=False, locked=bool(plan.presentations))
    return decisions


def _claim_with_decisions(
    plan: Plan, *, event: BusinessEvent, now: dt.datetime, claim: list[Any], relaxed: bool
) -> list[Decision] | None:
    """The claim and the decision rows in one statement (the decisions are written
    only if the claim was): no task to wait for. None when the claim was taken.

    When the plan presents offers, the same statement takes the customer's sequence
    lock once the claim is won (a pass that finds the claim taken never waits for
    it), so the presentations' insert, a later statement with a later snapshot,
    needs no round trip of its own for it."""
    assert event.customer_id is not None  # noqa: S101  (decide() skips events of no customer)
    rows = [(v.candidate.id, v.candidate.version, v.outcome, verdict_reason(v)[:200]) for v in plan.verdicts]
    lock, lock_params = "", []
    if plan.presentations:
        lock = f", (SELECT count({SEQUENCE_LOCK_SQL}::text) FROM claim)"
        lock_params = sequence_lock_params(event.customer_id)
    with server_bound_cursor() as cursor:
        cursor.execute(
            f"WITH claim AS ({_CLAIM_RELAXED if relaxed else _CLAIM}),"
            " made AS (INSERT INTO policies_decision (event_id, policy_id, policy_version, customer_id,"
            "  outcome, reason, task_id, created_at)"
            "  SELECT claim.event_id, d.policy_id, d.version, %s, d.outcome, d.reason, NULL, %s"
            "  FROM claim, unnest(%s::bigint[], %s::integer[], %s::text[], %s::text[])"
            "  WITH ORDINALITY AS d(policy_id, version, outcome, reason, n) ORDER BY d.n RETURNING id)"
            f" SELECT (SELECT count(*) FROM claim), ARRAY(SELECT id FROM made){lock}",
            [*claim, event.customer_id, now, [r[0] for r in rows], [r[1] for r in rows],
             [r[2] for r in rows], [r[3] for r in rows], *lock_params],
        )  # fmt: skip
        claimed, ids = cursor.fetchone()[:2]
    if not claimed:
        return None
    return [
        Decision(id=pk, event_id=event.pk, policy_id=policy_id, policy_version=version,
                 customer_id=event.customer_id, outcome=outcome, reason=reason, created_at=now)
        for pk, (policy_id, version, outcome, reason) in zip(sorted(ids), rows, strict=True)
    ]  # fmt: skip


def decide_events(events: Sequence[BusinessEvent]) -> None:
    """The deferred listener (crm CRM_EVENT_LISTENERS): runs in the dispatch
    transaction, so an event is marked dispatched only with its decisions.

    A batch of a touchpoint ingest is a thousand events of which few, often none,
    trigger a policy: the index says which (no I/O), and only those cost a read.
    Events the on-commit pass already decided (nearly all of the rest) and their
    customers then cost one statement for the whole batch, one array parameter
    whatever its size (``IN`` would take a placeholder per value and be parsed
    and planned afresh for each batch size)."""
    now = timezone.now()
    oldest = now - dt.timedelta(hours=settings.POLICIES_EVENT_MAX_AGE_HOURS)
    index = policy_index()
    # The filters decide() applies first, applied here so that a skipped event reads nothing.
    events = [
        e
        for e in events
        if e.customer_id is not None and e.occurred_at >= oldest and index.candidates(e.type, now)
    ]
    if not events:
        return
    customers = _customers_unclaimed(events)
    for event in events:
        customer = customers.get(event.pk)
        if customer is not None:
            decide(event, customer=customer)


def _customers_unclaimed(events: Sequence[BusinessEvent]) -> dict[int, Customer]:
    """Of these events, those not claimed yet, each with its customer (the facts'
    columns only), in one statement; an event whose customer was erased is left out
    (decide() would find nothing to decide). One customer row serves all its events."""
    columns, attnames = _customer_columns()
    selected = ", ".join(
        f"c.{column}::text" if column == "addresses" else f"c.{column}" for column in columns
    )
    with server_bound_cursor() as cursor:
        cursor.execute(
            f"SELECT e.id, {selected} FROM unnest(%s::bigint[], %s::bigint[]) AS e(id, customer_id)"
            " JOIN crm_customer c ON c.id = e.customer_id"
            " WHERE NOT EXISTS (SELECT 1 FROM policies_eventevaluation v WHERE v.event_id = e.id)",
            [[e.pk for e in events], [e.customer_id for e in events]],
        )
        rows = cursor.fetchall()
    addresses, pk = attnames.index("addresses"), attnames.index("id")
    built: dict[int, Customer] = {}
    out: dict[int, Customer] = {}
    for event_id, *values in rows:
        customer = built.get(values[pk])
        if customer is None:
            values[addresses] = json.loads(values[addresses]) if values[addresses] else []
            customer = built[values[pk]] = Customer.from_db(connection.alias, attnames, values)
        out[event_id] = customer
    return out


_on_commit_pass = threading.local()


def decide_on_commit(events: Sequence[BusinessEvent]) -> None:
    """The real-time listener: the same decisions, right after the recording commit.
    An event whose pass fails here is decided by the worker's pass.

    Only the events the request itself recorded are decided here. The events this
    pass records in turn (``offer.presented`` for each offer it makes) are left to
    the worker: deciding them here too would chain one decision into the next
    inside the caller's request (each presentation an event, each event a round of
    policies), and the request's latency would grow with the number of policies
    that listen to offers. The outbox still dispatches them, in seconds."""
    if not settings.POLICIES_DECIDE_ON_COMMIT or len(events) > settings.POLICIES_DECIDE_ON_COMMIT_MAX_EVENTS:
        # A bulk load (an import, a batch of 500 from an integration) would hold its
        # request for seconds: the worker decides those.
        return
    if getattr(_on_commit_pass, "active", False):
        return
    _on_commit_pass.active = True
    try:
        for event in events:
            try:
                decide(event, relaxed=True)
            except Exception:
                logger.exception("deciding event %s on commit failed; the worker decides it", event.pk)
    finally:
        _on_commit_pass.active = False
