"""The agent's script panel: start, answer, next, back. Each returns the panel
again, read afresh (the rows are the truth: a reload shows the same)."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.utils.html import escape
from django.views.decorators.http import require_POST

from crm import selectors as crm_selectors
from crm.exceptions import Conflict, FieldAccessDenied, StaleVersion
from crm.models import Customer
from policies import selectors as policies_selectors
from policies.models import OfferChannel
from scripting import selectors, services
from scripting.models import Run
from scripting.views.common import messages_of, staff_with, user_of

RUN_PERMISSION = "scripting.change_run"


def _customer(request: HttpRequest, customer_id: int) -> Customer | None:
    return (
        crm_selectors.customers_visible_to(user_of(request))
        .select_related("household")
        .filter(pk=customer_id)
        .first()
    )


def _panel_response(
    request: HttpRequest, customer: Customer, *, error: str = "", errors: dict[str, list[str]] | None = None,
    posted: QueryDict | None = None,
) -> HttpResponse:  # fmt: skip
    offers = list(
        policies_selectors.offers_current(customer_id=customer.pk).filter(channel=OfferChannel.AGENT_SCREEN)[
            :1
        ]
    )
    accounts = list(customer.accounts.select_related("product").order_by("status", "-opened_on"))
    panel = selectors.panel(customer=customer, agent=user_of(request), accounts=accounts, offers=offers)
    if errors and posted is not None:
        # Refused answers stay on screen as typed, each with its message.
        panel = dataclasses.replace(
            panel,
            questions=[
                dataclasses.replace(q, error=" ".join(errors.get(q.key, [])), value=_posted(posted, q.spec))
                if q.key in errors else q
                for q in panel.questions
            ],
        )  # fmt: skip
        error = error or " ".join(
            m for k, ms in errors.items() if k not in {q.key for q in panel.questions} for m in ms
        )
    context = {"customer": customer, "script": panel, "script_error": error}
    return render(request, "scripting/_panel.html", context)


def _posted(posted: QueryDict, spec: dict[str, Any]) -> Any:
    key = spec["key"]
    return posted.getlist(key) if spec["type"] == "multi" else posted.get(key)


def _answers(posted: QueryDict, run: Run) -> dict[str, Any]:
    step = next(s for s in run.version.graph["steps"] if s["key"] == run.current_step)
    return {q["key"]: _posted(posted, q) for q in step.get("questions") or [] if q["key"] in posted}


@staff_with(RUN_PERMISSION)
@require_POST
def panel_start(request: HttpRequest, customer_id: int) -> HttpResponse:
    customer = _customer(request, customer_id)
    if customer is None:
        return HttpResponse(status=404)
    user = user_of(request)
    facts = services.call_facts_for(user)
    if request.POST.get("auto") == "1" and not (
        facts.get("state") == "connected" and facts.get("customer_id") == customer.pk
    ):
        # The panel asks by itself when the agent answers a call: only this
        # customer's answered call starts a script that way.
        return _panel_response(request, customer)
    error = ""
    try:
        services.run_start(customer_id=customer.pk, agent=user, call=facts)
    except ValidationError as exc:
        # Asked by the panel itself, a queue without a script is no error to show.
        error = "" if request.POST.get("auto") == "1" else " ".join(exc.messages)
    return _panel_response(request, customer, error=error)


def _own_run(request: HttpRequest, run_id: int) -> Run | None:
    return Run.objects.select_related("version").filter(pk=run_id, agent=user_of(request)).first()


@staff_with(RUN_PERMISSION)
@require_POST
def panel_answer(request: HttpRequest, run_id: int) -> HttpResponse:
    """One answer saved as it is given: a short status for the question's line."""
    run = _own_run(request, run_id)
    if run is None:
        return HttpResponse(status=404)
    key = request.POST.get("question", "")
    spec = next(
        (q for s in run.version.graph["steps"] for q in s.get("questions") or [] if q["key"] == key), None
    )
    if spec is None:
        return HttpResponse("Unknown question.", status=400)
    try:
        services.run_answer(
            run_id=run.pk, agent=user_of(request), question=key, raw=_posted(request.POST, spec)
        )
    except ValidationError as exc:
        return HttpResponse(
            f'<span class="field-error-text" role="alert">{escape(" ".join(exc.messages))}</span>'
        )
    return HttpResponse('<span class="muted">Saved</span>')


@staff_with(RUN_PERMISSION)
@require_POST
def panel_next(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _own_run(request, run_id)
    if run is None:
        return HttpResponse(status=404)
    customer = _customer(request, run.customer_id)
    if customer is None:
        return HttpResponse(status=404)
    version = request.POST.get("customer_version", "")
    try:
        services.run_next(
            run_id=run.pk, agent=user_of(request), answers=_answers(request.POST, run),
            customer_version=int(version) if version.isdigit() else None,
        )  # fmt: skip
    except StaleVersion as exc:
        return _panel_response(request, customer, error=f"{exc} Your answers are kept: press Next again.")
    except (Conflict, FieldAccessDenied) as exc:
        return _panel_response(request, customer, error=str(exc))
    except ValidationError as exc:
        return _panel_response(request, customer, errors=messages_of(exc), posted=request.POST)
    return _panel_response(request, customer)


@staff_with(RUN_PERMISSION)
@require_POST
def panel_back(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _own_run(request, run_id)
    customer = _customer(request, run.customer_id) if run else None
    if run is None or customer is None:
        return HttpResponse(status=404)
    error = ""
    try:
        services.run_back(run_id=run.pk, agent=user_of(request))
    except ValidationError as exc:
        error = " ".join(exc.messages)
    return _panel_response(request, customer, error=error)
