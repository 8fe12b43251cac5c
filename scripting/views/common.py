"""Who may use the scripting pages: the desktop's rule (crm.staff_pages), with
the scripting permissions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

from crm import staff_pages
from crm.models import User


def staff_with(permission: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Anonymous: to the log-in page (an htmx swap is told to load it whole);
    a customer or an integration: the desktop's 403; staff without ``permission``: 403."""
    return staff_pages.staff_with(permission, forbidden="scripting/forbidden.html")


def page_context(request: HttpRequest, **context: Any) -> dict[str, Any]:
    """The top bar's values (as every desktop page), plus the page's own."""
    return staff_pages.desktop_context(request, **context)


def user_of(request: HttpRequest) -> User:
    return cast("User", request.user)


def messages_of(exc: ValidationError) -> dict[str, list[str]]:
    return exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
