"""What every desk page shares: who may use it, the top bar's values, error bodies."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from agents import services as agents_services
from crm import selectors, services
from crm.exceptions import Conflict
from crm.models import Interaction
from crm.models.choices import AccessChannel, Channel
from crm.staff_pages import staff_of

# The desk's call controls, by the word in the URL, and the telephony event each asks for.
DESK_CALL_CONTROLS = {
    "answer": "answered", "hold": "held", "resume": "resumed", "hangup": "ended", "transfer": "transferred",
}  # fmt: skip
RESULTS_PER_PAGE = 25
# An agent looks for one caller: past a thousand matches the exact number helps
# nobody (the page says "more than 1,000" and asks for another detail), and
# counting stops there instead of at the API's ten thousand.
SEARCH_COUNT_CAP = 1_000
# Agents call across zones: the screen says when it is outside calling hours.
CALLING_HOURS = agents_services.CALLING_HOURS
# Only these keys travel from the results to the customer page and back, so
# the "back to results" link can never point anywhere but the search page.
_BACK_KEYS = ("q", "field", "page")


# --- Access --------------------------------------------------------------------------


def partial_request(request: HttpRequest) -> bool:
    """An htmx swap of part of a page (not a history restore, which wants it whole)."""
    return bool(request.headers.get("HX-Request")) and not request.headers.get("HX-History-Restore-Request")


def json_error(exc: Exception, status: int) -> JsonResponse:
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        message = " ".join(m for ms in exc.message_dict.values() for m in ms)
    elif isinstance(exc, Conflict):
        message = " ".join(exc.errors.values())
    else:
        message = str(exc)
    return JsonResponse({"error": message}, status=status)


# An open screen re-reads itself on every change (and its history pages as the
# agent scrolls): one access-log row per customer per screen per minute says who
# looked as well as a row per re-read did, without a row per synced contact.
SCREEN_READ_LOG_SECONDS = 60


def log_screen_read(request: HttpRequest, customer_ids: list[int]) -> int:
    """Log a read of these customers from a page. A screen's own re-reads carry
    its ``X-Screen-Id`` (made once per page load by static/js/live.js): each of
    those logs a customer at most once a minute; a page load always logs."""
    user = staff_of(request)
    screen = request.headers.get("X-Screen-Id", "")[:64]
    if screen:
        customer_ids = [
            pk
            for pk in customer_ids
            if cache.add(f"screen-read:{user.pk}:{screen}:{pk}", 1, timeout=SCREEN_READ_LOG_SECONDS)
        ]
    return services.access_log_record(
        user=user, customer_ids=customer_ids, channel=AccessChannel.PAGE, path=request.get_full_path()
    )


# --- The contact history's pages ----------------------------------------------------------------

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def history_cursor(at: dt.datetime, pk: int) -> str:
    """A page's end as text for a URL: microseconds since the epoch and the id."""
    return f"{(at - _EPOCH) // dt.timedelta(microseconds=1)}_{pk}"


def parse_history_cursor(text: str) -> tuple[dt.datetime, int]:
    micros, _, pk = text.partition("_")
    try:
        return _EPOCH + dt.timedelta(microseconds=int(micros)), int(pk)
    except (ValueError, OverflowError):
        raise ValidationError(
            {"before": "Not a history cursor: use the link of the page before, or leave it out."}
        ) from None


def history_context(
    interactions: list[Interaction], *, customer_id: int, channel: str = ""
) -> dict[str, Any]:
    """The history panel's filter and where its next page is (None: no more)."""
    more = len(interactions) >= selectors.SCREEN_HISTORY
    last = interactions[-1] if interactions else None
    query = {"channel": channel} if channel else {}
    if more and last is not None:
        query["before"] = history_cursor(last.occurred_at, last.pk)
    return {
        "history_channels": Channel.choices,
        "history_channel": channel,
        "history_url": reverse("customer-history", args=[customer_id]),
        "history_next": (
            f"{reverse('customer-history', args=[customer_id])}?{urlencode(query)}"
            if "before" in query
            else None
        ),
    }
