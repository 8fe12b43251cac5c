"""What every API v1 view shares: a query string read strictly.

A misspelt parameter (``?chanel=phone``) that is silently ignored returns the
whole list as if it had been applied: an integrator sees plausible data and a
wrong answer. So every view refuses a parameter it does not read, with a 400
naming it and the ones it does read, and each operation's parameters come from
one declaration that both the runtime check and the OpenAPI schema use
(``crm.api.schema.CrmAutoSchema``):

- ``query_serializers``: per action (a viewset) or per lower-case HTTP method
  (a plain APIView), the serializer of its own parameters;
- ``paginated_actions``: the actions that page with the view's paginator;
- ``filterset_class`` on list actions: the django-filter fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request


class StrictQueryParams:
    """Mix into every API view (first, before the DRF base class)."""

    query_serializers: ClassVar[Mapping[str, type[serializers.Serializer]]] = {}
    paginated_actions: ClassVar[frozenset[str]] = frozenset({"list"})

    def query_operation(self) -> str:
        """The key of this request in ``query_serializers``."""
        request: Request = getattr(self, "request")  # noqa: B009  (set by the DRF view this is mixed into)
        return getattr(self, "action", None) or request.method.lower()  # type: ignore[union-attr]

    def query_serializer_class(self) -> type[serializers.Serializer] | None:
        return self.query_serializers.get(self.query_operation())

    def pages(self) -> bool:
        return (
            self.query_operation() in self.paginated_actions and getattr(self, "paginator", None) is not None
        )

    def filters(self) -> bool:
        return self.query_operation() == "list" and getattr(self, "filterset_class", None) is not None

    def allowed_query_params(self) -> set[str]:
        names: set[str] = set()
        serializer = self.query_serializer_class()
        if serializer is not None:
            names |= set(serializer().fields)
        if self.pages():
            names |= set(self.paginator.query_param_names())  # type: ignore[attr-defined]
        if self.filters():
            names |= set(self.filterset_class.base_filters)  # type: ignore[attr-defined]
        return names

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Authentication, permissions and throttles first: a caller who may not use
        # the operation learns nothing about its parameters.
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        allowed = self.allowed_query_params()
        unknown = sorted(set(request.query_params) - allowed)
        if unknown:
            reads = ", ".join(sorted(allowed)) if allowed else "no query parameters"
            raise ValidationError(
                {name: [f"Unknown query parameter: this operation reads {reads}."] for name in unknown}
            )

    def query(self) -> dict[str, Any]:
        """The validated query parameters of this operation (400 naming a bad one)."""
        cached: dict[str, Any] | None = getattr(self, "_query", None)
        if cached is None:
            serializer_class = self.query_serializer_class()
            if serializer_class is None:
                cached = {}
            else:
                incoming = serializer_class(data=getattr(self, "request").query_params)  # noqa: B009
                incoming.is_valid(raise_exception=True)
                cached = dict(incoming.validated_data)
            self._query = cached
        return cached
