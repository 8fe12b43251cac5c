"""Touchpoint sync, claiming: which pending inbox results a worker takes next.

A result is claimed by the row lock the applying transaction takes on it
(``FOR NO KEY UPDATE SKIP LOCKED``): no other worker can take it until that
transaction ends, which writes its outcome with its effects, or ends without them
(a lost worker: the lock goes with it, and the result is free again at once).
Claims read the backlog window by window from a position the workers share, keep
one customer's results in the source's order, and note themselves in Redis so a
lost worker's attempt is still counted. crm.services.touchpoint_apply applies what
they take.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from config.redis_client import redis_client
from crm import json_codec

logger = logging.getLogger(__name__)


@dataclass
class Claimed:
    """A pending result this worker claimed, as the claim returned it."""

    id: int
    batch_id: int
    source_system_id: int
    external_id: str
    record_kind: str
    customer_key: str
    sequence: int | None
    occurred_at: dt.datetime | None
    payload: dict[str, Any]
    attempts: int
    customer_id: int | None


# The claim, in two steps per window of the inbox, inside the transaction that
# applies what it takes.
#
# 1. ``_CLAIM_WINDOW``: the next pending results by arrival, read off the pending
#    index in its own order (a range scan that stops after ``window`` rows).
# 2. ``_CLAIM``: of those, the ones free to take (not in a retry's backoff, not
#    locked by another worker's transaction), first come first (by id: see the
#    statement). A result waits while an earlier result of the same source and
#    customer key is still pending (claimed or not) or waits in the review queue, so
#    one customer's results apply in the source's order across batches and workers,
#    and nothing of theirs passes a result an administrator has yet to place. The
#    order (``result_order``): by sequence, then occurred_at, then arrival; a result
#    without a sequence comes before the numbered ones of its key, one without a time
#    before the timed ones (a missing value is never read as 0). SKIP LOCKED lets
#    concurrent workers take disjoint sets without waiting on each other. The LIMIT 1
#    keeps the NOT EXISTS a per-row probe of the pending-order index.
#
# The claim is the row lock and nothing else: no new row version, no commit of its own.
# The lock lasts as long as the transaction that applies the results and writes their
# outcome, and goes with it if that transaction ends any other way (the worker
# killed, its connection cut), when the results are free again at once. A claim
# committed on its own (an update of the rows, then their lock again in the apply)
# wrote each row twice more and held it for a lease after a crash.
#
# A lost worker's attempt is still counted, so a result that kills its worker is
# dead-lettered after CRM_INGEST_MAX_ATTEMPTS instead of killing the next one forever:
# before applying, a claim notes its ids in Redis (``_claim_note``), outside the
# transaction, and removes the note after the commit. A note whose owner holds no
# transaction any more (its advisory lock is free) is a lost attempt, which the next
# run counts on the results still pending before it claims (``lost_claims_count``,
# committed on its own: counted inside a claim that is lost in turn, it would be lost
# with it, and a result that kills every worker would never reach its limit).
#
# Why the window: in one statement, the planner (whose statistics of the inbox are
# always stale: thousands of rows arrive and leave the pending state between two
# analyses) scanned every pending and waiting row of the inbox, probed the order
# of each, then sorted them to keep the oldest thousand: a claim cost grew with the
# backlog (EXPLAIN ANALYZE: 20,000 probes and 95,000 buffers for 1,000 rows with a
# backlog of 20,000; minutes with a backlog of a million). A window bounds each
# statement to ``window`` probes whatever the backlog; the next window starts after
# the last row of this one, so a backlog whose head is held (claimed by another
# worker, waiting behind a review) is passed over, never waited on.
#
# Where to start: the position the claims have read up to, shared by the workers
# through Redis. From the head, a claim probed the thousand rows another worker held
# (and the order of each) before reaching rows it could take, and walked the entries
# applied results leave in the pending index until a vacuum (in process, 11 us of
# the database's CPU per result claimed with the head held, 6 us without). So a
# claim reads from the position, and moves it past each window before it claims
# the window's rows, with a compare-and-set (``_POSITION_MOVE``): two workers that
# start at once (they often do: they finish their batches together) would otherwise
# read the same window and split it row by row. When another claim moved it first,
# the window is left to that claim and this one reads on from there.
#
# What lies behind the position is not forgotten: a claim that finds fewer than it
# wants after it goes on from the head up to it, and one claim in ``HEAD_EVERY`` of
# each process reads from the head (and leaves the position alone), so a result
# passed over (held behind an earlier one of its key, released after an error, or
# committed by a batch that took longer than a later one) waits a few claims at
# most. The position is a hint, never a promise: with Redis away, or the inbox
# emptied, a claim reads from the head as before.
#
# The window comes back as one row: how many, their ids as the JSON array the claim
# takes, and where the next window starts (its last row by arrival, the time as
# text). Fetched as rows, a window's two thousand times parsed into datetimes in
# Python were a sixth of a worker's samples while it applied.
_CLAIM_WINDOW = """
WITH w AS MATERIALIZED (
    SELECT r.id, r.received_at FROM crm_touchpointresult r
    WHERE r.status = 'pending' AND (r.received_at, r.id) > (%(after_at)s::timestamptz, %(after_id)s)
      AND (r.received_at, r.id) <= (%(until_at)s::timestamptz, %(until_id)s)
    ORDER BY r.received_at, r.id
    LIMIT %(window)s
)
SELECT count(*), COALESCE(json_agg(w.id), '[]')::text, max(w.received_at)::text,
    max(w.id) FILTER (WHERE w.received_at = (SELECT max(received_at) FROM w))
