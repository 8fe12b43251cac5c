"""What every desk page shares: who may use it, the top bar's values, error bodies."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from agents import services as agents_services
from crm.exceptions import Conflict
from crm.models import User
from crm.models.users import Role

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


def staff_of(request: HttpRequest) -> User:
    """The signed-in staff member (``staff_required`` has checked)."""
    return cast("User", request.user)


def desktop_context(request: HttpRequest, **context: Any) -> dict[str, Any]:
    """What every desktop page shows in its top bar, plus the page's own values."""
    return {"role": role_label(staff_of(request)), **context}


def json_error(exc: Exception, status: int) -> JsonResponse:
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        message = " ".join(m for ms in exc.message_dict.values() for m in ms)
    elif isinstance(exc, Conflict):
        message = " ".join(exc.errors.values())
    else:
        message = str(exc)
    return JsonResponse({"error": message}, status=status)
