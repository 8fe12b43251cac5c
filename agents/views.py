"""The staff desktop's pages: log-in, customer search and the customer screen.

Views stay thin: parse the request, check it is a staff member, call a crm
selector or service, render. The small ``*Row``/``*View`` dataclasses only shape
values for the templates (formatted phones, local times), so templates hold no
logic and query nothing.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, cast
from urllib.parse import urlencode

from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.core.paginator import Page
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.translation import get_language_info
from django.views.decorators.http import require_POST

from agents import selectors as agents_selectors
from agents import services as agents_services
from agents.forms import (
    CustomerSearchForm,
    NewCustomerForm,
    ProfileForm,
    SearchField,
    SearchPlan,
    StaffLoginForm,
    WrapUpForm,
)
from agents.models import Agent, Call
from crm import selectors, services
from crm.api.pagination import CappedCountPaginator
from crm.exceptions import Conflict, StaleVersion
from crm.models import Customer, Interaction, User
from crm.models.choices import AccessChannel
from crm.models.users import Role
from crm.validation import format_phone
from policies import selectors as policies_selectors
from policies import services as policies_services
from policies.models import OfferChannel

# The desk's call controls, by the word in the URL, and the telephony event each asks for.
DESK_CALL_CONTROLS = {"answer": "answered", "hold": "held", "resume": "resumed", "hangup": "ended"}
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


def staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous users go to the log-in page; customers and integrations get a 403
    that says what this is, instead of a bare error."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        if not user.is_authenticated:
            login = redirect_to_login(request.get_full_path())
            if request.headers.get("HX-Request"):
                # The session ran out under a page swap: htmx would put the log-in
                # page inside the results. HX-Redirect makes it load the whole page.
                response = HttpResponse(status=200)
                response["HX-Redirect"] = login["Location"]
                return response
            return login
        user = cast("User", user)
        if not user.is_active or not user.is_staff_member:
            return render(request, "agents/forbidden.html", {"who": _who(user)}, status=403)
        return view(request, *args, **kwargs)

    return wrapper


def partial_request(request: HttpRequest) -> bool:
    """An htmx swap of part of a page (not a history restore, which wants it whole)."""
    return bool(request.headers.get("HX-Request")) and not request.headers.get("HX-History-Restore-Request")


def _who(user: User) -> str:
    if user.is_customer:
        return "a self-service customer"
    if user.is_integration:
        return "an integration"
    return "an account without a staff role"


def role_label(user: User) -> str:
    if user.is_superuser:
        return Role.ADMINISTRATOR.label
    for role in (Role.ADMINISTRATOR, Role.SUPERVISOR, Role.AGENT):
        if role.value in user.roles:
            return str(role.label)
    return ""


def _staff(request: HttpRequest) -> User:
    """The signed-in staff member (``staff_required`` has checked)."""
    return cast("User", request.user)


def _desktop(request: HttpRequest, **context: Any) -> dict[str, Any]:
    """What every desktop page shows in its top bar, plus the page's own values."""
    return {"role": role_label(_staff(request)), **context}


# --- Log-in ----------------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True
    authentication_form = StaffLoginForm

    def form_invalid(self, form: Any) -> HttpResponse:
        response = super().form_invalid(form)
        lockout = services.login_lockout_of(self.request)
        if lockout is not None:
            # The form says it in words; the status tells scripts and monitoring.
            response.status_code = 429
            response["Retry-After"] = str(lockout.seconds_left())
        return response