FROM w
"""

_CLAIM = """
SELECT r.id, r.batch_id, r.source_system_id, r.external_id, r.record_kind, r.customer_key, r.sequence,
    r.occurred_at::text, r.payload, r.attempts + 1, r.customer_id
FROM crm_touchpointresult r
WHERE r.id = ANY(ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)::bigint))
  -- Written so no partial index of pending rows matches it: their statistics (see
  -- above) make a scan of a whole one look cheaper than the window's primary-key probes.
  AND (r.status || '') = 'pending'
  AND (r.claimed_at IS NULL OR r.claimed_at < %(stale)s)
  AND (r.customer_key = '' OR NOT EXISTS (
        SELECT 1 FROM crm_touchpointresult e
        WHERE e.source_system_id = r.source_system_id AND e.customer_key = r.customer_key
          AND e.status IN ('pending', 'review') AND e.id <> r.id
          AND (e.sequence IS NOT NULL, COALESCE(e.sequence, 0), e.occurred_at IS NOT NULL,
               COALESCE(e.occurred_at, '-infinity'::timestamptz), e.id)
            < (r.sequence IS NOT NULL, COALESCE(r.sequence, 0), r.occurred_at IS NOT NULL,
               COALESCE(r.occurred_at, '-infinity'::timestamptz), r.id)
        LIMIT 1))
-- By id within the window (its rows arrived in about that order): the primary key's
-- scan of the window's ids is in that order, so it stops once ``limit`` rows qualify,
-- where ordering by arrival time probed every row of the window and sorted them.
ORDER BY r.id
LIMIT %(limit)s
-- What the outcome's UPDATE takes anyway (it changes no key), so it need not upgrade it.
FOR NO KEY UPDATE SKIP LOCKED
"""

# The start of a claim, one round trip: the transaction's settings (see
# touchpoint_results_claim) and this claim's advisory lock, held while it lives, so a
# note of it in Redis is known to be lost once the lock is free.
_CLAIM_START = """
SELECT set_config('synchronous_commit', 'off', true), set_config('enable_seqscan', 'off', true),
    set_config('enable_sort', 'off', true), pg_advisory_xact_lock(%(own)s)
"""

# The planner's settings back as they were once the claim's statements are planned:
# the apply's own statements are planned as everywhere else.
_CLAIM_END = "SET LOCAL enable_seqscan TO DEFAULT; SET LOCAL enable_sort TO DEFAULT"

# A lost attempt counted on its results still pending (a result its worker applied
# or gave up on before it was lost has its outcome and attempts already).
_LOST_ATTEMPTS = """
UPDATE crm_touchpointresult SET attempts = attempts + 1
WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)::bigint)) AND (status || '') = 'pending'
"""


def result_order(sequence: int | None, occurred_at: dt.datetime | None, pk: int) -> tuple[Any, ...]:
    """A result's place in its source's order for one customer key, as the claim
    compares them: sequence, then occurred_at, then arrival (the id); a missing
    sequence or time sorts before any given one."""
    return (
        sequence is not None, sequence or 0, occurred_at is not None,
        occurred_at or dt.datetime.min.replace(tzinfo=dt.UTC), pk,
    )  # fmt: skip


# See "Where to start" above.
HEAD_EVERY = 8
_claims_since_head = 0
_HEAD = ("-infinity", 0)
_END = ("infinity", 2**63 - 1)


def _position_key() -> str:
    return f"crm:ingest:claimed-to:{connection.settings_dict['NAME']}"


# Move the position from what the claim last saw to the end of the window it is
# about to claim, unless another claim moved it meanwhile: then answer where it is.
_POSITION_MOVE = """
local now = redis.call('GET', KEYS[1])
if (now or '') == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
    return 1
