from __future__ import annotations

from functools import cached_property
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from rest_framework import pagination

from crm.selectors import count_up_to

# Integrations page through filtered lists (an account status, a product) with
# this as their reach; a person searching never gets near it.
COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most ``cap`` rows: an exact count over a million customers
    costs more than the page itself, and nobody pages past the ten-thousandth.

    ``count`` is exact up to ``cap`` and ``cap + 1`` beyond (``capped`` is then
    true); pages past row ``cap + 1`` are not served: the caller narrows the
    search instead. The count query reads primary keys only, unordered and
    unranked (``crm.selectors.count_up_to``)."""

    cap = COUNT_CAP

    def __init__(
        self, object_list: Any, per_page: int | str, *args: Any, cap: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(object_list, per_page, *args, **kwargs)
        if cap is not None:
            self.cap = cap

    @cached_property
    def count(self) -> int:
        if isinstance(self.object_list, QuerySet):
            return count_up_to(self.object_list, cap=self.cap)
        return min(len(self.object_list), self.cap + 1)

    @property
    def capped(self) -> bool:
        """More rows match than were counted."""
        return self.count > self.cap


class PageNumberPagination(pagination.PageNumberPagination):
    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100
    django_paginator_class = CappedCountPaginator

    def get_paginated_response_schema(self, schema: dict) -> dict:  # type: ignore[type-arg]
        response = super().get_paginated_response_schema(schema)
        response["properties"]["count"]["description"] = (
            f"How many rows match, exact up to {COUNT_CAP:,}; {COUNT_CAP + 1:,} means more than "
            f"{COUNT_CAP:,} (they are not counted, and pages past that row are not served: "
            "narrow the search or filter the list)."
        )
        return response


class TimelinePagination(pagination.CursorPagination):
    """Newest first; a cursor stays stable while new contacts arrive."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = ("-occurred_at", "-id")
