"""Reads the offer screens and the API share."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass

from django.db.models import Case, Count, Exists, Max, OuterRef, Q, QuerySet, When
from django.db.models.functions import TruncDate
from django.utils import timezone

from crm.models import BusinessEvent, User
from crm.models.choices import SourceKind
from policies.models import (
    Decision,
    DecisionOutcome,
    OfferChannel,
    OfferPresentation,
    Policy,
    PresentationStatus,
)

# A screen further behind than this reloads its offers instead of replaying them.
CATCH_UP_LIMIT = 200


@dataclass(frozen=True)
class CustomerOffers:
    presentations: list[OfferPresentation]
    last_sequence: int
    reload: bool


def offers_current(*, customer_id: int) -> QuerySet[OfferPresentation]:
    """Offers waiting for the customer's answer, newest first."""
    return (
        OfferPresentation.objects.filter(
            customer_id=customer_id, status=PresentationStatus.PRESENTED, expires_at__gt=timezone.now()
        )
        .select_related("offer")
        .order_by("-sequence")
    )


def customer_offers(*, customer_id: int, after: int | None = None) -> CustomerOffers:
    """The current offers; or, with ``after`` (the last sequence a screen saw),
    every presentation since then in order, once, whatever its status now. A
    screen too far behind (or ahead: the numbers were reset) gets ``reload``
    and the current offers."""
    last = OfferPresentation.objects.filter(customer_id=customer_id).aggregate(n=Max("sequence"))["n"] or 0
    if after is None:
        return CustomerOffers(list(offers_current(customer_id=customer_id)), last, reload=False)
    if after > last or last - after > CATCH_UP_LIMIT:
        return CustomerOffers(list(offers_current(customer_id=customer_id)), last, reload=True)
    missed = (
        OfferPresentation.objects.filter(customer_id=customer_id, sequence__gt=after)
        .select_related("offer")
        .order_by("sequence")
    )
    return CustomerOffers(list(missed), last, reload=False)


# --- Delivery by the integrations that send offers -----------------------------------------

# Which offer channel each kind of integration delivers: the e-mail platform sends
# the e-mail offers, the dialer calls for the outbound-call ones.
DELIVERY_CHANNELS: dict[str, str] = {
    SourceKind.EMAIL: OfferChannel.EMAIL, SourceKind.DIALER: OfferChannel.OUTBOUND_CALL,
}  # fmt: skip
# The consent each channel needs at the moment of sending, on top of marketing consent.
_SEND_CONSENT: dict[str, Q] = {OfferChannel.EMAIL: Q(customer__do_not_email=False),
                 OfferChannel.OUTBOUND_CALL: Q(customer__do_not_call=False)}  # fmt: skip


def delivery_channel_of(user: User) -> str | None:
    """The offer channel ``user``'s source system delivers, if any."""
    source = user.source_system if user.is_integration else None
    return DELIVERY_CHANNELS.get(source.kind) if source is not None else None


def offers_to_deliver(*, channel: str, limit: int) -> tuple[list[OfferPresentation], bool]:
    """Offers presented on ``channel`` that its integration has not taken yet,
    oldest first, and whether more are waiting. Offers that expired, or whose
    customer withdrew the consent since, are not to be sent and are left out
    (an expired one leaves the queue when the expiry sweep closes it)."""
    rows = list(
        OfferPresentation.objects.filter(
            channel=channel,
            status=PresentationStatus.PRESENTED,
            delivered_at__isnull=True,
            expires_at__gt=timezone.now(),
            customer__marketing_opt_in=True,
        )
        .filter(_SEND_CONSENT[channel])
        .select_related("offer", "customer")
        .order_by("id")[: limit + 1]
    )
    return rows[:limit], len(rows) > limit


# --- Supervisor pages: lists and results -----------------------------------------------------


def policies_filtered(*, status: str = "", trigger: str = "", q: str = "") -> QuerySet[Policy]:
    """The policies list with its filters (status, one trigger type, words of the name)."""
    found = Policy.objects.all()
    if status:
        found = found.filter(status=status)
    if trigger:
        found = found.filter(trigger_types__contains=[trigger])
    for word in q.split()[:5]:
        found = found.filter(name__icontains=word)
    return found.order_by(Case(When(status="retired", then=1), default=0), "-priority", "id")


def presented_accepted_since(*, policy_ids: list[int], since: dt.datetime) -> dict[int, tuple[int, int]]:
    """Per policy, the offers presented since ``since`` and those accepted since then
    (whenever presented), in one grouped query."""
    accepted = Q(status=PresentationStatus.ACCEPTED, responded_at__gte=since)
    rows = (
        OfferPresentation.objects.filter(Q(presented_at__gte=since) | accepted, policy_id__in=policy_ids)
        .values("policy_id")
        .annotate(
            presented=Count("id", filter=Q(presented_at__gte=since)), accepted=Count("id", filter=accepted)
        )
    )
    return {r["policy_id"]: (r["presented"], r["accepted"]) for r in rows}


@dataclass(frozen=True)
class ChannelDay:
    day: dt.date
    presented: int
    accepted: int

    @property
    def rate(self) -> float | None:
        return self.accepted / self.presented if self.presented else None


@dataclass(frozen=True)
class Results:
    """What became of the presentations of one policy or one offer over ``days``."""

    days: int
    totals: dict[str, int]  # status -> count
    by_channel: dict[str, dict[str, int]]  # channel -> status -> count
    series: dict[str, list[ChannelDay]]  # channel -> one entry per day, oldest first
    peak: int  # the largest daily count, to scale the charts

    @property
    def presented(self) -> int:
        return sum(self.totals.values())

    @property
    def acceptance_rate(self) -> float | None:
        answered = self.presented
        return self.totals.get(PresentationStatus.ACCEPTED, 0) / answered if answered else None


