"""Log-in and the customer search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlencode

from django.contrib.auth import views as auth_views
from django.core.exceptions import ValidationError
from django.core.paginator import Page
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.cache import patch_vary_headers

from agents import selectors as agents_selectors
from agents import services as agents_services
from agents.forms import (
    CustomerSearchForm,
    SearchField,
    SearchPlan,
    StaffLoginForm,
)
from agents.views.common import (
    _BACK_KEYS,
    RESULTS_PER_PAGE,
    SEARCH_COUNT_CAP,
    partial_request,
)
from crm import selectors, services
from crm.api.pagination import CappedCountPaginator
from crm.models import Customer, User
from crm.models.choices import AccessChannel
from crm.staff_pages import desktop_context, staff_of, staff_required
from crm.validation import format_phone

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
    return result_rows_of(list(page.object_list)) if page is not None else []


@staff_required
def home(request: HttpRequest) -> HttpResponse:
    """The agent's customer search: one box, results 25 to a page."""
    form = CustomerSearchForm(request.GET or None)
    plan = form.plan()
    visible = selectors.customers_visible_to(staff_of(request))
    outcome = run_search(plan, visible, request.GET.get("page")) if plan.attempts or plan.error else None
    rows = _result_rows(outcome.page if outcome else None)
    if rows:
        # A result row shows a customer's name and phone: a read, logged as the API logs
        # its search results (one row per customer shown).
        services.access_log_record(
            user=staff_of(request),
            customer_ids=[row.customer.pk for row in rows],
            channel=AccessChannel.PAGE,
            path=request.get_full_path(),
        )
    back = urlencode({k: request.GET[k] for k in _BACK_KEYS if request.GET.get(k)})
    page_query = urlencode({k: request.GET[k] for k in ("q", "field") if request.GET.get(k)})
    context = desktop_context(
        request,
        work=[] if partial_request(request) else agents_selectors.work_list(user_id=staff_of(request).pk),
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


def result_rows_of(customers: list[Customer]) -> list[ResultRow]:
    return [
        ResultRow(
            customer=c,
            phone=format_phone(c.primary_phone) if c.primary_phone else "",
            city=str((c.primary_address or {}).get("city", "")),
        )
        for c in customers
    ]
