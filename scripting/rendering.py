"""Merge fields in a step's text: ``{{ customer.first_name }}``, with a fallback
the author chooses: ``{{ customer.first_name | "there" }}``.

A small parser of our own over a whitelist (``MERGE_FIELDS``): the text is
never a Django or Jinja template and no name is ever looked up on a Python
object. The values are a flat ``{"customer.first_name": "Dave", ...}`` mapping
built from the rows by ``merge_values``; every piece of output (the author's
text, the values, the fallbacks) is HTML-escaped. A tag that is not a known
field stays visible, escaped, so a mistake shows on screen instead of vanishing;
the validator refuses such a text before publish.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

MERGE_FIELDS: dict[str, tuple[str, ...]] = {
    "customer": ("first_name", "last_name", "display_name", "number", "tier", "language",
                 "preferred_channel", "city", "phone", "email"),
    "household": ("name", "city"),
    "account": ("product", "number", "status", "balance", "currency"),
    "offer": ("name", "talking_points", "value"),
    "call": ("queue", "direction", "caller_number", "dialled_number"),
    "campaign": ("code",),
}  # fmt: skip
KNOWN = frozenset(f"{root}.{name}" for root, names in MERGE_FIELDS.items() for name in names)

_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_INNER = re.compile(r'^\s*([a-z_]+)\.([a-z_]+)\s*(?:\|\s*"((?:[^"\\\n]|\\.)*)"\s*)?$')


@dataclass(frozen=True)
class Field:
    name: str  # "customer.first_name"
    fallback: str


@dataclass(frozen=True)
class Template:
    parts: tuple[str | Field, ...]
    problems: tuple[str, ...]


@lru_cache(maxsize=4096)
def parse(text: str) -> Template:
    """Split ``text`` into literal pieces and fields; each tag that is not a
    whitelisted field is kept as text and named in ``problems``."""
    parts: list[str | Field] = []
    problems: list[str] = []
    position = 0
    for match in _TAG.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        inner = _INNER.match(match.group(1))
        name = f"{inner.group(1)}.{inner.group(2)}" if inner else ""
        if inner and name in KNOWN:
            fallback = re.sub(r"\\(.)", r"\1", inner.group(3) or "")
            parts.append(Field(name, fallback))
        else:
            parts.append(match.group(0))
            problems.append(_problem(match.group(0), inner, name))
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    return Template(tuple(parts), tuple(problems))


def _problem(tag: str, inner: re.Match[str] | None, name: str) -> str:
    offered = "; ".join(f"{root}.{{{','.join(names)}}}" for root, names in MERGE_FIELDS.items())
    if inner is None:
        return (
            f"{tag} is not a merge field: write {{{{ customer.first_name }}}} or, with a fallback, "
            f'{{{{ customer.first_name | "there" }}}}.'
        )
    return f"Unknown merge field {name} in {tag}: use one of {offered}."


def render(text: str, values: Mapping[str, str]) -> SafeString:
    """``text`` with its fields filled (or their fallbacks), HTML-escaped."""
    out = []
    for part in parse(text).parts:
        if isinstance(part, Field):
            out.append(escape(values.get(part.name) or part.fallback))
        else:
            out.append(escape(part))
    return mark_safe("".join(out))  # noqa: S308  (every piece was escaped just above)


def fields_used(text: str) -> list[str]:
    return [part.name for part in parse(text).parts if isinstance(part, Field)]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:,.2f}"
    return str(value)


def merge_values(
    *,
    customer: Any,
    accounts: Iterable[Any] = (),
    offer: Any = None,
    call: Mapping[str, Any] | None = None,
    campaign_code: str = "",
) -> dict[str, str]:
    """The whitelisted values, read from rows the caller already holds (the
    customer with its household, its accounts, the offer on screen, the call):
    no query here. Only the names in ``MERGE_FIELDS`` are ever produced."""
    address = customer.primary_address or {}
    values: dict[str, Any] = {
        "customer.first_name": customer.given_name,
        "customer.last_name": customer.family_name,
        "customer.display_name": customer.display_name,
        "customer.number": customer.number,
        "customer.tier": customer.get_tier_display(),
        "customer.language": customer.language,
        "customer.preferred_channel": customer.get_preferred_channel_display(),
        "customer.city": address.get("city", ""),
        "customer.phone": customer.primary_phone,
        "customer.email": customer.primary_email,
        "campaign.code": campaign_code,
    }
    household = customer.household if customer.household_id else None
    if household is not None:
        values.update({"household.name": household.name, "household.city": household.city})
    account = next((a for a in accounts if a.status == "open"), None)
    if account is not None:
        values.update({
            "account.product": account.product.name, "account.number": account.account_number,
            "account.status": account.get_status_display(), "account.balance": account.balance,
            "account.currency": account.currency,
        })  # fmt: skip
    if offer is not None:
        values.update({"offer.name": offer.name, "offer.talking_points": offer.talking_points,
                       "offer.value": offer.value})  # fmt: skip
    for key in MERGE_FIELDS["call"]:
        if call and call.get(key):
            values[f"call.{key}"] = call[key]
    return {name: _text(value) for name, value in values.items() if name in KNOWN}


def history_answers_html(answers: list[tuple[str, str]]) -> SafeString:
    """A past run's answers under its contact-history entry, folded (empty when
    none): part of each history row, made in Python with the row (see
    agents.views.customer.history_rows_html)."""
    if not answers:
        return SafeString("")
    count = len(answers)
    items = "".join(f"<dt>{escape(label)}</dt><dd>{escape(answer or '—')}</dd>" for label, answer in answers)
    return mark_safe(  # noqa: S308  (every value above is escaped)
        f'\n<details class="notes script-answers"><summary><span class="tag">Script</span> '
        f"{count} answer{'' if count == 1 else 's'}</summary>\n"
        f'  <dl class="kv script-answers-list">{items}</dl>\n</details>'
    )
