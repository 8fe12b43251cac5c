"""The decision engine's index of active policies, one per process.

Candidates by event type with their compiled conditions, actions and offers,
built from the database and rebuilt when a policy or an offer changes: a change
bumps a generation number in Redis and publishes it on commit
(``index_changed_on_commit``), and a listener thread per process hears it, so
the next decision uses the new index without a round trip of its own. While
the listener is not subscribed the generation is polled every
``POLICIES_INDEX_CHECK_SECONDS``; ``POLICIES_INDEX_MAX_AGE_SECONDS`` bounds the
age of an index whatever was heard."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import cel
from django.conf import settings
from django.db import transaction

from config.redis_client import redis_client
from policies import actions as action_registry
from policies import conditions
from policies.models import (
    Offer,
    OfferStatus,
    Policy,
    PolicyStatus,
)

logger = logging.getLogger(__name__)


GENERATION_KEY = "crm:policies:index-generation"

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


def _redis() -> Any:
    """This process's client for the generation and the announcements."""
    return redis_client()


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
