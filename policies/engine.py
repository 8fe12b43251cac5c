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
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from crm import realtime
from crm.models import BusinessEvent, Customer
from crm.services.events import server_bound_cursor
from policies import actions as action_registry

# The engine is where callers (the listeners, simulation, the admin, scripting, the
# benches and tests) find the index, the facts and the evaluation.
from policies.evaluation import Plan, Verdict, evaluate, in_holdout, verdict_reason  # noqa: F401
from policies.facts import (  # noqa: F401
    CUSTOMER_COLUMNS,
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
)
from policies.services import SEQUENCE_LOCK_SQL, ActionRun, offers_present, sequence_lock_params

logger = logging.getLogger(__name__)


# --- Applying a plan, and the listeners ----------------------------------------------------


def apply(
    plan: Plan, *, event: BusinessEvent, now: dt.datetime, write_decisions: bool = True, locked: bool = False
) -> list[Decision]:
    """The actions' effects and the decision rows (inside the caller's transaction;
    ``write_decisions=False``: the caller wrote them with its claim; ``locked``: and
    took the customer's sequence lock with it). The offers chosen are presented
    together (``offers_present``: a fixed number of statements for all of them),
    from the index's copy of each offer, with the tags the plan puts on the customer."""
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
        items=[(p.candidate.id, p.offer, p.channel) for p in plan.presentations], locked=locked, tags=tags,
        returning=False,
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
            f" SELECT (SELECT count(*) FROM claim), ARRAY(SELECT id FROM made){lock}",
            [*claim, event.customer_id, now, decided, *lock_params],
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
