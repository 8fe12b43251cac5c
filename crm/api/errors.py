from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from crm.exceptions import Conflict, FieldAccessDenied


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus: a Django ValidationError from a service becomes a 400
    whose body names each field, exactly like a serializer error; a Conflict (an
    identifier already used for something else) a 409, and a FieldAccessDenied
    (fields the caller may not set) a 403, both naming each field the same way."""
    if isinstance(exc, DjangoValidationError):
        detail: Any = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    if isinstance(exc, Conflict):
        set_rollback()
        return Response({field: [message] for field, message in exc.errors.items()}, status.HTTP_409_CONFLICT)
    if isinstance(exc, FieldAccessDenied):
        set_rollback()
        return Response(exc.errors, status=status.HTTP_403_FORBIDDEN)
    return drf_exception_handler(exc, context)


# Django answers a URL that matches no route (an id that is not a number, a
# misspelt path) before any API view runs: under /api/ the answer is JSON all the
# same, in the shape every other API error has.


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "No such resource: check the path and the id."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"detail": "The server failed: the request was not applied; try again."}, status=500
        )
    return defaults.server_error(request)
