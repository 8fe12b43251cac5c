"""The customer screen's contact history past its first page: the next pages as
the agent scrolls, and the history of one channel."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from agents.views.common import (
    history_context,
    history_cursor,
    log_screen_read,
    parse_history_cursor,
)
from agents.views.customer import history_rows_html
from crm import selectors
from crm.models.choices import Channel
from crm.staff_pages import staff_of, staff_required
from scripting import selectors as scripting_selectors


@staff_required
def customer_history(request: HttpRequest, customer_id: int) -> HttpResponse:
    """Rows of the history table, ``?channel=`` one channel (empty: all) and
    ``?before=`` the cursor of the page before (empty: from the newest). The
    rows end with the link to the next page when there is one."""
    channel = request.GET.get("channel", "")
    if channel and channel not in Channel.values:
        return HttpResponse(
            f"Unknown channel “{channel}”: use one of {', '.join(Channel.values)}, or none for all.",
            status=400,
        )
    try:
        before = parse_history_cursor(request.GET["before"]) if request.GET.get("before") else None
    except ValidationError as exc:
        return HttpResponse(" ".join(exc.messages), status=400)
    if not selectors.customers_visible_to(staff_of(request)).filter(pk=customer_id).exists():
        return HttpResponse(status=404)
    log_screen_read(request, [customer_id])
    interactions, after = selectors.customer_history_page(
        customer_id=customer_id, channel=channel, before=before
    )
    context = history_context(interactions, customer_id=customer_id, channel=channel)
    if after is None:
        context["history_next"] = None
    else:
        query = f"before={history_cursor(*after)}" + (f"&channel={channel}" if channel else "")
        context["history_next"] = f"{context['history_url']}?{query}"
    response = render(
        request,
        "agents/_history_rows.html",
        {
            **context,
            "history": history_rows_html(
                interactions,
                scripting_selectors.history_answers(i.script_run_id for i in interactions if i.script_run_id),
            ),
            "first_page": before is None,
        },
    )
    response["Cache-Control"] = "no-store"
    return response