class LogoutView(auth_views.LogoutView):
    """POST only (Django's own rule), so a link or an image cannot sign an agent out.
    Signing out ends the agent's availability: no call rings an empty desk."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated:
            agents_services.agent_sign_out(user=cast("User", request.user))
        return super().post(request, *args, **kwargs)


# --- Search -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultRow:
    customer: Customer
    phone: str
    city: str


@dataclass(frozen=True)
class SearchOutcome:
    plan: SearchPlan
    searched: SearchField | None = None  # the field whose reading produced the results
    page: Page[Customer] | None = None
    error: tuple[str, str] | None = None  # (field label, message)


def run_search(plan: SearchPlan, queryset: QuerySet[Customer], page_number: str | None) -> SearchOutcome:
    """Try each reading of the input in turn; the first that finds someone wins.

    A reading the selector cannot parse (an unreadable phone) is kept as the
    error to show if no other reading finds anyone."""
    if plan.error:
        return SearchOutcome(plan=plan, error=plan.error)
    error: tuple[str, str] | None = None
    readings: list[tuple[SearchField, QuerySet[Customer]]] = []
    winner: tuple[SearchField, QuerySet[Customer]] | None = None
    for attempt in plan.attempts:
        try:
            found = selectors.customer_search(queryset=queryset, **attempt.params)
        except ValidationError as exc:
            error = error or (SearchField(attempt.field).label, _first_message(exc))
            continue
        readings.append((attempt.field, found))
        # With one reading there is nothing to fall back to: skip the extra query.
        if len(plan.attempts) == 1 or found.exists():
            winner = (attempt.field, found)
            break
    if winner is None:
        if error or not readings:
            return SearchOutcome(plan=plan, error=error)
        winner = readings[0]  # nobody found: report the likeliest reading's empty result
    searched, found = winner
    found = found.defer("search_vector", "name_phonetic", "phone_keys", "email_keys")
    page = CappedCountPaginator(found, RESULTS_PER_PAGE, cap=SEARCH_COUNT_CAP).get_page(page_number)
    return SearchOutcome(plan=plan, searched=searched, page=page)


def _first_message(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return next(iter(exc.message_dict.values()))[0]
    return exc.messages[0]


def _result_rows(page: Page[Customer] | None) -> list[ResultRow]:
    if page is None:
        return []
    return [
        ResultRow(
            customer=c,
            phone=format_phone(c.primary_phone) if c.primary_phone else "",
            city=str((c.primary_address or {}).get("city", "")),
        )
        for c in page.object_list
    ]


@staff_required
def home(request: HttpRequest) -> HttpResponse:
    """The agent's customer search: one box, results 25 to a page."""
    form = CustomerSearchForm(request.GET or None)
    plan = form.plan()
    visible = selectors.customers_visible_to(_staff(request))
    outcome = run_search(plan, visible, request.GET.get("page")) if plan.attempts or plan.error else None
    rows = _result_rows(outcome.page if outcome else None)
    if rows:
        # A result row shows a customer's name and phone: a read, logged as the API logs
        # its search results (one row per customer shown).
        services.access_log_record(
            user=_staff(request),
            customer_ids=[row.customer.pk for row in rows],
            channel=AccessChannel.PAGE,
            path=request.get_full_path(),
        )
    back = urlencode({k: request.GET[k] for k in _BACK_KEYS if request.GET.get(k)})
    page_query = urlencode({k: request.GET[k] for k in ("q", "field") if request.GET.get(k)})
    context = _desktop(
        request,
        work=[] if partial_request(request) else agents_selectors.work_list(user_id=_staff(request).pk),
        now=timezone.now(),
        form=form,
        plan=plan,
        outcome=outcome,
        rows=rows,
        back=back,
        page_query=page_query,
        fields=SearchField.choices,
        count_cap=f"{SEARCH_COUNT_CAP:,}",
    )
    # htmx swaps only the results; a history restore or a plain load gets the page.
    partial = partial_request(request)
    response = render(request, "agents/_results.html" if partial else "agents/home.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response


# --- The customer screen ------------------------------------------------------------------


@dataclass(frozen=True)
class LocalTime:
    """The customer's wall clock, so an agent calling across zones knows the hour."""

    now: dt.datetime
    zone: str
    within_calling_hours: bool


@dataclass(frozen=True)
class HistoryRow:
    interaction: Interaction
    duration: str  # "4:05"; empty when the source did not say
    disposition: str  # the source's code made readable: "no_answer" -> "no answer"


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return ""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def customer_local_time(zone: str) -> LocalTime | None:
    try:
        now = timezone.now().astimezone(zoneinfo.ZoneInfo(zone))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
    return LocalTime(now=now, zone=zone, within_calling_hours=CALLING_HOURS[0] <= now.hour < CALLING_HOURS[1])


def language_name(code: str) -> str:
    try:
        return str(get_language_info(code.lower())["name"])
    except KeyError:
        base = code.split("-", maxsplit=1)[0].lower()
        try:
            return f"{get_language_info(base)['name']} ({code})"
        except KeyError:
            return code


def _split_email(email: dict[str, Any]) -> dict[str, Any]:
    """The address in two parts, so a long one wraps after the "@", not mid-word."""
    local, _, domain = str(email.get("address", "")).rpartition("@")
    return {**email, "local": local, "domain": domain}


def _back_link(request: HttpRequest) -> str:
    back = QueryDict(request.GET.get("back", ""))
    kept = urlencode({k: back[k] for k in _BACK_KEYS if back.get(k)})
    return reverse("home") + (f"?{kept}" if kept else "")


def _screen_context(request: HttpRequest, customer_id: int) -> dict[str, Any] | None:
    """Everything the customer screen shows, read in one selector call and logged
    as a read; None when there is no such customer among those this staff member
    may see."""
    user = _staff(request)
    try:
        screen = selectors.customer_screen(
            customer_id=customer_id, queryset=selectors.customers_visible_to(user)
        )
    except Customer.DoesNotExist:
        return None
    # The household panel shows the other members' names, roles and tiers: reads
    # of their records too, logged as the API logs a household read.
    services.access_log_record(
        user=user,
        customer_ids=[customer_id, *(member.pk for member in screen.household_members)],
        channel=AccessChannel.PAGE,
        path=request.get_full_path(),
    )
    customer = screen.customer
    return _desktop(
        request,
        screen=screen,
        customer=customer,
        # Offers the policies put on the agent's screen for this customer, newest first.
        offers=list(
            policies_selectors.offers_current(customer_id=customer_id).filter(
                channel=OfferChannel.AGENT_SCREEN
            )
        ),
        phones=[{**p, "display": format_phone(p["number"])} for p in customer.phones],
        emails=[_split_email(e) for e in customer.emails],
        local=customer_local_time(customer.time_zone),
        calling_hours=CALLING_HOURS,
        language=language_name(customer.language),
        address=customer.primary_address,
        history=[
            HistoryRow(i, _duration(i.duration_seconds), i.disposition.replace("_", " "))
            for i in screen.interactions
        ],
        history_limit=selectors.SCREEN_HISTORY,
        back_url=_back_link(request),
        now=timezone.now(),
    )


@staff_required
def customer_detail(request: HttpRequest, customer_id: int) -> HttpResponse:
    """The unified customer screen. Every open is access-logged; the page then
    keeps itself current over the desktop socket (static/js/live.js)."""
    context = _screen_context(request, customer_id)
    if context is None:
        return render(
            request,
            "agents/customer_missing.html",
            _desktop(request, number=f"C-{customer_id:07d}", back_url=_back_link(request)),
            status=404,
        )
    return render(request, "agents/customer.html", context)


@staff_required
def customer_screen_part(request: HttpRequest, customer_id: int) -> HttpResponse:
    """The screen's body alone, read afresh: what the live page swaps in when the
    socket says the record changed, and after a reconnect (frames only tell; the
    rows are the truth, so the page re-reads them instead of patching itself)."""
    context = _screen_context(request, customer_id)
    if context is None:
        return HttpResponse(status=404)
    response = render(request, "agents/_screen.html", context)
    response["Cache-Control"] = "no-store"
    return response


# --- The desk: presence and the call in hand ------------------------------------------------


def _json_error(exc: Exception, status: int) -> JsonResponse:
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        message = " ".join(m for ms in exc.message_dict.values() for m in ms)
    elif isinstance(exc, Conflict):
        message = " ".join(exc.errors.values())
    else:
        message = str(exc)
    return JsonResponse({"error": message}, status=status)


@staff_required
@require_POST
def desk_state(request: HttpRequest) -> HttpResponse:
    """Available, a break with its reason, or offline: the agent's own choice."""
    try:
        agent = agents_services.agent_set_state(
            user=_staff(request), state=request.POST.get("state", ""), reason=request.POST.get("reason", "")
        )
    except ValidationError as exc:
        return _json_error(exc, 400)
    except Conflict as exc:
        return _json_error(exc, 409)
    return JsonResponse(agents_services.presence_snapshot(user=agent.user))


@staff_required
@require_POST
def desk_call_control(request: HttpRequest, call_id: int, kind: str) -> HttpResponse:
    """Answer, hold, resume or hang up the agent's own call."""
    if kind not in DESK_CALL_CONTROLS:
        return JsonResponse({"error": f"Use one of {', '.join(DESK_CALL_CONTROLS)}."}, status=400)
    try:
        agents_services.desk_call_control(
            user=_staff(request), call_id=call_id, kind=DESK_CALL_CONTROLS[kind]
        )
    except agents_services.CallNotFound:
        return JsonResponse({"error": "This call is not yours, or is over."}, status=404)
    except Conflict as exc:
        return _json_error(exc, 409)
    return JsonResponse(agents_services.presence_snapshot(user=_staff(request)))


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
    user = _staff(request)
    try:
        agents_services.call_wrap_up(
            user=user,
            disposition=form.cleaned_data["disposition"],
            notes=form.cleaned_data["notes"],
            callback_at=form.callback_moment(agents_services.wrap_up_zone(user=user)),
        )
    except ValidationError as exc:
        return _json_error(exc, 400)
    except Conflict as exc:
        return _json_error(exc, 409)
    return JsonResponse(agents_services.presence_snapshot(user=user))


@staff_required
def desk_call(request: HttpRequest, call_id: int) -> HttpResponse:
    """Where a screen pop lands: the caller's record when the number names one
    customer; a pick list when it names several; otherwise the number, to search
    by name or create the record."""
    call = Call.objects.select_related("queue").filter(pk=call_id, agent__user=_staff(request)).first()
    if call is None:
        return render(request, "agents/call_missing.html", _desktop(request, call_id=call_id), status=404)
    if call.customer_id is not None:
        return redirect(reverse("customer", args=[call.customer_id]))
    visible = selectors.customers_visible_to(_staff(request))
    candidates = list(visible.filter(pk__in=call.candidates).order_by("sort_name", "id"))
    if candidates:
        services.access_log_record(
            user=_staff(request),
            customer_ids=[c.pk for c in candidates],
            channel=AccessChannel.PAGE,
            path=request.get_full_path(),
        )
    number = format_phone(call.caller_number) if call.caller_number else ""
    return render(
        request,
        "agents/call.html",
        _desktop(
            request,
            call=call,
            number=number,
            candidates=_result_rows_of(candidates),
            search_url=reverse("home") + (f"?{urlencode({'q': number})}" if number else ""),
        ),
    )


def _result_rows_of(customers: list[Customer]) -> list[ResultRow]:
    return [
        ResultRow(
            customer=c,
            phone=format_phone(c.primary_phone) if c.primary_phone else "",
            city=str((c.primary_address or {}).get("city", "")),
        )
        for c in customers
    ]


# --- The supervisor's floor view ---------------------------------------------------------------


def _floor_context(request: HttpRequest) -> dict[str, Any]:
    user = _staff(request)
    return _desktop(
        request,
        floor=agents_selectors.floor(zone=user.time_zone),
        now=timezone.now(),
        can_manage=user.has_perm("agents.manage_floor"),
    )


@staff_required
def floor_view(request: HttpRequest) -> HttpResponse:
    """Who is available, on a call or away; calls waiting; today's service level.
    Kept current over the desk socket (a frame makes it re-read the part below)."""
    if not _staff(request).has_perm("agents.view_floor"):
        return render(request, "agents/forbidden.html", {"who": "an agent"}, status=403)
    return render(request, "agents/floor.html", _floor_context(request))


@staff_required
def floor_part(request: HttpRequest) -> HttpResponse:
    if not _staff(request).has_perm("agents.view_floor"):
        return HttpResponse(status=403)
    response = render(request, "agents/_floor.html", _floor_context(request))
    response["Cache-Control"] = "no-store"
    return response


@staff_required
@require_POST
def floor_agent_offline(request: HttpRequest, user_id: int) -> HttpResponse:
    """A supervisor signs an idle agent off the floor (a desk left open)."""
    supervisor = _staff(request)
    if not supervisor.has_perm("agents.manage_floor"):
        return JsonResponse({"error": "Only supervisors may change another agent's state."}, status=403)
    agent = Agent.objects.select_related("user").filter(pk=user_id).first()
    if agent is None:
        return JsonResponse({"error": "No such agent."}, status=404)
    try:
        agents_services.agent_force_offline(user=agent.user, by=supervisor)
    except Conflict as exc:
        return _json_error(exc, 409)
    return JsonResponse({"state": "offline"})


@staff_required
def desk_new_customer(request: HttpRequest) -> HttpResponse:
    """Take down a new caller: the form comes prefilled with the number they
    called from; saving opens their record and, during a call, attaches it."""
    user = _staff(request)
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
    return render(request, "agents/new_customer.html", _desktop(request, form=form, call=call, caller=caller))


# --- Editing the profile in place --------------------------------------------------------------

_FIELD_LABELS = {name: str(field.label) for name, field in ProfileForm.base_fields.items()}
_FIELD_LABELS.update(phones="Phones", emails="E-mails")


@dataclass(frozen=True)
class ConflictRow:
    field: str
    theirs: str
    yours: str
    by: str
    at: dt.datetime


def _shown(value: Any) -> str:
    if isinstance(value, list):
        primary = next((e for e in value if isinstance(e, dict) and e.get("primary")), None)
        entry = primary or (value[0] if value else None)
        if not entry:
            return "—"
        shown = entry.get("number") or entry.get("address") or ""
        return format_phone(shown) if str(shown).startswith("+") else str(shown)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value) if value not in (None, "") else "—"


