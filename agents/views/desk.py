"""The desk: presence, the call in hand, wrap-up, where a pop lands, new callers."""

from __future__ import annotations

from urllib.parse import urlencode

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from agents import services as agents_services
from agents.forms import (
    NewCustomerForm,
    WrapUpForm,
)
from agents.models import Call
from agents.views.common import (
    DESK_CALL_CONTROLS,
    json_error,
)
from agents.views.search import result_rows_of
from crm import selectors, services
from crm.exceptions import Conflict
from crm.models.choices import AccessChannel
from crm.staff_pages import desktop_context, staff_of, staff_required
from crm.validation import format_phone

# --- The desk: presence and the call in hand ------------------------------------------------


@staff_required
@require_POST
def desk_state(request: HttpRequest) -> HttpResponse:
    """Available, a break with its reason, or offline: the agent's own choice."""
    try:
        agent = agents_services.agent_set_state(
            user=staff_of(request), state=request.POST.get("state", ""), reason=request.POST.get("reason", "")
        )
    except ValidationError as exc:
        return json_error(exc, 400)
    except Conflict as exc:
        return json_error(exc, 409)
    return JsonResponse(agents_services.presence_snapshot(user=agent.user))


@staff_required
@require_POST
def desk_call_control(request: HttpRequest, call_id: int, kind: str) -> HttpResponse:
    """Answer, hold, resume, transfer (to ``agent`` or ``queue``) or hang up the
    agent's own call."""
    if kind not in DESK_CALL_CONTROLS:
        return JsonResponse({"error": f"Use one of {', '.join(DESK_CALL_CONTROLS)}."}, status=400)
    payload = {key: request.POST[key] for key in ("agent", "queue") if request.POST.get(key)}
    try:
        agents_services.desk_call_control(
            user=staff_of(request), call_id=call_id, kind=DESK_CALL_CONTROLS[kind], payload=payload
        )
    except agents_services.CallNotFound:
        return JsonResponse({"error": "This call is not yours, or is over."}, status=404)
    except ValidationError as exc:
        return json_error(exc, 400)
    except Conflict as exc:
        return json_error(exc, 409)
    return JsonResponse(agents_services.presence_snapshot(user=staff_of(request)))


@staff_required
def desk_transfer_targets(request: HttpRequest) -> HttpResponse:
    """Where the agent's call may be transferred: available agents of its queue, and queues."""
    return JsonResponse(agents_services.transfer_targets(user=staff_of(request)))


@staff_required
@require_POST
def desk_wrap_up_done(request: HttpRequest) -> HttpResponse:
    """The disposition, notes and an optional callback (a local date and time on
    the customer's clock, from the form's datetime-local field)."""
    form = WrapUpForm(request.POST)
    if not form.is_valid():
        return JsonResponse(
            {"error": " ".join(str(m) for ms in form.errors.values() for m in ms)}, status=400
        )
    user = staff_of(request)
    try:
        agents_services.call_wrap_up(
            user=user,
            disposition=form.cleaned_data["disposition"],
            notes=form.cleaned_data["notes"],
            callback_at=form.callback_moment(agents_services.wrap_up_zone(user=user)),
        )
    except ValidationError as exc:
        return json_error(exc, 400)
    except Conflict as exc:
        return json_error(exc, 409)
    return JsonResponse(agents_services.presence_snapshot(user=user))


@staff_required
def desk_call(request: HttpRequest, call_id: int) -> HttpResponse:
    """Where a screen pop lands: the caller's record when the number names one
    customer; a pick list when it names several; otherwise the number, to search
    by name or create the record."""
    call = Call.objects.select_related("queue").filter(pk=call_id, agent__user=staff_of(request)).first()
    if call is None:
        return render(
            request, "agents/call_missing.html", desktop_context(request, call_id=call_id), status=404
        )
    if call.customer_id is not None:
        return redirect(reverse("customer", args=[call.customer_id]))
    visible = selectors.customers_visible_to(staff_of(request))
    candidates = list(visible.filter(pk__in=call.candidates).order_by("sort_name", "id"))
    if candidates:
        services.access_log_record(
            user=staff_of(request),
            customer_ids=[c.pk for c in candidates],
            channel=AccessChannel.PAGE,
            path=request.get_full_path(),
        )
    number = format_phone(call.caller_number) if call.caller_number else ""
    return render(
        request,
        "agents/call.html",
        desktop_context(
            request,
            call=call,
            number=number,
            candidates=result_rows_of(candidates),
            search_url=reverse("home") + (f"?{urlencode({'q': number})}" if number else ""),
        ),
    )


@staff_required
def desk_new_customer(request: HttpRequest) -> HttpResponse:
    """Take down a new caller: the form comes prefilled with the number they
    called from; saving opens their record and, during a call, attaches it."""
    user = staff_of(request)
    if not user.has_perm("crm.add_customer"):
        return render(
            request, "agents/forbidden.html", {"who": "a role that cannot add customers"}, status=403
        )
    call = None
    call_id = request.GET.get("call") or request.POST.get("call")
    if call_id and call_id.isdigit():
        call = Call.objects.filter(pk=int(call_id), agent__user=user).first()
    if request.method == "POST":
        form = NewCustomerForm(request.POST)
        if form.is_valid():
            try:
                customer = services.customer_create(actor=user, **form.customer_fields())
            except ValidationError as exc:
                for field, messages in exc.message_dict.items():
                    target = {"phones": "phone", "emails": "email"}.get(field, field)
                    form.add_error(target if target in form.fields else None, messages)
            else:
                if call is not None:
                    agents_services.call_attach_customer(call_id=call.pk, customer_id=customer.pk)
                return redirect(reverse("customer", args=[customer.pk]))
    else:
        number = format_phone(call.caller_number) if call is not None and call.caller_number else ""
        form = NewCustomerForm(initial={"phone": request.GET.get("phone", number)})
    caller = format_phone(call.caller_number) if call is not None and call.caller_number else ""
    return render(
        request, "agents/new_customer.html", desktop_context(request, form=form, call=call, caller=caller)
    )
