"""The business-event outbox: every recorded event reaches its listeners, once
each, even across crashes.

1. ``business_event_record`` (and any bulk path that inserts events) calls
   ``events_dispatch_on_commit`` with the new ids; one hook per transaction
   collects them.
2. On commit, the hook runs the real-time listeners with those events and
   enqueues one Celery task for their deferred listeners (or, with none
   configured, marks them dispatched at once).
3. The task (``business_events_dispatch``) locks the events still undispatched,
   runs the deferred listeners, and marks them dispatched in the same
   transaction as whatever the listeners wrote.
4. A beat sweep (``business_events_sweep``) re-enqueues events left
   undispatched past a grace period: the message was lost, the worker died, or
   Redis was down at commit. A crash delays an event; it never loses it.

An event whose listeners keep failing is retried up to
``CRM_EVENT_DISPATCH_MAX_ATTEMPTS`` times, with its last error kept on the row
for an administrator, and does not hold up the events dispatched with it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from django.conf import settings
from django.db import OperationalError, connections, transaction
from django.db.models import F
from django.utils import timezone

from crm import listeners
from crm import realtime as realtime_module
from crm.models import BusinessEvent

logger = logging.getLogger(__name__)

DISPATCH_BATCH = 500


class _DispatchOnCommit:
    """The one on-commit hook of a transaction: the ids of the events it recorded,
    the rows themselves while every one came with its row, recorded outside any
    savepoint (none of them can have been rolled back without the whole hook),
    and the ids of those whose deferred listeners already ran in it (``dispatched``)."""

    def __init__(self) -> None:
        self.event_ids: list[int] = []
        self.rows: list[BusinessEvent] | None = []
        self.dispatched: set[int] = set()

    def add(
        self,
        ids: list[int],
        recorded: Sequence[BusinessEvent] | None,
        *,
        in_savepoint: bool,
        dispatched: bool,
    ) -> None:
        self.event_ids.extend(ids)
        if dispatched:
            self.dispatched.update(ids)
        if self.rows is not None:
            if recorded is None or in_savepoint or len(recorded) != len(ids):
                self.rows = None
            else:
                self.rows.extend(recorded)

    def __call__(self) -> None:
        events_committed(event_ids=self.event_ids, rows=self.rows, dispatched=self.dispatched)


def events_dispatch_on_commit(
    event_ids: Iterable[int], *, recorded: Sequence[BusinessEvent] | None = None, dispatched: bool = False
) -> None:
    """Hand these newly recorded events to their listeners once the current
    transaction commits (at once outside a transaction). Cheap: a list append
    per event; one hook and one task per transaction however many events.
    ``recorded``: the rows just written, in the order of ``event_ids``, so that the
    real-time listeners need not read them back. ``dispatched``: their deferred
    listeners ran in this transaction already (``events_dispatch_in_worker``);
    only the real-time ones are left."""
    ids = [int(pk) for pk in event_ids]
    if not ids:
        return
    connection = transaction.get_connection()
    in_savepoint = bool(connection.savepoint_ids)
    if connection.in_atomic_block:
        # Reuse the hook this transaction already has. A savepoint rolled back
        # takes its own hooks with it; ids appended to an outer hook by a rolled-back
        # inner block name rows that no longer exist and are simply not found
        # (which is why rows handed over inside a savepoint are read back instead).
        for _savepoints, hook, _robust in connection.run_on_commit:
            if isinstance(hook, _DispatchOnCommit):
                hook.add(ids, recorded, in_savepoint=in_savepoint, dispatched=dispatched)
                return
    hook = _DispatchOnCommit()
    hook.add(ids, recorded, in_savepoint=in_savepoint, dispatched=dispatched)
    transaction.on_commit(hook)


def events_dispatch_in_worker(events: Sequence[BusinessEvent]) -> bool:
    """For a worker that recorded ``events`` in its open transaction, inserted as
    dispatched (``dispatched_at`` set, one attempt): run their deferred listeners
    now, in a savepoint of that transaction, so the events, what the listeners
    wrote and the dispatched mark commit together, as ``business_events_dispatch``
    would write them. That task would cost a broker message, a worker's turn, the
    events loaded and locked again and each event row written a second time.

    If a listener fails, its writes roll back with the savepoint and the events
    go back to the outbox (not dispatched; a worker runs them one by one with the
    error kept). Returns whether the listeners ran. The real-time listeners still
    run on commit (``events_dispatch_on_commit``, which the caller calls)."""
    if not events:
        return True
    deferred = listeners.listeners("deferred")
    try:
        with transaction.atomic():
            for listener in deferred:
                listener(events)
    except OperationalError:
        raise  # the database went away: the caller's transaction is lost anyway
    except Exception:  # listeners are other apps' code: any failure is theirs
        logger.warning(
            "deferred listeners failed on %d events recorded by a worker; the outbox dispatches them",
            len(events), exc_info=True,
        )  # fmt: skip
        BusinessEvent.objects.filter(pk__in=[e.pk for e in events]).update(
            dispatched_at=None, dispatch_attempts=0
        )
        return False
    return True


class _CommittedEvents(Sequence[BusinessEvent]):
    """The events of one commit, read from the database only when a listener
    looks at them: a listener that first asks how many there are and leaves a
    bulk load to the worker (policies decide at most a few on commit) costs no
    query for the thousand events of an ingest batch."""

    def __init__(self, event_ids: Sequence[int], rows: list[BusinessEvent] | None = None) -> None:
        self._ids = event_ids
        self._rows: list[BusinessEvent] | None = sorted(rows, key=lambda e: e.pk) if rows else None

    def _loaded(self) -> list[BusinessEvent]:
        if self._rows is None:
            self._rows = list(BusinessEvent.objects.filter(pk__in=self._ids).order_by("id"))
        return self._rows

    def __len__(self) -> int:
        # Before loading: the ids. One appended by a savepoint later rolled back names
        # no row, so this may count a few too many; a listener that leaves large
        # transactions to the worker then leaves this one too, and the worker decides it.
        return len(self._loaded()) if self._rows is not None else len(self._ids)

    @overload
    def __getitem__(self, index: int) -> BusinessEvent: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[BusinessEvent]: ...
    def __getitem__(self, index: int | slice) -> BusinessEvent | Sequence[BusinessEvent]:
        return self._loaded()[index]

    def __iter__(self) -> Iterator[BusinessEvent]:
        return iter(self._loaded())


def events_committed(
    *, event_ids: Sequence[int], rows: list[BusinessEvent] | None = None,
    dispatched: set[int] | frozenset[int] = frozenset(),
) -> None:  # fmt: skip
    """Runs after the commit that recorded ``event_ids``: real-time listeners in
    this process, deferred ones handed to a worker (except the ``dispatched``
    ones, whose deferred listeners ran in that transaction). Never raises: the
    request that recorded the events has already succeeded. ``rows``: the events
    as recorded, when the recording code still held them all."""
    realtime = listeners.listeners("realtime")
    if realtime:
        events = _CommittedEvents(event_ids, rows)
        for listener in realtime:
            try:
                listener(events)
            except Exception:
                logger.exception("real-time listener %r failed on events %s", listener, event_ids[:20])
    if dispatched:
        event_ids = [pk for pk in event_ids if pk not in dispatched]
        if not event_ids:
            return
    if not listeners.listeners("deferred"):
        BusinessEvent.objects.filter(pk__in=event_ids, dispatched_at__isnull=True).update(
            dispatched_at=timezone.now()
        )
        return
    follow_up = getattr(_dispatching, "follow_up", None)
    if follow_up is not None:
        follow_up.extend(event_ids)  # the dispatch that recorded them takes them next
        return
    if settings.CRM_EVENT_DISPATCH_BATCH_SECONDS > 0 and realtime_module.in_server_thread():
        _batcher.add(event_ids)
    else:
        _enqueue(event_ids)


class _DispatchBatcher:
    """In a web server process: the events its requests record, handed to the
    worker together every CRM_EVENT_DISPATCH_BATCH_SECONDS, in one task per
    DISPATCH_BATCH, by one thread of its own. A request then pays no broker round
    trip (at hundreds of events a second, one task each was a publish per event
    in the request and a task per event in the worker).

    Each event waits at least half that long after its commit: the process that
    recorded it is still deciding it meanwhile (a real-time listener, and the
    events that one records in turn, such as the policies' ``offer.presented``), and
    a worker handed it too early would decide it at the same moment, only to find
    the decision taken after the work was done.

    Nothing is lost by waiting: the events are rows, still undispatched. Should
    the process die with ids not yet handed over, the beat sweep re-enqueues them
    after CRM_EVENT_SWEEP_AFTER_SECONDS, as for a message the broker lost."""

    def __init__(self) -> None:
        self._waiting: deque[tuple[float, list[int]]] = deque()  # (when added, ids), oldest first
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, event_ids: Sequence[int]) -> None:
        with self._wake:
            self._waiting.append((time.monotonic(), list(event_ids)))
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="event-dispatch", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._waiting:
                    self._wake.wait()
                first_added = self._waiting[0][0]
            # Let the batch fill, and the first of it be decided where it was recorded.
            time.sleep(max(first_added + settings.CRM_EVENT_DISPATCH_BATCH_SECONDS - time.monotonic(), 0))
            ready = time.monotonic() - settings.CRM_EVENT_DISPATCH_BATCH_SECONDS / 2
            ids: list[int] = []
            with self._wake:
                while self._waiting and self._waiting[0][0] <= ready:
                    ids.extend(self._waiting.popleft()[1])
            _enqueue(ids)
            # Only an eager Celery (tests) touches the database here: leave no
            # connection of this thread open between batches.
            connections.close_all()


_batcher = _DispatchBatcher()


def _enqueue(event_ids: Sequence[int]) -> None:
    from crm.tasks import business_events_dispatch  # noqa: PLC0415  (tasks import services)

    for start in range(0, len(event_ids), DISPATCH_BATCH):
        chunk = list(event_ids[start : start + DISPATCH_BATCH])
        try:
            business_events_dispatch.delay(chunk)
        except Exception:
            # The broker is down: the rows are safe, and the sweep sends them later.
            logger.exception("could not enqueue the dispatch of %d events; the sweep will", len(chunk))


# In a dispatch (``business_events_dispatch``): the events that its listeners, and the
# real-time listeners run on its commits, recorded; the same call dispatches them next.
_dispatching = threading.local()
# How many further transactions one dispatch call gives to the events its own listeners
# recorded (an offer presented is an event that policies may answer with another
# offer, and so on, until the contact rules stop it); what is left then gets a task.
FOLLOW_UP_ROUNDS = 10


def business_events_dispatch(*, event_ids: Sequence[int]) -> int:
    """Run the deferred listeners for those of ``event_ids`` still undispatched,
    then for the events those listeners (and the real-time ones, on its commit)
    recorded, up to FOLLOW_UP_ROUNDS times; return how many were dispatched.

    The events the dispatch itself raised (each offer a policy presents is an
    ``offer.presented`` event) are taken by the same call, in a transaction of
    their own right after it, instead of a task each: a worker then spends no broker
    message, no task and no fresh database connection (a worker closes its
    connection after every task) on them. They are rows, undispatched until that
    transaction commits: should the worker die first, the sweep sends them."""
    if getattr(_dispatching, "follow_up", None) is not None:
        return _dispatch_batch(event_ids)  # a listener dispatching events itself: once, as asked
    _dispatching.follow_up = []
    waiting: list[int] = []  # taken from follow_up, not dispatched yet
    done = 0
    try:
        done = _dispatch_batch(event_ids)
        for _ in range(FOLLOW_UP_ROUNDS):
            waiting, _dispatching.follow_up = _dispatching.follow_up, []
            while waiting:
                done += _dispatch_batch(waiting[:DISPATCH_BATCH])
                waiting = waiting[DISPATCH_BATCH:]
    finally:
        # Past the rounds, or after a failure (the task retries its own ids): a task
        # for the rest, as if the dispatch had never taken them.
        left = waiting + _dispatching.follow_up
        _dispatching.follow_up = None
        if left:
            _enqueue(left)
    return done


def _dispatch_batch(event_ids: Sequence[int]) -> int:
    """One transaction of ``business_events_dispatch``: run the deferred listeners
    for those of ``event_ids`` still undispatched; return how many were dispatched.

    1. Lock them and mark them dispatched in one statement, skipping rows another
       worker holds (it is dispatching them); the mark commits only with what the
       listeners write, in the same transaction.
    2. Run every deferred listener on the batch. If one fails, the whole
       transaction rolls back, mark included, and ``_dispatch_one_by_one`` runs
       them event by event, so one bad event does not hold up the others.

    The usual case (every listener succeeds) costs the mark, the listeners' own
    statements and the commit: no savepoint, no separate lock."""
    deferred = listeners.listeners("deferred")
    try:
        with transaction.atomic():
            events = sorted(
                BusinessEvent.objects.raw(_LOCK_AND_MARK, [timezone.now(), list(event_ids), _max_attempts()]),
                key=lambda event: event.pk,
            )
            if not events:
                return 0
            for listener in deferred:
                listener(events)
        return len(events)
    except OperationalError:
        raise  # the database went away: the task retries the whole batch
    except Exception:  # noqa: BLE001  (listeners are other apps' code: any failure is theirs)
        return _dispatch_one_by_one(event_ids, deferred)


def _max_attempts() -> int:
    return int(settings.CRM_EVENT_DISPATCH_MAX_ATTEMPTS)


# The rows still to dispatch, locked (skipping those another worker holds) and marked
# dispatched, one attempt more, in one statement; the mark stands or falls with the
# listeners' writes (same transaction). FOR NO KEY UPDATE, as the update itself: a
# row written elsewhere that refers to one of these events (a decision, a claim) checks
# its foreign key with a key-share lock, which FOR UPDATE would block. A transaction
# deciding the event in another process, holding a claim that this dispatch's listener
# waits for, would then wait on this one at its commit: a deadlock.
_LOCK_AND_MARK = (
    "UPDATE crm_businessevent SET dispatched_at = %s, dispatch_attempts = dispatch_attempts + 1,"
    " dispatch_error = '' WHERE id IN (SELECT id FROM crm_businessevent WHERE id = ANY(%s::bigint[])"
    " AND dispatched_at IS NULL AND dispatch_attempts < %s FOR NO KEY UPDATE SKIP LOCKED) RETURNING *"
)


def _dispatch_one_by_one(event_ids: Sequence[int], deferred: Sequence[listeners.Listener]) -> int:
    """After a batch failed: lock the events again and run the listeners on each in a
    savepoint of its own; mark the ones that went through dispatched, and count an
    attempt and keep the error on the others, which the sweep retries until the
    attempts run out."""
    with transaction.atomic():
        events = list(
            BusinessEvent.objects.select_for_update(skip_locked=True, no_key=True)
            .filter(pk__in=event_ids, dispatched_at__isnull=True, dispatch_attempts__lt=_max_attempts())
            .order_by("id")
        )
        failed = _one_by_one(events, deferred)
        done = [event.pk for event in events if event.pk not in failed]
        BusinessEvent.objects.filter(pk__in=done).update(
            dispatched_at=timezone.now(), dispatch_attempts=F("dispatch_attempts") + 1, dispatch_error=""
        )
        for pk, error in failed.items():
            BusinessEvent.objects.filter(pk=pk).update(
                dispatch_attempts=F("dispatch_attempts") + 1, dispatch_error=error[:2000]
            )
    return len(done)


def _one_by_one(events: list[BusinessEvent], deferred: Sequence[listeners.Listener]) -> dict[int, str]:
    failed: dict[int, str] = {}
    for event in events:
        try:
            with transaction.atomic():
                for listener in deferred:
                    listener([event])
        except OperationalError:
            raise
        except Exception as exc:
            logger.exception("deferred listeners failed on event %s (%s)", event.pk, event.type)
            failed[event.pk] = f"{type(exc).__name__}: {exc}"
    return failed


def business_events_sweep(*, older_than_seconds: int | None = None, limit: int = 20_000) -> int:
    """Send again the events left undispatched longer than the grace period
    (their message was lost, or their worker died); return how many."""
    grace = settings.CRM_EVENT_SWEEP_AFTER_SECONDS if older_than_seconds is None else older_than_seconds
    cutoff = timezone.now() - dt.timedelta(seconds=grace)
    ids = list(
        BusinessEvent.objects.filter(
            dispatched_at__isnull=True,
            recorded_at__lt=cutoff,
            dispatch_attempts__lt=settings.CRM_EVENT_DISPATCH_MAX_ATTEMPTS,
        )
        .order_by("recorded_at", "id")
        .values_list("id", flat=True)[:limit]
    )
    if not ids:
        return 0
    if listeners.listeners("deferred"):
        _enqueue(ids)
    else:
        # Nothing waits for them; real-time listeners are for the moment of the
        # commit, not half a minute later.
        BusinessEvent.objects.filter(pk__in=ids, dispatched_at__isnull=True).update(
            dispatched_at=timezone.now()
        )
    return len(ids)
