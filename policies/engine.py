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

The index lives in ``policies/index.py``, the facts in ``policies/facts.py``, the
evaluation in ``policies/evaluation.py``; this module claims, applies and listens.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from crm import realtime
from crm.models import BusinessEvent, Customer
from crm.services.events import server_bound_cursor
from policies import actions as action_registry
from policies import conditions

# The engine is where callers (the listeners, simulation, the admin, scripting, the
# benches and tests) find the index, the facts and the evaluation.
from policies.evaluation import Plan, Verdict, evaluate, in_holdout, verdict_reason  # noqa: F401
from policies.facts import (  # noqa: F401
    CUSTOMER_COLUMNS,
    Facts,
    PastPresentation,
    customer_columns,
    customer_map,
    event_map,
    facts_load,
)
from policies.index import (  # noqa: F401
    _ANNOUNCE,
    CHANGES_CHANNEL,
    GENERATION_KEY,
    OfferInfo,
    _listener,
    candidate_for,
    index_changed_on_commit,
    index_forget,
    index_invalidate,
    offer_info,
    policy_index,
)
from policies.models import (
    Decision,
    PresentationStatus,
)
from policies.services import ActionRun, ClaimFirst, offers_present

logger = logging.getLogger(__name__)


# --- Applying a plan, and the listeners ----------------------------------------------------


def apply(
    plan: Plan,
    *,
    event: BusinessEvent,
    now: dt.datetime,
    write_decisions: bool = True,
    recorded: list[BusinessEvent] | None = None,
) -> list[Decision]:
    """The actions' effects and the decision rows (inside the caller's transaction;
    ``write_decisions=False``: the caller wrote them with its claim). The offers chosen are presented
    together (``offers_present``: a fixed number of statements for all of them),
    from the index's copy of each offer, with the tags the plan puts on the customer.
    ``recorded``: gets the ``offer.presented`` events the presentations recorded."""
    assert event.customer_id is not None  # noqa: S101  (decide() skips events of no customer)
    # The tags are written with the presentations (one statement for both).
    tags = [
        (action_settings["tag"], verdict.candidate.id)
        for verdict in plan.verdicts
        for name, action_settings in verdict.run_others
        if name == "tag_customer"
    ]
    offers_present(
        event=event, customer_id=event.customer_id, now=now,
        items=[(p.candidate.id, p.offer, p.channel) for p in plan.presentations], tags=tags,
        returning=False, recorded=recorded,
    )  # fmt: skip
    decisions: list[Decision] = []
    for verdict in plan.verdicts:
        run = ActionRun(event=event, customer_id=event.customer_id, policy_id=verdict.candidate.id, now=now)
        task = None
        for name, action_settings in verdict.run_others:
            if name == "tag_customer":
                continue
            result = action_registry.implementation(name)(run=run, settings=action_settings)
            if name == "create_task":
                task = result
        if not write_decisions:
            continue  # the caller wrote them with its claim
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
    if decisions:
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


# The claim and its decision rows as CTEs (named parameters) that ``offers_present``
# writes before the offers, in the same statement (``_claim_and_present``).
_CLAIM_NAMED = (
    "claim AS (INSERT INTO policies_eventevaluation (event_id, evaluated_at, candidates, matched)"
    " {values} ON CONFLICT (event_id) DO NOTHING RETURNING event_id),"
    " decided AS (INSERT INTO policies_decision (event_id, policy_id, policy_version, customer_id, outcome,"
    "  reason, task_id, created_at)"
    "  SELECT claim.event_id, (d.row->>0)::bigint, (d.row->>1)::integer, %(customer)s, d.row->>2, d.row->>3,"
    "  NULL, %(claim_at)s FROM claim,"
    "  json_array_elements(%(claim_decisions)s::json) WITH ORDINALITY AS d(row, n) ORDER BY d.n RETURNING id)"
)
_CLAIM_NAMED_RELAXED = _CLAIM_NAMED.replace(
    "{values}",
    "SELECT %(claim_event)s, %(claim_at)s, %(claim_candidates)s, %(claim_matched)s"
    " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed",
)
_CLAIM_NAMED = _CLAIM_NAMED.replace(
    "{values}", "VALUES (%(claim_event)s, %(claim_at)s, %(claim_candidates)s, %(claim_matched)s)"
)


