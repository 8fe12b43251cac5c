"""What the engine knows of a customer when it decides: the event and the
customer as CEL sees them, their recent events (``history``) and offer
presentations (the contact rules), read in one statement (``facts_load``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection

from crm.models import BusinessEvent, Customer
from crm.selectors import source_systems
from crm.services.events import server_bound_cursor
from policies import conditions

logger = logging.getLogger(__name__)

COMPLAINT_OPENED, COMPLAINT_RESOLVED = "complaint.opened", "complaint.resolved"

# --- Facts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PastPresentation:
    offer_id: int
    channel: str
    status: str
    presented_at: dt.datetime
    responded_at: dt.datetime | None
    expires_at: dt.datetime


@dataclass
class Facts:
    event: dict[str, Any]
    customer: dict[str, Any]
    history: conditions.History
    presentations: list[PastPresentation] = field(default_factory=list)
    open_complaint: bool = False


def event_map(event: BusinessEvent) -> dict[str, Any]:
    """The event as a condition sees it: declared fields with their CEL types
    (absent optional ones as their empty value), plus type and source."""
    from crm import events  # noqa: PLC0415

    out: dict[str, Any] = {}
    for name, kind in events.get(event.type).fields.items():
        value = event.payload.get(name)
        cel_type = conditions.PAYLOAD_TO_CEL[kind]
        if value is None or value == "":
            out[name] = conditions.ZERO[cel_type]
        elif cel_type == "double":
            out[name] = float(value)
        elif cel_type == "int":
            out[name] = int(value)
        elif cel_type == "bool":
            out[name] = bool(value)
        else:
            out[name] = str(value)
    source = source_systems().get(event.source_system_id)
    out["type"] = event.type
    out["source"] = source.code if source else ""
    return out


def customer_map(customer: Customer, today: dt.date) -> dict[str, Any]:
    born = customer.date_of_birth
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day)) if born else 0
    address = customer.primary_address or {}
    return {
        "id": customer.pk, "kind": customer.kind, "tier": customer.tier,
        "lifetime_value": float(customer.lifetime_value), "status": customer.status,
        "language": customer.language, "time_zone": customer.time_zone,
        "preferred_channel": customer.preferred_channel, "do_not_call": customer.do_not_call,
        "do_not_email": customer.do_not_email, "marketing_opt_in": customer.marketing_opt_in,
        "age": age, "country": address.get("country", ""), "in_household": customer.household_id is not None,
    }  # fmt: skip


CUSTOMER_COLUMNS = (
    "id", "kind", "tier", "lifetime_value", "status", "language", "time_zone", "preferred_channel",
    "do_not_call", "do_not_email", "marketing_opt_in", "date_of_birth", "addresses", "household_id",
)  # fmt: skip


def _facts_sql(*, with_customer: bool, as_of: bool) -> str:
    """One statement for the facts of one event (built once per variant): the
    customer's row when asked, their history aggregated per event type (the ages
    in days, as ``conditions.History`` keeps them) and their presentations, the
    last two as JSON text that ``json.loads`` reads in C. The ORM's three
    queries cost three round trips, their compilation, and a Python datetime
    parse for each of up to POLICIES_HISTORY_LIMIT history rows."""
    key = (with_customer, as_of)
    sql = _FACTS_SQL.get(key)
    if sql is not None:
        return sql
    events_until = (
        " AND occurred_at <= %(now)s" if as_of else ""
    )  # the event itself counts, as when decided live
    shown_until = " AND p.presented_at < %(now)s" if as_of else ""
    history = (
        "(SELECT coalesce(json_object_agg(t.type, t.ages), '{}')::text FROM ("
        " SELECT h.type, array_agg(greatest(extract(epoch FROM %(now)s - h.occurred_at), 0)::float8 / 86400)"
        " AS ages FROM (SELECT type, occurred_at FROM crm_businessevent"
        f"  WHERE customer_id = %(customer)s AND occurred_at >= %(since)s{events_until}"
        "  ORDER BY occurred_at DESC LIMIT %(limit)s) h GROUP BY h.type) t)"
    )
    shown = (
        "(SELECT coalesce(json_agg(json_build_array(p.offer_id, p.channel, p.status, p.presented_at,"
        " p.responded_at, p.expires_at)), '[]')::text FROM policies_offerpresentation p"
        f" WHERE p.customer_id = %(customer)s AND p.presented_at >= %(lookback)s{shown_until})"
    )
    if with_customer:
        columns = ", ".join(
            f"c.{column}::text" if column == "addresses" else f"c.{column}"
            for column in customer_columns()[0]
        )
        sql = f"SELECT {columns}, {history}, {shown} FROM crm_customer c WHERE c.id = %(customer)s"
    else:
        sql = f"SELECT {history}, {shown}"
    _FACTS_SQL[key] = sql
    return sql


_FACTS_SQL: dict[tuple[bool, bool], str] = {}


def customer_columns() -> tuple[list[str], list[str]]:
    """Columns and attribute names of CUSTOMER_COLUMNS in the model's field order
    (``Model.from_db`` with some fields deferred takes the values in that order).
    Worked out once per process: every decision asks."""
    if not _CUSTOMER_COLUMNS:
        fields = [f for f in Customer._meta.concrete_fields if {f.name, f.attname} & set(CUSTOMER_COLUMNS)]
        _CUSTOMER_COLUMNS.append(([f.column for f in fields], [f.attname for f in fields]))
    columns, attnames = _CUSTOMER_COLUMNS[0]
    return list(columns), list(attnames)


_CUSTOMER_COLUMNS: list[tuple[list[str], list[str]]] = []


def facts_load(
    event: BusinessEvent, customer: Customer | None, now: dt.datetime, *, as_of: bool = False
) -> tuple[Customer, Facts]:
    """The facts of one event in one statement: the customer's events within
    POLICIES_HISTORY_DAYS (at most POLICIES_HISTORY_LIMIT), their presentations
    within the longest period any offer's rules look back, and the customer's
    row too when ``customer`` is None (Customer.DoesNotExist if there is none).
    ``as_of``: only what was known at ``now`` (a simulation replaying the past)."""
    customer_id = customer.pk if customer is not None else event.customer_id
    params = {
        "customer": customer_id, "now": now, "limit": settings.POLICIES_HISTORY_LIMIT,
        "since": now - dt.timedelta(days=settings.POLICIES_HISTORY_DAYS),
        "lookback": now - dt.timedelta(days=settings.POLICIES_RULES_LOOKBACK_DAYS),
    }  # fmt: skip
    with server_bound_cursor() as cursor:
        cursor.execute(_facts_sql(with_customer=customer is None, as_of=as_of), params)
        row = cursor.fetchone()
    if row is None:
        raise Customer.DoesNotExist(f"customer {customer_id}")
    if customer is None:
        attnames = customer_columns()[1]
        values = list(row[: len(attnames)])
        addresses = attnames.index("addresses")
        values[addresses] = json.loads(values[addresses]) if values[addresses] else []
        customer = Customer.from_db(connection.alias, attnames, values)
        row = row[len(attnames) :]
    ages: dict[str, list[float]] = json.loads(row[0])
    parse = dt.datetime.fromisoformat
    presentations = [
        PastPresentation(
            offer, channel, status, parse(shown), parse(answered) if answered else None, parse(ends)
        )
        for offer, channel, status, shown, answered, ends in json.loads(row[1])
    ]
    opened, resolved = ages.get(COMPLAINT_OPENED), ages.get(COMPLAINT_RESOLVED)
    return customer, Facts(
        event=event_map(event),
        customer=customer_map(customer, now.date()),
        history=conditions.History(ages),
        presentations=presentations,
        # The last complaint opened is younger than the last one resolved.
        open_complaint=bool(opened) and (not resolved or min(resolved) > min(opened)),  # type: ignore[arg-type]
    )