end
return now
"""
_POSITION_TTL_SECONDS = 3600


def _position_decode(raw: Any) -> tuple[str, int] | None:
    at, _, pk = (raw.decode() if isinstance(raw, bytes) else str(raw)).rpartition("|")
    return (at, int(pk)) if at and pk.isdigit() else None


def _position_encode(position: tuple[str, int] | None) -> str:
    return "" if position is None else f"{position[0]}|{position[1]}"


def _position_get() -> tuple[str, int] | None:
    """Where the claims have read the backlog up to: (received_at as text, id)."""
    try:
        raw = redis_client().get(_position_key())
    except Exception:  # a hint: without Redis, the claim reads from the head
        logger.debug("could not read the claims' position", exc_info=True)
        return None
    return _position_decode(raw) if raw else None


def _position_move(seen: tuple[str, int] | None, to: tuple[str, int]) -> tuple[bool, tuple[str, int] | None]:
    """Move the position from ``seen`` to ``to``: (True, to), or (False, where another
    claim moved it). Without Redis, (True, to): the claim goes on as if it had."""
    try:
        answer = redis_client().eval(
            _POSITION_MOVE, 1, _position_key(), _position_encode(seen), _position_encode(to),
            _POSITION_TTL_SECONDS)  # fmt: skip
    except Exception:
        logger.debug("could not move the claims' position", exc_info=True)
        return True, to
    if answer == 1:
        return True, to
    return False, _position_decode(answer) if answer else None


def lease() -> dt.timedelta:
    return dt.timedelta(seconds=settings.CRM_INGEST_LEASE_SECONDS)


def _notes_key() -> str:
    """The Redis hash of the claims in progress, one per database (tests, the demo
    and the benchmarks share a Redis server)."""
    return f"crm:ingest:claims:{connection.settings_dict['NAME']}"


def claim_lock_key(token: str) -> int:
    """The advisory lock a claim holds while its transaction lives (64 bits of its token)."""
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "big", signed=True)


def _claim_note(token: str, claimed: list[Claimed]) -> bool:
    """Note a claim in Redis before its results are applied; False if Redis could
    not take it (the attempt is then counted only if its transaction commits)."""
    note = {"lock": claim_lock_key(token), "ids": [c.id for c in claimed], "at": time.time()}
    try:
        redis_client().hset(_notes_key(), token, json.dumps(note))
    except Exception:
        logger.warning("could not note a claim of %s results in Redis", len(claimed), exc_info=True)
        return False
    return True


def _claim_forget(token: str) -> None:
    """The claim's outcome is written (or counted): its note goes."""
    try:
        redis_client().hdel(_notes_key(), token)
    except Exception:
        logger.warning("could not remove a claim's note from Redis; it is counted as lost", exc_info=True)


# A note younger than this is not looked at: its claim is most likely at work (a
# batch takes a fraction of a second), and a lost one waits no longer than this to
# be counted (never lost: the note stays until counted).
_NOTE_AGE_SECONDS = 5.0


def lost_claims_count(*, token: str = "") -> int:
    """Count the attempts of the claims noted in Redis whose transaction ended
    without removing its note (the worker was lost); return how many claims.

    Each note is counted once, by whoever removes it from Redis, on the results
    still pending (one its worker applied or gave up on has its attempts written);
    in its own transaction, not the caller's claim. The note of a claim that
    finished but had yet to remove it may add one attempt to a result it left
    pending for a retry: never fewer than were made."""
    try:
        raw = redis_client().hgetall(_notes_key())
    except Exception:
        logger.warning(
            "could not read the claims' notes in Redis; lost attempts are counted later", exc_info=True
        )
        return 0
    notes: dict[str, dict[str, Any]] = {}
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else field
        try:
            note = json.loads(value)
        except ValueError:
            note = {"lock": 0, "ids": [], "at": 0}
        if name != token and time.time() - float(note.get("at", 0)) >= _NOTE_AGE_SECONDS:
            notes[name] = note
    if not notes:
        return 0
    counted = 0
    with transaction.atomic(), connection.cursor() as cursor:
        # Free: that claim's transaction is over. Held here until this one ends, so no
        # other run counts the same note meanwhile (Redis decides in any case).
        cursor.execute(
            "SELECT ARRAY(SELECT pg_try_advisory_xact_lock(k)"
            " FROM unnest(%s::bigint[]) WITH ORDINALITY AS o(k, n) ORDER BY n)",
            [[int(n.get("lock", 0)) for n in notes.values()]],
        )
        free = cursor.fetchone()[0]
        for (name, note), over in zip(notes.items(), free, strict=True):
            if not over:
                continue
            try:
                removed = redis_client().hdel(_notes_key(), name)
            except Exception:
                logger.warning("could not take a lost claim's note from Redis", exc_info=True)
                break
            if removed:
                cursor.execute(_LOST_ATTEMPTS, [json.dumps(note.get("ids", []))])
                counted += 1
    if counted:
        logger.warning("counted %s lost attempts at touchpoint results (their worker was lost)", counted)
    return counted