def _conflicts(customer: Customer, since_version: int, yours: dict[str, Any]) -> list[ConflictRow]:
    """What others changed since the version the agent edited, next to what the
    agent wants for the same fields (their other changes do not clash)."""
    rows = (
        customer.change_history.filter(version__gt=since_version)
        .select_related("actor")
        .order_by("-version", "-id")
    )
    seen: dict[str, ConflictRow] = {}
    for change in rows:
        if change.field in seen:
            continue
        actor = change.actor
        by = (actor.get_full_name() or actor.username) if actor else "the system"
        seen[change.field] = ConflictRow(
            field=_FIELD_LABELS.get(change.field, change.field.replace("_", " ")),
            theirs=_shown(change.new_value),
            yours=_shown(yours[change.field]) if change.field in yours else "(not changed by you)",
            by=by,
            at=change.at,
        )
    return list(seen.values())


@staff_required
def customer_profile(request: HttpRequest, customer_id: int) -> HttpResponse:
    """GET: the contact panel as a form. POST: save it against the version the
    form was read at; a stale version shows who changed what since, next to the
    agent's values, and lets them apply theirs over it."""
    user = _staff(request)
    customer = selectors.customers_visible_to(user).filter(pk=customer_id).first()
    if customer is None:
        return HttpResponse(status=404)
    if not user.has_perm("crm.change_customer"):
        return HttpResponse("Your role cannot change customers.", status=403)
    if request.method != "POST":
        context = _desktop(request, customer=customer, form=ProfileForm.of(customer), conflicts=[])
        return render(request, "agents/_profile_form.html", context)
    form = ProfileForm(request.POST)
    conflicts: list[ConflictRow] = []
    if form.is_valid():
        changes = form.changes(customer)
        try:
            if changes:
                services.customer_update(
                    customer_id=customer.pk, expected_version=form.cleaned_data["version"],
                    changes=changes, actor=user,
                )  # fmt: skip
        except StaleVersion as exc:
            conflicts = _conflicts(customer, exc.expected_version, changes)
            # Applying "mine" means saving over the version now current.
            data = request.POST.copy()
            data["version"] = str(exc.current_version)
            form = ProfileForm(data)
            form.is_valid()
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                target = {"phones": "phone", "emails": "email"}.get(field.split(".")[0], field)
                form.add_error(target if target in form.fields else None, messages)
        else:
            # Saved: the whole screen again, as it now is.
            screen_context = _screen_context(request, customer_id)
            response = render(request, "agents/_screen.html", screen_context)
            response["HX-Retarget"] = "#screen"
            response["HX-Reswap"] = "innerHTML"
            return response
    context = _desktop(request, customer=customer, form=form, conflicts=conflicts)
    return render(request, "agents/_profile_form.html", context)


@staff_required
@require_POST
def customer_offer_respond(
    request: HttpRequest, customer_id: int, presentation_id: int, answer: str
) -> HttpResponse:
    """The customer said yes or no to an offer on the agent's screen: recorded for
    them by the agent (an offer.accepted / offer.declined event), then the screen
    is read again."""
    user = _staff(request)
    if answer not in ("accept", "decline"):
        return HttpResponse(status=404)
    if not selectors.customers_visible_to(user).filter(pk=customer_id).exists():
        return HttpResponse(status=404)
    presentation = (
        policies_selectors.offers_current(customer_id=customer_id).filter(pk=presentation_id).first()
    )
    error = ""
    if presentation is None:
        error = "This offer is no longer open: it was answered or has expired."
    else:
        try:
            policies_services.offer_respond(
                presentation_id=presentation.pk, accepted=answer == "accept", actor=user
            )
        except Conflict as exc:
            error = " ".join(exc.errors.values())
    context = _screen_context(request, customer_id)
    if context is None:
        return HttpResponse(status=404)
    response = render(request, "agents/_screen.html", {**context, "offer_error": error})
    response["HX-Retarget"] = "#screen"
    response["HX-Reswap"] = "innerHTML"
    return response
