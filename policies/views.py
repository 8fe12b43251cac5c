"""The supervisor pages: policies (list, editor with a live condition check,
status, simulation, results and lift) and offers.

They live in the staff desktop (its top bar, its sign-in): the desktop's access
helpers come from crm.staff_pages. Reading needs policies.view_policy
(supervisors and administrators); writing needs the add/change permissions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from crm import events
from crm.staff_pages import View, desktop_context, staff_of, staff_with
from policies import actions as action_registry
from policies import conditions, forms, selectors, services, simulation
from policies.models import DecisionOutcome, Offer, OfferStatus, Policy, PolicyStatus

VIEW = "policies.view_policy"
PER_PAGE = 25
RESULT_DAYS = (7, 30, 90)
# Conversion counts within this many days after the decision (see selectors.policy_lift).
LIFT_WINDOW_DAYS = 30
# Which status each button moves a policy to, and from which statuses it is offered.
TRANSITIONS = {
    PolicyStatus.ACTIVE: (PolicyStatus.DRAFT, PolicyStatus.PAUSED),
    PolicyStatus.PAUSED: (PolicyStatus.ACTIVE,),
    PolicyStatus.RETIRED: (PolicyStatus.DRAFT, PolicyStatus.ACTIVE, PolicyStatus.PAUSED),
}


def supervisor_required(permission: str = VIEW) -> Callable[[View], View]:
    """Staff with ``permission`` (and the right to read policies); others get a 403
    page that says whose pages these are."""
    return staff_with(permission, forbidden="policies/forbidden.html", extra=(VIEW,))


def _today_start() -> dt.datetime:
    return timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)


# --- Policies --------------------------------------------------------------------------------


@supervisor_required()
def policy_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", "")
    trigger = request.GET.get("trigger", "")
    q = request.GET.get("q", "").strip()[:100]
    errors = []
    if status and status not in PolicyStatus.values:
        errors.append(f"Unknown status “{status}”: choose one from the list.")
        status = ""
    if trigger and trigger not in events.CATALOG:
        errors.append(f"Unknown event type “{trigger}”: choose one from the list.")
        trigger = ""
    found = selectors.policies_filtered(status=status, trigger=trigger, q=q)
    page = Paginator(found, PER_PAGE).get_page(request.GET.get("page"))
    today = selectors.presented_accepted_since(policy_ids=[p.pk for p in page], since=_today_start())
    rows = [(p, *today.get(p.pk, (0, 0))) for p in page]
    filters = {k: v for k, v in {"status": status, "trigger": trigger, "q": q}.items() if v}
    return render(request, "policies/list.html", desktop_context(
        request, page=page, rows=rows, status=status, trigger=trigger, q=q, errors=errors,
        statuses=PolicyStatus.choices, triggers=sorted(events.CATALOG), filtered=bool(filters),
        page_query="&".join(f"{k}={v}" for k, v in filters.items()),
        total=Policy.objects.count(),
        can_add=staff_of(request).has_perm("policies.add_policy"),
    ))  # fmt: skip


def _editor_context(
    request: HttpRequest, form: forms.PolicyForm, rows: list[forms.ActionRow], policy: Policy | None,
    action_errors: list[str],
) -> dict[str, Any]:  # fmt: skip
    chosen = [t for t in (form["trigger_types"].value() or []) if t in events.CATALOG]
    return desktop_context(
        request, form=form, policy=policy, action_errors=action_errors,
        rows=forms.action_editor(rows), action_names=list(action_registry.ACTIONS),
        event_fields=conditions.event_fields(chosen) if chosen else {},
        chosen=chosen, customer_fields=conditions.CUSTOMER_FIELDS,
        history_functions=list(conditions.HISTORY_FUNCTIONS.values()),
        catalog=[(t.name, t.description, conditions.event_fields([t.name]))
                 for t in sorted(events.CATALOG.values(), key=lambda t: t.name)],
        check_url=reverse("policy-check"),
    )  # fmt: skip


def _policy_editor(request: HttpRequest, policy: Policy | None) -> HttpResponse:
    if request.method == "POST":
        form = forms.PolicyForm(request.POST)
        parsed, rows = forms.actions_from_post(request.POST)
        action_errors: list[str] = []
        if form.is_valid():
            fields = dict(form.cleaned_data, actions=parsed)
            try:
                saved = services.policy_save(
                    actor=staff_of(request), policy_id=policy.pk if policy else None, **fields
                )
            except ValidationError as exc:
                for name, messages in exc.message_dict.items():
                    if name == "actions":
                        action_errors.extend(messages)
                    elif name in form.fields:
                        form.add_error(name, messages)
                    else:
                        form.add_error(None, messages)
            else:
                return redirect(reverse("policy-detail", args=[saved.pk]) + "?saved=1")
        elif not parsed:
            action_errors.append("Choose at least one action.")
        status = 400
    else:
        form = forms.PolicyForm(initial=forms.policy_initial(policy) if policy else None)
        rows = forms.action_rows(policy.actions if policy else [])
        action_errors, status = [], 200
    context = _editor_context(request, form, rows, policy, action_errors)
    return render(request, "policies/edit.html", context, status=status)


@supervisor_required("policies.add_policy")
def policy_new(request: HttpRequest) -> HttpResponse:
    return _policy_editor(request, None)


@supervisor_required("policies.change_policy")
def policy_edit(request: HttpRequest, policy_id: int) -> HttpResponse:
    policy = get_object_or_404(Policy, pk=policy_id)
    if policy.status == PolicyStatus.RETIRED:
        return redirect("policy-detail", policy_id=policy.pk)
    return _policy_editor(request, policy)


@supervisor_required("policies.change_policy")
@require_POST
def policy_check(request: HttpRequest) -> JsonResponse:
    """The editor's live check of a condition against the ticked trigger types:
    each problem with its line and column, and the event fields those types share."""
    types = request.POST.getlist("trigger_types")
    unknown = [t for t in types if t not in events.CATALOG]
    if not types or unknown:
        message = (
            f"Unknown event type {', '.join(unknown)}."
            if unknown
            else "Tick a trigger type to check against."
        )
        return JsonResponse({"ok": False, "problems": [{"line": 0, "column": 0, "message": message}],
                             "fields": {}})  # fmt: skip
    condition = request.POST.get("condition", "")[:4000]
    _, problems = conditions.diagnose(condition, types)
    return JsonResponse({
        "ok": not problems,
        "problems": [{"line": p.line, "column": p.column, "message": p.message} for p in problems],
        "fields": conditions.event_fields(types),
    })  # fmt: skip


@supervisor_required()
def policy_detail(request: HttpRequest, policy_id: int) -> HttpResponse:
    """One policy: what it says, its status buttons, simulation, results and lift."""
    policy = get_object_or_404(Policy, pk=policy_id)
    return render(request, "policies/detail.html", _detail_context(request, policy))


def _detail_context(request: HttpRequest, policy: Policy, **extra: Any) -> dict[str, Any]:
    days = _days(request)
    zone = timezone.get_current_timezone()
    results = selectors.presentation_results(policy_id=policy.pk, days=days, zone=zone)
    codes = [a["settings"].get("offer") for a in policy.actions if a.get("action") == "present_offer"]
    offers = {o.code: o for o in Offer.objects.filter(code__in=codes).select_related("product")}
    lifts = [
        (offers[code], _lift([policy.pk], offers[code], days))
        for code in dict.fromkeys(codes)
        if code in offers
    ]
    counted = dict(
        policy.decisions.filter(created_at__gte=timezone.now() - dt.timedelta(days=days))
        .values_list("outcome")
        .annotate(n=Count("id"))
        .values_list("outcome", "n")
    )
    outcomes = [(label, counted[value]) for value, label in DecisionOutcome.choices if counted.get(value)]
    run = simulation.simulation_get(request.GET["run"]) if request.GET.get("run") else None
    user = staff_of(request)
    action_lines = [
        (a.get("action", ""), [(k, ", ".join(map(str, v)) if isinstance(v, list) else v)
                               for k, v in (a.get("settings") or {}).items()])
        for a in policy.actions
    ]  # fmt: skip
    return desktop_context(
        request, policy=policy, action_lines=action_lines, results=results, lifts=lifts, days=days,
        day_choices=RESULT_DAYS,
        outcomes=outcomes, run=run if run and run.policy_id == policy.pk else None,
        transitions=[s for s, sources in TRANSITIONS.items() if policy.status in sources],
        can_change=user.has_perm("policies.change_policy"), saved=request.GET.get("saved") == "1",
        max_sim_days=simulation.MAX_DAYS, lift_window=LIFT_WINDOW_DAYS,
        sim_error=request.GET.get("sim_error") == "1", **extra,
    )  # fmt: skip


def _days(request: HttpRequest) -> int:
    try:
        days = int(request.GET.get("days", "30"))
    except ValueError:
        return 30
    return days if days in RESULT_DAYS else 30


def _lift(policy_ids: list[int], offer: Offer, days: int) -> selectors.Lift | None:
    if offer.product is None:
        return None
    return selectors.policy_lift(
        policy_ids=policy_ids, product_code=offer.product.code, days=days, window_days=LIFT_WINDOW_DAYS
    )


@supervisor_required("policies.change_policy")
@require_POST
def policy_status(request: HttpRequest, policy_id: int) -> HttpResponse:
    policy = get_object_or_404(Policy, pk=policy_id)
    status = request.POST.get("status", "")
    if status not in TRANSITIONS or policy.status not in TRANSITIONS[PolicyStatus(status)]:
        return _detail_error(request, policy, f"A {policy.status} policy cannot become “{status}”.")
    try:
        services.policy_set_status(policy_id=policy.pk, status=status, actor=staff_of(request))
    except ValidationError as exc:
        message = " ".join(m for ms in exc.message_dict.values() for m in ms)
        return _detail_error(request, policy, f"Not {status}: {message} Edit the policy to fix it.")
    return redirect("policy-detail", policy_id=policy.pk)


def _detail_error(request: HttpRequest, policy: Policy, message: str) -> HttpResponse:
    policy.refresh_from_db()
    return render(
        request, "policies/detail.html", _detail_context(request, policy, error=message), status=400
    )


@supervisor_required("policies.change_policy")
@require_POST
def policy_simulate(request: HttpRequest, policy_id: int) -> HttpResponse:
    policy = get_object_or_404(Policy, pk=policy_id)
    try:
        days = int(request.POST.get("days", ""))
        state = simulation.simulation_start(policy_id=policy.pk, days=days)
    except ValueError:
        url = reverse("policy-detail", args=[policy.pk])
        return redirect(f"{url}?sim_error=1")
    return redirect(reverse("policy-detail", args=[policy.pk]) + f"?run={state.id}#simulation")


@supervisor_required()
def simulation_part(request: HttpRequest, run_id: str) -> HttpResponse:
    """The simulation panel, polled by the page while the run goes on."""
    run = simulation.simulation_get(run_id)
    response = render(request, "policies/_simulation.html", {"run": run, "run_id": run_id})
    response["Cache-Control"] = "no-store"
    return response


# --- Offers ----------------------------------------------------------------------------------


@supervisor_required()
def offer_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", "")
    found = Offer.objects.select_related("product").order_by("name")
    if status in OfferStatus.values:
        found = found.filter(status=status)
    page = Paginator(found, PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "policies/offers.html", desktop_context(
        request, page=page, status=status, statuses=OfferStatus.choices,
        page_query=f"status={status}" if status else "", total=Offer.objects.count(),
        can_add=staff_of(request).has_perm("policies.add_offer"),
    ))  # fmt: skip


def _offer_editor(request: HttpRequest, offer: Offer | None) -> HttpResponse:
    form = forms.OfferForm(request.POST or None, instance=offer)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            fields = {k: v for k, v in form.cleaned_data.items() if k in services.OFFER_FIELDS}
            try:
                saved = services.offer_save(offer_id=offer.pk if offer else None, **fields)
            except ValidationError as exc:
                for name, messages in exc.message_dict.items():
                    form.add_error(name if name in form.fields else None, messages)
            else:
                return redirect(reverse("offer-detail", args=[saved.pk]) + "?saved=1")
    return render(request, "policies/offer_edit.html", desktop_context(request, form=form, offer=offer),
                  status=status)  # fmt: skip


@supervisor_required("policies.add_offer")
def offer_new(request: HttpRequest) -> HttpResponse:
    return _offer_editor(request, None)


@supervisor_required("policies.change_offer")
def offer_edit(request: HttpRequest, offer_id: int) -> HttpResponse:
    return _offer_editor(request, get_object_or_404(Offer, pk=offer_id))


@supervisor_required()
def offer_detail(request: HttpRequest, offer_id: int) -> HttpResponse:
    offer = get_object_or_404(Offer.objects.select_related("product"), pk=offer_id)
    days = _days(request)
    results = selectors.presentation_results(
        offer_id=offer.pk, days=days, zone=timezone.get_current_timezone()
    )
    # jsonb containment: any action whose settings name this offer.
    policies = list(
        Policy.objects.exclude(status=PolicyStatus.DRAFT).filter(
            actions__contains=[{"settings": {"offer": offer.code}}]
        )
    )
    return render(request, "policies/offer_detail.html", desktop_context(
        request, offer=offer, results=results, days=days, day_choices=RESULT_DAYS, policies=policies,
        lift=_lift([p.pk for p in policies], offer, days) if policies else None, lift_window=LIFT_WINDOW_DAYS,
        can_change=staff_of(request).has_perm("policies.change_offer"), saved=request.GET.get("saved") == "1",
    ))  # fmt: skip
