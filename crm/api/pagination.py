from __future__ import annotations

import base64
import re
from functools import cached_property
from typing import Any
from urllib import parse

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime
from rest_framework import pagination
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request

from crm.selectors import count_up_to

# Integrations page through filtered lists (an account status, a product) with
# this as their reach; a person searching never gets near it.
COUNT_CAP = 10_000

# The alphabet DRF writes cursors in; b64decode would silently drop anything else.
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_CURSOR_KEYS = {"o", "r", "p"}  # offset, reverse, position


def _is_cursor(encoded: str) -> bool:
    """Whether ``encoded`` has the shape of a cursor DRF writes: base64 of a query
    string of offset, reverse and position."""
    if not _BASE64.match(encoded):
        return False
    try:
        text = base64.b64decode(encoded, validate=True).decode("ascii")
        tokens = parse.parse_qs(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return False
    return bool(tokens) and set(tokens) <= _CURSOR_KEYS


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


def _whole_number(request: Request, name: str, *, maximum: int | None = None) -> int | None:
    """The query parameter ``name`` as a whole number from 1 (up to ``maximum``);
    None when absent. Anything else is a 400 naming it: DRF's own paginators
    would quietly fall back to a default and answer a different question."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or int(text) < 1:
        raise ValidationError({name: [f"“{raw}” is not a whole number from 1."]})
    value = int(text)
    if maximum is not None and value > maximum:
        raise ValidationError({name: [f"At most {maximum}: ask for {maximum} or fewer rows a page."]})
    return value


def _bounded_page_size(parameters: list[dict[str, Any]], name: str, maximum: int) -> list[dict[str, Any]]:
    for parameter in parameters:
        if parameter["name"] == name:
            parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": maximum}
    return parameters


class PageNumberPagination(pagination.PageNumberPagination):
    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100
    django_paginator_class = CappedCountPaginator
    invalid_page_message = "Page {page_number} is past the last page: {message}"

    def query_param_names(self) -> tuple[str, ...]:
        return (self.page_query_param, self.page_size_query_param)

    def get_page_size(self, request: Request) -> int:
        return (
            _whole_number(request, self.page_size_query_param, maximum=self.max_page_size) or self.page_size
        )

    def get_page_number(self, request: Request, paginator: Any) -> int:
        return _whole_number(request, self.page_query_param) or 1

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        parameters[0]["schema"] = {"type": "integer", "minimum": 1}
        return _bounded_page_size(parameters, self.page_size_query_param, self.max_page_size)

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

    def query_param_names(self) -> tuple[str, ...]:
        return (self.cursor_query_param, self.page_size_query_param)

    def get_page_size(self, request: Request) -> int:
        return (
            _whole_number(request, self.page_size_query_param, maximum=self.max_page_size) or self.page_size
        )

    def decode_cursor(self, request: Request) -> pagination.Cursor | None:
        # A cursor is only ever one this API wrote in a next/previous link; one that
        # does not decode, or whose position is not a time, is a 400 naming it.
        refused = ValidationError(
            {self.cursor_query_param: ["Not a cursor of this list: follow the next or previous link."]}
        )
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is not None and not _is_cursor(encoded):
            raise refused
        try:
            cursor = super().decode_cursor(request)
        except (NotFound, ValueError):  # ValueError: non-ASCII text that DRF does not catch
            raise refused from None
        if (
            cursor is not None
            and cursor.position is not None
            and parse_datetime(str(cursor.position)) is None
        ):
            raise refused
        return cursor

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return _bounded_page_size(
            super().get_schema_operation_parameters(view), self.page_size_query_param, self.max_page_size
        )