def touchpoint_results_claim(*, limit: int, token: str) -> list[Claimed]:
    """Claim up to ``limit`` pending results for ``token``, window by window of the
    pending results in arrival order until ``limit`` are claimed or none is left.

    Runs in the caller's transaction, which must then apply them: the claim is the
    row locks it holds until it ends (see above). It makes the transaction's commit
    not wait for the disk: a database crash may forget the last fraction of a
    second of applied batches, whole, results and effects together, and those
    results are simply applied again (intake, which answers 202 to the source,
    still commits durably)."""
    if not connection.in_atomic_block:
        raise RuntimeError("touchpoint_results_claim runs in the transaction that applies its results")
    global _claims_since_head  # noqa: PLW0603  (per process, see HEAD_EVERY)
    now = timezone.now()
    position = _position_get()
    at_head = position is not None and _claims_since_head >= HEAD_EVERY
    _claims_since_head = 0 if at_head else _claims_since_head + (position is not None)
    # From the position to the end, moving it window by window; then, when that
    # leaves the claim short, from the head up to where it was. A claim at the head
    # reads from the head to the end and leaves the position where it is.
    if at_head:
        passes = [(_HEAD, _END, False)]
    else:
        passes = [(position or _HEAD, _END, True)] + ([(_HEAD, position, False)] if position else [])
    rows: list[Any] = []
    with connection.cursor() as cursor:
        # With statistics that say "a few rows" (they always lag, see above), the
        # planner may sort instead of reading the pending index in order, and read
        # the whole inbox for it; neither a sort nor a sequential scan has a place in
        # the claim (it takes the window's rows in primary-key order).
        cursor.execute(_CLAIM_START, {"own": claim_lock_key(token)})
        for start, until, moves in passes:
            after, seen, contested = start, position, 0
            while len(rows) < limit:
                wanted = limit - len(rows)
                window = max(wanted, 100)
                cursor.execute(_CLAIM_WINDOW, {
                    "after_at": after[0], "after_id": after[1], "until_at": until[0], "until_id": until[1],
                    "window": window})  # fmt: skip
                found, ids, last_at, last_id = cursor.fetchone()
                if not found:
                    break
                end = (last_at, last_id)
                # The position moves past a window only if the claim considers every
                # row of it (a window wider than the claim's remainder is claimed
                # in part, by id: its other rows stay ahead for the next claim).
                if moves:
                    # Another claim took this window a moment ago: go on after its
                    # position (a few times at most; then share the window).
                    if found <= wanted:
                        moved, now_at = _position_move(seen, end)
                    else:
                        moved, now_at = False, _position_get()
                    # Positions compare as tuples: PostgreSQL writes the times in
                    # one zone (UTC) and ISO form, whose text sorts as the times do.
                    if not moved and now_at is not None and now_at > after and contested < 3:
                        after, seen, contested = now_at, now_at, contested + 1
                        continue
                    seen = end if moved else now_at
                params: dict[str, Any] = {"ids": ids, "stale": now - lease(), "limit": wanted}
                cursor.execute(_CLAIM, params)
                rows.extend(cursor.fetchall())
                if found < window:
                    break
                after = end
            if len(rows) >= limit:
                break
        cursor.execute(_CLAIM_END)
    # The time as text, parsed by the standard library's C parser: the driver's loader
    # of timestamptz (Django's, in Python) was a twelfth of a worker's CPU applying.
    parse = dt.datetime.fromisoformat
    loads = json_codec.loads
    claimed = [
        Claimed(pk, batch, source, external_id, kind, key, sequence, parse(at) if at else None,
                loads(payload) if isinstance(payload, str) else payload, attempts, customer_id)
        for pk, batch, source, external_id, kind, key, sequence, at, payload, attempts, customer_id in rows
    ]  # fmt: skip
    return sorted(claimed, key=lambda r: r.id)