def presentation_results(
    *, policy_id: int | None = None, offer_id: int | None = None, days: int, zone: dt.tzinfo
) -> Results:
    """Presented, accepted, declined, expired (and still open), by channel and by
    day in the viewer's time zone, over the last ``days`` days; two grouped queries."""
    today = timezone.now().astimezone(zone).date()
    first = today - dt.timedelta(days=days - 1)
    start = dt.datetime.combine(first, dt.time.min, tzinfo=zone)
    rows = OfferPresentation.objects.filter(presented_at__gte=start)
    if policy_id is not None:
        rows = rows.filter(policy_id=policy_id)
    if offer_id is not None:
        rows = rows.filter(offer_id=offer_id)
    by_channel: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[str, int] = defaultdict(int)
    for row in rows.values("channel", "status").annotate(n=Count("id")):
        by_channel[row["channel"]][row["status"]] += row["n"]
        totals[row["status"]] += row["n"]
    daily: dict[tuple[str, dt.date], tuple[int, int]] = {}
    for row in (
        rows.annotate(day=TruncDate("presented_at", tzinfo=zone))
        .values("channel", "day")
        .annotate(n=Count("id"), accepted=Count("id", filter=Q(status=PresentationStatus.ACCEPTED)))
    ):
        daily[(row["channel"], row["day"])] = (row["n"], row["accepted"])
    dates = [first + dt.timedelta(days=i) for i in range(days)]
    series = {
        channel: [ChannelDay(d, *daily.get((channel, d), (0, 0))) for d in dates] for channel in by_channel
    }
    peak = max((n for n, _ in daily.values()), default=0)
    return Results(days, dict(totals), {c: dict(s) for c, s in by_channel.items()}, series, peak)


# --- Lift against the holdout ----------------------------------------------------------------

# What counts as a conversion: the customer took up the offer's product, whatever
# the channel: an account opened in it, or a purchase of it. Held-out customers
# never see the offer, so "accepted" cannot be compared; taking up the product can.
CONVERSION_EVENT_TYPES = ("account.opened", "transaction.purchase")
Z_95 = 1.959964


@dataclass(frozen=True)
class Rate:
    customers: int
    converted: int

    @property
    def rate(self) -> float | None:
        return self.converted / self.customers if self.customers else None

    @property
    def wilson(self) -> tuple[float, float] | None:
        """The Wilson score 95% interval of the rate (sound for small groups and rates near 0)."""
        n = self.customers
        if not n:
            return None
        p = self.converted / n
        centre = (p + Z_95**2 / (2 * n)) / (1 + Z_95**2 / n)
        half = Z_95 * math.sqrt(p * (1 - p) / n + Z_95**2 / (4 * n * n)) / (1 + Z_95**2 / n)
        return max(centre - half, 0.0), min(centre + half, 1.0)


@dataclass(frozen=True)
class Lift:
    """Treated (qualified and not held out) against held out: the difference of
    their conversion rates, with a 95% confidence interval (Newcombe's hybrid
    score interval: built from the two Wilson intervals)."""

    treated: Rate
    held_out: Rate
    window_days: int
    product: str

    @property
    def difference(self) -> float | None:
        if self.treated.rate is None or self.held_out.rate is None:
            return None
        return self.treated.rate - self.held_out.rate

    @property
    def interval(self) -> tuple[float, float] | None:
        return difference_interval(self.treated, self.held_out)


def difference_interval(a: Rate, b: Rate) -> tuple[float, float] | None:
    """Newcombe (1998) method 10: the 95% interval of rate(a) - rate(b)."""
    wa, wb = a.wilson, b.wilson
    if wa is None or wb is None or a.rate is None or b.rate is None:
        return None
    d = a.rate - b.rate
    low = d - math.sqrt((a.rate - wa[0]) ** 2 + (wb[1] - b.rate) ** 2)
    high = d + math.sqrt((wa[1] - a.rate) ** 2 + (b.rate - wb[0]) ** 2)
    return max(low, -1.0), min(high, 1.0)


def policy_lift(*, policy_ids: list[int], product_code: str, days: int, window_days: int) -> Lift:
    """Conversion of the customers these policies decided for in the last ``days``
    days, within ``window_days`` after the decision, treated against held out.

    Treated is every qualifying customer outside the control group, whether or
    not a contact rule then stopped the offer (intention to treat): the holdout
    is drawn before the contact rules, so only that comparison is fair."""
    since = timezone.now() - dt.timedelta(days=days)
    conversion = BusinessEvent.objects.filter(
        customer_id=OuterRef("customer_id"),
        type__in=CONVERSION_EVENT_TYPES,
        payload__product=product_code,
        occurred_at__gte=OuterRef("created_at"),
        occurred_at__lte=OuterRef("created_at") + dt.timedelta(days=window_days),
    )
    decisions = (
        Decision.objects.filter(policy_id__in=policy_ids, created_at__gte=since, customer__isnull=False)
        .exclude(outcome=DecisionOutcome.FAILED)
        .annotate(converted=Exists(conversion))
    )
    held = Q(outcome=DecisionOutcome.HELD_OUT)
    counts = decisions.aggregate(
        treated=Count("customer_id", distinct=True, filter=~held),
        treated_converted=Count("customer_id", distinct=True, filter=~held & Q(converted=True)),
        held_out=Count("customer_id", distinct=True, filter=held),
        held_out_converted=Count("customer_id", distinct=True, filter=held & Q(converted=True)),
    )
    return Lift(
        treated=Rate(counts["treated"], counts["treated_converted"]),
        held_out=Rate(counts["held_out"], counts["held_out_converted"]),
        window_days=window_days,
        product=product_code,
    )
