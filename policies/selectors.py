"""Reads the offer screens and the API share."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Max, QuerySet
from django.utils import timezone

from policies.models import OfferPresentation, PresentationStatus

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
