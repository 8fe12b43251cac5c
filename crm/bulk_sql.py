"""Long lists as one SQL parameter.

A worker applying a thousand touchpoint results at once looks up, locks and
updates a thousand rows per statement. ``filter(pk__in=ids)`` writes one
placeholder per value, and the driver quotes each and parses the long statement
anew every time; one JSON text, expanded by PostgreSQL, costs a single
``json.dumps``. The list is an ``ARRAY(...)`` of it, so the planner sees
``column = ANY(<array>)``, probes the column's index, and never turns it into a
join whose plan depends on a guessed row count.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from django.db.models import BooleanField
from django.db.models.expressions import RawSQL

_COLUMN = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")


def _any_of(column: str, cast: str, values: list[object]) -> RawSQL:
    if not _COLUMN.fullmatch(column):  # a name written in the code, never data
        raise ValueError(f"{column!r} is not a column name")
    # The values travel as a parameter; only the checked column name is in the text.
    return RawSQL(  # noqa: S611
        f"{column} = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb){cast}))",
        [json.dumps(values)],
        output_field=BooleanField(),
    )


def text_any(column: str, values: Iterable[str]) -> RawSQL:
    """A condition for ``filter()``: ``column`` (of the queried table) is one of these strings."""
    return _any_of(column, "", list(values))


def ids_any(column: str, values: Iterable[int]) -> RawSQL:
    """A condition for ``filter()``: ``column`` (a bigint, e.g. ``id``) is one of these ids."""
    return _any_of(column, "::bigint", [int(v) for v in values])
