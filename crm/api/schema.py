"""OpenAPI descriptions that drf-spectacular cannot infer by itself."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework import permissions


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "crm.authentication.ApiTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "A token issued to a source system (manage.py issue_api_token) or obtained by a "
                "customer from POST /api/v1/auth/token/."
            ),
        }


# --- Every status code an operation can answer, with its body --------------------------
#
# drf-spectacular documents the success response an operation declares; the
# errors that DRF, the exception handler and the strict query string produce
# come from shared code, so they are added here for every operation they can
# reach. An operation's own @extend_schema(responses=...) for a code wins.

_FIELD_ERRORS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "Each field, query parameter or header that was refused, with what is wrong and how to "
        "fix it; `detail` when the request as a whole was refused (for example a body that is "
        "not JSON), `non_field_errors` when a rule spans several fields."
    ),
    "properties": {"detail": {"type": "string"}},
    # A list's entries or an object's fields nest their own errors, by index or name:
    # {"addresses": {"2": {"city": ["This field may not be blank."]}}}.
    "additionalProperties": {
        "anyOf": [
            {"type": "array", "items": {"type": "string"}},
            {"$ref": "#/components/schemas/FieldErrors"},
        ]
    },
}


def _component(auto_schema: Any, name: str, schema: dict[str, Any]) -> dict[str, Any]:
    component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
    auto_schema.registry.register_on_missing(component)
    return component.ref  # type: ignore[no-any-return]


def _json(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


class CrmAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus: the query parameters a view declares in
    ``query_serializers`` (crm.api.base), and every error status code with its body."""

    def get_override_parameters(self) -> list[Any]:
        parameters = list(super().get_override_parameters())
        declared = getattr(self.view, "query_serializers", {})
        operation = getattr(self.view, "action", None) or self.method.lower()
        if operation in declared:
            parameters.append(declared[operation])
        return parameters

    def _get_pagination_parameters(self) -> list[Any]:
        # Only the actions that page (crm.api.base.StrictQueryParams.paginated_actions).
        operation = getattr(self.view, "action", None) or self.method.lower()
        if operation not in getattr(self.view, "paginated_actions", {"list"}):
            return []
        return super()._get_pagination_parameters()  # type: ignore[no-any-return]

    def get_filter_backends(self) -> list[Any]:
        operation = getattr(self.view, "action", None) or self.method.lower()
        if operation != "list" or getattr(self.view, "filterset_class", None) is None:
            return []
        return super().get_filter_backends()

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code, response in self._error_responses().items():
            responses.setdefault(code, response)
        return responses

    def _error_responses(self) -> dict[str, dict[str, Any]]:
        from crm.api.serializers import ErrorSerializer  # noqa: PLC0415  (serializers import models)

        error = self.resolve_serializer(ErrorSerializer, "response").ref
        field_errors = _component(self, "FieldErrors", _FIELD_ERRORS_SCHEMA)
        open_to_all = all(isinstance(p, permissions.AllowAny) for p in self.view.get_permissions())
        has_body = self.method in ("POST", "PUT", "PATCH")
        operation = getattr(self.view, "action", None) or self.method.lower()
        pages = operation in getattr(self.view, "paginated_actions", {"list"}) and (
            getattr(self.view, "pagination_class", None) is not None
        )
        out = {
            "400": _json(
                "The request was refused: an unknown or malformed query parameter, or a body that "
                "fails validation. Each is named with the fix.",
                field_errors,
            ),
            "401": _json(
                "No credentials, or a token that is unknown, expired or revoked, or whose source "
                "system is inactive.",
                error,
                {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "The scheme to use."}},
            ),
        }
        if not open_to_all:
            out["403"] = _json(
                "The caller may not do this (its role, or a field it may not set, each named).",
                field_errors,
            )
        if "{" in self.path or pages:
            out["404"] = _json(
                "No such record among those the caller may see"
                + (", or a page past the last one." if pages else "."),
                error,
            )
        if has_body:
            out["415"] = _json("The body is not JSON: send Content-Type: application/json.", error)
        if getattr(self.view, "throttle_scope", None):
            out["429"] = _json(
                "Too many requests: wait as long as Retry-After says.",
                error,
                {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
            )
        return out
