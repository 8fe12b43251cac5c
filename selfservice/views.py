"""The customer's own web page: their offers (live), their details and accounts.

Only a customer's own log-in opens it; staff are sent to their desktop, other
accounts get the staff 403 page's explanation. The offers are the ones presented
on the self-service channel: an offer a policy put on the agent's screen is for
the agent to raise on a call, not for the customer's page. The page re-reads its
offers list from the server whenever the customer's socket (/ws/me/offers/)
tells of a change, and after every reconnect, so it always equals a fresh load.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from crm import selectors as crm_selectors
from crm.exceptions import Conflict
from crm.models import Customer, User
from policies import selectors, services
from policies.models import OfferChannel, OfferPresentation

ANSWERS = {"accept": True, "decline": False}
# What the page says after an answer (a flash message: the page is redirected to).
DONE = {True: "Thank you: we have your answer and will be in touch about it.",
        False: "Understood: we will not offer you this again for a while."}  # fmt: skip


def customer_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        user = cast("User", request.user)
        if user.is_active and user.is_staff_member:
            return redirect("home")
        if not user.is_active or not user.customer_id:
            who = "an integration" if user.is_integration else "an account without a customer record"
            return render(request, "agents/forbidden.html", {"who": who}, status=403)
        return view(request, *args, **kwargs)

    return wrapper


def _customer_id(request: HttpRequest) -> int:
    """The signed-in customer's record (``customer_required`` has checked there is one)."""
    return cast("int", cast("User", request.user).customer_id)


def _offers(customer_id: int) -> list[OfferPresentation]:
    return list(selectors.offers_current(customer_id=customer_id).filter(channel=OfferChannel.SELF_SERVICE))


@customer_required
def my_page(request: HttpRequest) -> HttpResponse:
    user = cast("User", request.user)
    customer = Customer.objects.get(pk=_customer_id(request))
    accounts = (
        crm_selectors.accounts_visible_to(user)
        .select_related("product")
        .order_by("status", "-opened_on", "id")
    )
    return render(
        request,
        "selfservice/me.html",
        {
            "customer": customer,
            "accounts": list(accounts[:50]),
            "offers": _offers(customer.pk),
            "zone": customer.time_zone,
        },
    )


@customer_required
def my_offers(request: HttpRequest) -> HttpResponse:
    """The offers list alone: what the page swaps in when its socket says so."""
    customer_id = _customer_id(request)
    zone = Customer.objects.filter(pk=customer_id).values_list("time_zone", flat=True).first() or "UTC"
    return render(request, "selfservice/_offers.html", {"offers": _offers(customer_id), "zone": zone})


@require_POST
@customer_required
def my_offer_answer(request: HttpRequest, presentation_id: int, answer: str) -> HttpResponse:
    """Accept or decline one of the customer's own offers, then back to the page."""
    user = cast("User", request.user)
    if answer not in ANSWERS:
        messages.error(request, "Choose accept or decline.")
        return redirect("me")
    own = OfferPresentation.objects.filter(customer_id=_customer_id(request))
    presentation = own.filter(pk=presentation_id).first()
    if presentation is None:
        # Not theirs, or gone: the same answer either way, naming nothing of anyone else's.
        messages.error(request, "That offer is not one of yours any more.")
        return redirect("me")
    try:
        services.offer_respond(
            presentation_id=presentation.pk, accepted=ANSWERS[answer], actor=user,
            reason=request.POST.get("reason", "")[:200],
        )  # fmt: skip
    except Conflict as exc:
        messages.error(request, " ".join(exc.errors.values()))
        return redirect("me")
    messages.success(request, DONE[ANSWERS[answer]])
    return redirect("me")
