"""Try a source's field mappings on a sample record before any result uses them.

An administrator pastes one record as the source sends it (a JSON object, or a
CSV header and one row) and sees what intake would make of it: each target
with its value, or each error by source field. It maps with the very function
intake uses (``result_map``), with the source's current mappings, and writes
nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError

from crm.mapping import TARGETS
from crm.models import FieldMapping, SourceSystem
from crm.services.imports import csv_dialect
from crm.services.touchpoints import result_map, source_mappings


@dataclass
class MappedValue:
    target: str
    label: str
    value: str
    source_field: str


@dataclass
class MappingPreview:
    record: dict[str, Any]
    mapped: list[MappedValue] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (source field, message)
    unmapped: list[str] = field(default_factory=list)  # fields of the sample no mapping reads
    mappings: list[FieldMapping] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def sample_parse(text: str) -> dict[str, Any]:
    """A pasted sample as a record: a JSON object, or a CSV header line and one row."""
    text = text.strip().lstrip("\ufeff")
    if not text:
        raise ValidationError(
            {"sample": "Paste a sample record: a JSON object, or a CSV header and one row."}
        )
    if text.startswith(("{", "[")):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                {"sample": f"Not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."}
            ) from None
        if not isinstance(record, dict):
            raise ValidationError({"sample": "Paste one record as a JSON object ({...}), not a list."})
        return record
    lines = [line for line in text.splitlines() if line.strip()]
    rows = list(csv.reader(io.StringIO("\n".join(lines)), csv_dialect("\n".join(lines))))
    if len(rows) != 2:
        raise ValidationError(
            {"sample": f"Paste the CSV header and exactly one row ({len(rows)} lines found), "
                       "or a JSON object."}
        )  # fmt: skip
    header, values = [h.strip() for h in rows[0]], rows[1]
    if len(header) != len(values):
        raise ValidationError(
            {"sample": f"The row has {len(values)} values where the header has {len(header)} columns: "
                       "check the delimiters and quotes."}
        )  # fmt: skip
    return dict(zip(header, values, strict=True))


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date | Decimal):
        return str(value)
    return str(value)


def mapping_preview(*, source: SourceSystem, record_kind: str, sample: str) -> MappingPreview:
    """Map ``sample`` as a ``record_kind`` result of ``source``; raise a
    ValidationError only when the sample itself cannot be read."""
    record = sample_parse(sample)
    all_mappings = source_mappings(source)
    mappings = all_mappings.get(record_kind, [])
    preview = MappingPreview(record=record, mappings=mappings)
    read = {m.source_field for m in mappings}
    preview.unmapped = [name for name in record if name not in read]
    try:
        mapped = result_map(source=source, record_kind=record_kind, payload=record, mappings=all_mappings)
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            for message in messages:
                preview.errors.append((name.removeprefix("payload."), message))
        return preview
    by_target = {m.target: m.source_field for m in mappings}
    preview.mapped = [
        MappedValue(target, TARGETS.get(target, target), _shown(value), by_target.get(target, ""))
        for target, value in mapped.items()
    ]
    return preview
