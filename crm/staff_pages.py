"""Who may use the staff pages, and what every one of them shows in its top bar.

The desk (agents), the policy pages (policies) and the script designer
(scripting) are one desktop with one sign-in and one top bar. Imports point one
way, so the rule lives here, in the app they all import, instead of once per app.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from crm.models import User
from crm.models.users import Role

View = Callable[..., HttpResponse]


def role_label(user: User) -> str:
    """The role the top bar names: the highest the user holds."""
    if user.is_superuser:
        return str(Role.ADMINISTRATOR.label)
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


def _to_login(request: HttpRequest) -> HttpResponse:
    login = redirect_to_login(request.get_full_path())
    if request.headers.get("HX-Request"):
        # The session ran out under a page swap: htmx would put the log-in page
        # inside the results. HX-Redirect makes it load the whole page.
        response = HttpResponse(status=200)
        response["HX-Redirect"] = login["Location"]
        return response
    return login


def _who(user: User) -> str:
    if user.is_customer:
        return "a self-service customer"
    if user.is_integration:
        return "an integration"
    return "an account without a staff role"


def _is_home(request: HttpRequest) -> bool:
    match = request.resolver_match
    return match is not None and match.url_name == "home"


def staff_required(view: View) -> View:
    """Anonymous users go to the log-in page; customers and integrations get a 403
    that says what this is, instead of a bare error."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return _to_login(request)
        user = staff_of(request)
        if user.is_active and user.customer_id and _is_home(request):
            # Signing in lands on the home page: a customer's home is their own page.
            return redirect("me")
        if not user.is_active or not user.is_staff_member:
            return render(request, "agents/forbidden.html", {"who": _who(user)}, status=403)
        return view(request, *args, **kwargs)

    return wrapper


def staff_with(permission: str, *, forbidden: str, extra: tuple[str, ...] = ()) -> Callable[[View], View]:
    """Staff holding ``permission`` (and every permission in ``extra``); other
    staff get the ``forbidden`` template, which names the permission they lack."""

    def decorate(view: View) -> View:
        @staff_required
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = staff_of(request)
            if not all(user.has_perm(p) for p in (*extra, permission)):
                return render(request, forbidden, desktop_context(request, permission=permission), status=403)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate
