from __future__ import annotations

from functools import cached_property

from django.core.paginator import Paginator
from rest_framework import pagination

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP rows: an exact count over a million customers
    costs more than the page itself, and nobody pages past the ten-thousandth."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if hasattr(queryset, "values"):
            return len(queryset.values("pk")[: COUNT_CAP + 1])  # type: ignore[union-attr]
        return len(queryset)


class PageNumberPagination(pagination.PageNumberPagination):
    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100
    django_paginator_class = CappedCountPaginator

    def get_paginated_response_schema(self, schema: dict) -> dict:  # type: ignore[type-arg]
        response = super().get_paginated_response_schema(schema)
        response["properties"]["count"]["description"] = f"Exact up to {COUNT_CAP}, then {COUNT_CAP + 1}."
        return response


class TimelinePagination(pagination.CursorPagination):
    """Newest first; a cursor stays stable while new contacts arrive."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = ("-occurred_at", "-id")
