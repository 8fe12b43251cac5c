"""The engine's evaluation, pure (no I/O; what ``bench/policy_decision.py``
measures): CEL conditions, holdouts, contact rules and arbitration turn the
candidates and the facts into a plan."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from policies import conditions
from policies.facts import (
    Facts,
    PastPresentation,
)
from policies.index import (
    Candidate,
    OfferInfo,
)
from policies.models import (
    DecisionOutcome,
    PresentationStatus,
)

logger = logging.getLogger(__name__)

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