def decide(
    event: BusinessEvent, *, customer: Customer | None = None, relaxed: bool = False
) -> list[Decision] | None:
    """Decide once for one event; None when there was nothing to decide or another
    pass already did. Then, in a transaction of its own, the ``offer.presented``
    events its offers recorded (``_decide_followers``).

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
    recorded: list[BusinessEvent] = []
    # Offers and tags only (the usual case): one statement, its own transaction.
    with nullcontext() if _one_statement(plan) else transaction.atomic():
        decisions = _claim_and_apply(plan, event=event, now=now, candidates=len(candidates), relaxed=relaxed,
                                     recorded=recorded)  # fmt: skip
    if decisions is not None and recorded:
        # After the commit: the offers of this event are on their way to the screens.
        after = _facts_after(facts, plan, [e.type for e in recorded], now)
        _decide_followers(recorded, after, now=now, relaxed=relaxed)
    return decisions


def _claim_and_apply(
    plan: Plan, *, event: BusinessEvent, now: dt.datetime, candidates: int, relaxed: bool,
    recorded: list[BusinessEvent],
) -> list[Decision] | None:  # fmt: skip
    """Claim the event and write the plan's effects, inside the caller's transaction;
    None (nothing written) when the claim was taken. A concurrent pass blocks on the
    claim until the first commits, then finds the row."""
    claim: list[Any] = [event.pk, now, candidates, len(plan.verdicts)]
    if any(name == "create_task" for v in plan.verdicts for name, _ in v.run_others):
        # A decision names its task: the tasks first, the decisions after them.
        with server_bound_cursor() as cursor:
            cursor.execute(_CLAIM_RELAXED if relaxed else _CLAIM, claim)
            if cursor.fetchone() is None:
                return None
        with realtime.batched():  # the frames of every offer this event raised leave together, on commit
            return apply(plan, event=event, now=now, recorded=recorded)
    if _one_statement(plan):
        return _claim_and_present(plan, event=event, now=now, claim=claim, relaxed=relaxed, recorded=recorded)
    decisions = _claim_with_decisions(plan, event=event, now=now, claim=claim, relaxed=relaxed)
    if decisions is None:
        return None
    with realtime.batched():
        apply(plan, event=event, now=now, write_decisions=False, recorded=recorded)
    return decisions


def _one_statement(plan: Plan) -> bool:
    """Whether the plan's effects are offers and tags only, which the claim's own
    statement writes (``_claim_and_present``)."""
    return bool(plan.presentations) and all(
        name == "tag_customer" for verdict in plan.verdicts for name, _ in verdict.run_others
    )


def _claim_and_present(
    plan: Plan, *, event: BusinessEvent, now: dt.datetime, claim: list[Any], relaxed: bool,
    recorded: list[BusinessEvent],
) -> list[Decision] | None:  # fmt: skip
    """The claim, the decision rows, the offers with their events and the tags, in
    one statement (``offers_present`` after the claim's CTEs: nothing of it is
    written when the claim was taken, then None)."""
    assert event.customer_id is not None  # noqa: S101  (decide() skips events of no customer)
    rows = [(v.candidate.id, v.candidate.version, v.outcome, verdict_reason(v)[:200]) for v in plan.verdicts]
    first = ClaimFirst(
        ctes=_CLAIM_NAMED_RELAXED if relaxed else _CLAIM_NAMED,
        params={"claim_event": claim[0], "claim_at": claim[1], "claim_candidates": claim[2],
                "claim_matched": claim[3], "claim_decisions": json.dumps(rows)},
        columns=", ARRAY(SELECT id FROM decided)",
    )  # fmt: skip
    tags = [
        (action_settings["tag"], verdict.candidate.id)
        for verdict in plan.verdicts
        for _, action_settings in verdict.run_others
    ]
    with realtime.batched():  # the frames of every offer this event raised leave together, on commit
        offers_present(
            event=event, customer_id=event.customer_id, now=now, tags=tags, returning=False,
            items=[(p.candidate.id, p.offer, p.channel) for p in plan.presentations], claim=first,
            recorded=recorded,
        )  # fmt: skip
    if first.values is None:
        return None
    return [
        Decision(id=pk, event_id=event.pk, policy_id=policy_id, policy_version=version,
                 customer_id=event.customer_id, outcome=outcome, reason=reason, created_at=now)
        for pk, (policy_id, version, outcome, reason) in zip(sorted(first.values[0]), rows, strict=True)
    ]  # fmt: skip


def _facts_after(facts: Facts, plan: Plan, recorded: Sequence[str], now: dt.datetime) -> Facts:
    """The customer's facts once ``plan`` is applied, as ``facts_load`` would read
    them at ``now``: its presentations waiting for an answer, and the events it
    recorded (their types: each presentation's ``offer.presented``, at ``now``) in
    the history, which keeps the POLICIES_HISTORY_LIMIT most recent. The customer's
    own columns are what they were: no action changes one a condition reads (tags
    are not facts)."""
    presentations = list(facts.presentations)
    for proposal in plan.presentations:
        presentations.append(
            PastPresentation(
                proposal.offer.id, proposal.channel, PresentationStatus.PRESENTED, now, None,
                now + dt.timedelta(hours=proposal.offer.expires_after_hours),
            )
        )  # fmt: skip
    ages = {kind: list(values) for kind, values in facts.history.ages.items()}
    limit: int = settings.POLICIES_HISTORY_LIMIT
    kept = sum(len(values) for values in ages.values())
    for kind in recorded:
        if kept >= limit:  # the oldest event drops out of the window the read keeps
            oldest = max((k for k in ages if ages[k]), key=lambda k: max(ages[k]))
            ages[oldest].remove(max(ages[oldest]))
            kept -= 1
        ages.setdefault(kind, []).append(0.0)
        kept += 1
    return Facts(
        event=facts.event, customer=facts.customer, history=conditions.History(ages),
        presentations=presentations, open_complaint=facts.open_complaint,
    )  # fmt: skip


# The ids of events claimed by ``_decide_followers`` in this thread whose real-time
# listeners have not run yet (they run on the commit of the transaction that recorded
# them, in a worker after the followers were decided): ``decide_on_commit`` skips them.
_followed = threading.local()


class _ClaimTaken(Exception):
    """Another pass decided one of the followers: the facts in hand are no longer
    sure to be the customer's, so the whole followers' pass is undone."""


def _decide_followers(
    events: Sequence[BusinessEvent], facts: Facts, *, now: dt.datetime, relaxed: bool
) -> None:
    """Decide the ``offer.presented`` events a decision recorded, in the same pass
    and in one transaction (none when they only decide), with the facts the
    decision read brought up to date in memory (``_facts_after``) instead of read
    again: those a policy listens to are decided as ``decide`` would decide them
    one after the other, each seeing what the ones before it presented; then the
    events their own offers recorded, and so on, up to POLICIES_FOLLOW_MAX_EVENTS
    events for the pass. The events of one
    round are claimed, with their decision rows, in one statement.

    Whatever is not decided here (past the bound; or every one of them, when another
    pass took a claim, or a listener failed) stays unclaimed for the worker's pass,
    which reads the facts afresh. The events stay undispatched either way: the
    outbox still hands them to every deferred listener."""
    budget: int = settings.POLICIES_FOLLOW_MAX_EVENTS
    index = policy_index()
    # The real-time listeners of ``events`` run when the transaction that recorded them
    # commits: already, unless that transaction is still open around this pass (a
    # worker's dispatch). Those of the events recorded here run on this commit.
    pending = set() if connection.in_atomic_block else {event.pk for event in events}
    followed: set[int] = _followed.__dict__.setdefault("ids", set())
    claimed: list[int] = []
    waiting = list(events)
    try:
        with ExitStack() as stack:
            while waiting and budget > 0:
                planned: list[tuple[BusinessEvent, Plan, int]] = []
                for event in waiting:
                    candidates = index.candidates(event.type, now)
                    if not candidates:
                        continue  # nothing listens (the common case): no statement
                    if budget == 0:
                        break
                    budget -= 1
                    facts.event = event_map(event)
                    plan = evaluate(candidates, facts, now)
                    planned.append((event, plan, len(candidates)))
                    if plan.presentations:
                        offers = ["offer.presented"] * len(plan.presentations)
                        facts = _facts_after(facts, plan, offers, now)
                if not planned:
                    break
                if not claimed and any(plan.presentations or any(v.run_others for v in plan.verdicts)
                                       for _, plan, _ in planned):  # fmt: skip
                    stack.enter_context(transaction.atomic())
                # Otherwise the claims and decisions are the round's one statement, and the
                # last round: no transaction of its own (a claim lost to another pass then
                # leaves the others decided, rightly: no decision here changed the facts).
                waiting = _followers_write(planned, now=now, relaxed=relaxed)
                claimed.extend(event.pk for event, _, _ in planned if event.pk not in pending)
                followed.update(claimed)
    except _ClaimTaken:
        followed.difference_update(claimed)  # rolled back: the worker decides them
    except Exception:
        followed.difference_update(claimed)
        logger.exception("deciding the events recorded with event %s failed; the worker will", events[0].pk)
    if len(followed) > _FOLLOWED_KEPT:
        followed.clear()  # ids whose transaction rolled back never reach a listener


def _followers_write(
    planned: Sequence[tuple[BusinessEvent, Plan, int]], *, now: dt.datetime, relaxed: bool
) -> list[BusinessEvent]:
    """Claim one round of followers and write their plans' effects; the events their
    offers recorded. Raises _ClaimTaken if any claim was taken."""
    recorded: list[BusinessEvent] = []
    simple = []
    for event, plan, candidates in planned:
        if any(name == "create_task" for v in plan.verdicts for name, _ in v.run_others):
            if _claim_and_apply(plan, event=event, now=now, candidates=candidates, relaxed=relaxed,
                                recorded=recorded) is None:  # fmt: skip
                raise _ClaimTaken
        else:
            simple.append((event, plan, candidates))
    if not simple:
        return recorded
    customer_id = simple[0][0].customer_id
    assert customer_id is not None  # noqa: S101  (followers are the customer's offer.presented events)
    params: dict[str, Any] = {
        "now": now, "customer": customer_id,
        "events": json.dumps([
            {"id": event.pk, "candidates": candidates, "matched": len(plan.verdicts)}
            for event, plan, candidates in simple
        ]),
        "decisions": json.dumps([
            (event.pk, v.candidate.id, v.candidate.version, v.outcome, verdict_reason(v)[:200])
            for event, plan, _ in simple for v in plan.verdicts
        ]),
    }  # fmt: skip
    with server_bound_cursor() as cursor:
        cursor.execute(_CLAIM_MANY_RELAXED if relaxed else _CLAIM_MANY, params)
        won = cursor.fetchone()[0]
    if won != len(simple):
        raise _ClaimTaken
    with realtime.batched():
        for event, plan, _ in simple:
            apply(plan, event=event, now=now, write_decisions=False, recorded=recorded)
    return recorded


# The claims of several events of one customer and their decision rows, in one statement
# (``_decide_followers``); each claim is taken only if no other pass took it first.
_CLAIM_MANY = (
    "WITH e AS (SELECT * FROM json_to_recordset(%(events)s::json) AS (id bigint, candidates integer,"
    "  matched integer)),"
    " claim AS (INSERT INTO policies_eventevaluation (event_id, evaluated_at, candidates, matched)"
    "  SELECT e.id, %(now)s, e.candidates, e.matched FROM e{relaxed}"
    "  ON CONFLICT (event_id) DO NOTHING RETURNING event_id),"
    " made AS (INSERT INTO policies_decision (event_id, policy_id, policy_version, customer_id, outcome,"
    "  reason, task_id, created_at)"
    "  SELECT claim.event_id, (d.row->>1)::bigint, (d.row->>2)::integer, %(customer)s, d.row->>3, d.row->>4,"
    "  NULL, %(now)s FROM json_array_elements(%(decisions)s::json) WITH ORDINALITY AS d(row, n)"
    "  JOIN claim ON claim.event_id = (d.row->>0)::bigint ORDER BY d.n RETURNING 1)"
    " SELECT (SELECT count(*) FROM claim), (SELECT count(*) FROM made)"
)
_CLAIM_MANY_RELAXED = _CLAIM_MANY.replace(
    "{relaxed}", ", (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed"
)
_CLAIM_MANY = _CLAIM_MANY.replace("{relaxed}", "")


_FOLLOWED_KEPT = 10_000


def _claim_with_decisions(
    plan: Plan, *, event: BusinessEvent, now: dt.datetime, claim: list[Any], relaxed: bool
) -> list[Decision] | None:
    """The claim and the decision rows in one statement (the decisions are written
    only if the claim was): no task to wait for. None when the claim was taken."""
    assert event.customer_id is not None  # noqa: S101  (decide() skips events of no customer)
    rows = [(v.candidate.id, v.candidate.version, v.outcome, verdict_reason(v)[:200]) for v in plan.verdicts]
    # The rows as one JSON parameter: psycopg adapts list parameters in Python, element
    # by element, at a cost above the statement's round trip.
    decided = json.dumps(rows)
    with server_bound_cursor() as cursor:
        cursor.execute(
            f"WITH claim AS ({_CLAIM_RELAXED if relaxed else _CLAIM}),"
            " made AS (INSERT INTO policies_decision (event_id, policy_id, policy_version, customer_id,"
            "  outcome, reason, task_id, created_at)"
            "  SELECT claim.event_id, (d.row->>0)::bigint, (d.row->>1)::integer, %s, d.row->>2, d.row->>3,"
            "  NULL, %s FROM claim, json_array_elements(%s::json) WITH ORDINALITY AS d(row, n)"
            "  ORDER BY d.n RETURNING id)"
            " SELECT (SELECT count(*) FROM claim), ARRAY(SELECT id FROM made)",
            [*claim, event.customer_id, now, decided],
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
    columns, attnames = customer_columns()
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
    followed: set[int] = _followed.__dict__.setdefault("ids", set())
    if followed:
        # Decided already, by the pass that recorded them (``_decide_followers``).
        decided = followed.intersection(event.pk for event in events)
        followed.difference_update(decided)
        events = [event for event in events if event.pk not in decided]
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
