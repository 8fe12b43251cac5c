"""Who may use the scripting pages (scripting does not import the agents app,
so it checks the same rule itself: a signed-in staff member with the permission)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from crm.models import User
from crm.models.users import Role


def staff_with(permission: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Anonymous: to the log-in page (an htmx swap is told to load it whole);
    a staff member without ``permission``, a customer or an integration: 403."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                login = redirect_to_login(request.get_full_path())
                if request.headers.get("HX-Request"):
                    response = HttpResponse(status=200)
                    response["HX-Redirect"] = login["Location"]
                    return response
                return login
            user = cast("User", request.user)
            if not user.is_active or not user.is_staff_member or not user.has_perm(permission):
                return render(request, "scripting/forbidden.html", _top(request), status=403)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def _top(request: HttpRequest) -> dict[str, Any]:
    user = cast("User", request.user)
    role = ""
    if user.is_superuser:
        role = str(Role.ADMINISTRATOR.label)
    else:
        role = next(
            (
                str(r.label)
                for r in (Role.ADMINISTRATOR, Role.SUPERVISOR, Role.AGENT)
                if r.value in user.roles
            ),
            "",
        )
    return {"role": role}


def page_context(request: HttpRequest, **context: Any) -> dict[str, Any]:
    """The top bar's values (as every desktop page), plus the page's own."""
    return {**_top(request), **context}


def user_of(request: HttpRequest) -> User:
    return cast("User", request.user)


def messages_of(exc: ValidationError) -> dict[str, list[str]]:
    return exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
