"""Set-based application of the commonest touchpoint results: contacts and purchases
of customers the source already keyed.

One claimed batch holds hundreds of these; one INSERT of contacts, one of their
``interaction.recorded`` events and one of purchase events replace a dozen
statements per result. The effects are those of ``interaction_record`` and
``business_event_record`` (the same rows, keys, events and real-time messages,
the same refusals), so a result applies alike on either path; anything this
module cannot decide alone goes the per-result way.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import psycopg.errors
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import JSONField
from django.db.models.base import ModelState
from django.utils import timezone

from crm import events, json_codec, realtime
from crm.models import BusinessEvent, Customer, Interaction
from crm.models.choices import RecordKind, ResultStatus
from crm.services.customers import _history_value, profile_events
from crm.services.event_dispatch import events_dispatch_in_worker, events_dispatch_on_commit
from crm.services.touchpoint_apply import Outcome, _error
from crm.services.touchpoint_effects import (
    _amount,
    profile_changes,
    profile_newest_only,
    profile_orders_load,
    profile_orders_record,
    profile_stamps,
)
from crm.services.touchpoints import _jsonb, result_map

if TYPE_CHECKING:
    from crm.services.touchpoint_claims import Claimed
    from crm.services.touchpoint_effects import ApplyContext

# The columns of an event row in the model's order (Model.from_db takes values so).
_EVENT_COLUMNS = (
    "id", "type", "customer_id", "occurred_at", "payload", "source_system_id", "idempotency_key", "actor_id",
    "recorded_at", "dispatched_at", "dispatch_attempts", "dispatch_error",
)  # fmt: skip

BULK_KINDS = (RecordKind.INTERACTION, RecordKind.PURCHASE, RecordKind.CUSTOMER)
_LIMITS = {"campaign_code": 40, "disposition": 40, "subject": 200}
# A contact may be dated this far ahead of the worker's clock (the source's may run fast).
_FUTURE_SLACK = dt.timedelta(minutes=5)

_INSERT_INTERACTIONS = """
INSERT INTO crm_interaction (customer_id, channel, direction, occurred_at, agent_id, campaign_code,
    disposition, subject, notes, script_run_id, duration_seconds, source_system_id, external_id, created_at)
SELECT x.customer_id, x.channel, x.direction, x.occurred_at, NULL, x.campaign_code, x.disposition, x.subject,
    x.notes, NULL, x.duration_seconds, %(source)s, x.external_id, %(now)s
FROM jsonb_to_recordset(%(rows)s) AS x(customer_id bigint, channel text, direction text,
    occurred_at timestamptz, campaign_code text, disposition text, subject text, notes text,
    duration_seconds integer, external_id text)
RETURNING id, external_id
"""

# Inserted as dispatched (one attempt): the worker runs their deferred listeners in
# this transaction (events_dispatch_in_worker), and puts them back if those fail.
_INSERT_EVENTS = """
INSERT INTO crm_businessevent (type, customer_id, occurred_at, payload, source_system_id, idempotency_key,
    actor_id, recorded_at, dispatched_at, dispatch_attempts)
SELECT x.type, x.customer_id, x.occurred_at, x.payload, %(source)s, x.idempotency_key, %(actor)s, %(now)s,
    %(now)s, 1
FROM jsonb_to_recordset(%(rows)s) AS x(type text, customer_id bigint, occurred_at timestamptz, payload jsonb,
    idempotency_key text)
RETURNING id, idempotency_key
"""


def _insert_rows(insert: str, conflict: str, params: dict[str, Any]) -> list[Any]:
    """The rows ``insert`` (an INSERT ... RETURNING) inserted, or, when one of them was
    recorded before (a unique key taken), those it inserts skipping the repeats
    (``ON CONFLICT <conflict> DO NOTHING``).

    A repeat is rare here (a contact sent again under another result id, a replay
    after the inbox was purged), and ON CONFLICT costs every row a speculative
    insertion: ~2 us more per row than a plain insert (886-908 against 655-718 ms per
    100,000 events). So the plain insert first, in a savepoint; on a unique
    violation its rows roll back with it, and the insert that skips repeats runs."""
    with connection.cursor() as cursor:
        try:
            with transaction.atomic():
                cursor.execute(insert, params)
                return cursor.fetchall()
        except IntegrityError as exc:
            if not isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise
        cursor.execute(insert.replace("RETURNING", f"ON CONFLICT {conflict} DO NOTHING\nRETURNING"), params)
        return cursor.fetchall()


def bulk_candidates(results: list[Claimed], *, context: ApplyContext) -> tuple[list[Claimed], list[Claimed]]:
    """Split claimed results into those this module applies (a bulk kind, its
    customer known: keyed before, or settled in review) and the rest."""
    bulk: list[Claimed] = []
    rest: list[Claimed] = []
    for result in results:
        keyed = context.keys.get(result.source_system_id, {}).get(result.customer_key)
        # A customer settled in review may still have its source key to link: that goes one by one.
        known = (
            keyed
            if result.customer_id in (None, keyed)
            else (None if result.customer_key else result.customer_id)
        )
        (bulk if result.record_kind in BULK_KINDS and known else rest).append(result)
    return bulk, rest


def results_apply_bulk(
    results: list[Claimed], *, context: ApplyContext
) -> tuple[dict[int, Outcome], list[Claimed]]:
    """Apply contacts, purchases and profile changes in a few statements (in the
    caller's transaction); return each result's outcome, and the results left
    for the one-by-one path. A data error rejects its result with the same
    reason the per-result path gives."""
    outcomes: dict[int, Outcome] = {}
    by_source: dict[int, list[tuple[Claimed, int, dict[str, Any]]]] = {}
    for result in results:
        source = context.source(result.source_system_id)
        customer_id = (
            result.customer_id or context.keys[source.pk][result.customer_key]
        )  # see bulk_candidates
        try:
            mapped = result_map(
                source=source, record_kind=result.record_kind, payload=result.payload,
                mappings=context.mappings_of(source),
            )  # fmt: skip
        except ValidationError as exc:  # the mapping refuses a value
            outcomes[result.id] = _rejected(exc)
            continue
        by_source.setdefault(source.pk, []).append((result, customer_id, mapped))
    deferred: list[Claimed] = []
    for source_id, rows in by_source.items():
        interactions = [r for r in rows if r[0].record_kind == RecordKind.INTERACTION]
        purchases = [r for r in rows if r[0].record_kind == RecordKind.PURCHASE]
        profiles = [r for r in rows if r[0].record_kind == RecordKind.CUSTOMER]
        outcomes.update(_interactions(source_id, interactions, context=context))
        outcomes.update(_purchases(source_id, purchases, context=context))
        done, left = profiles_apply_bulk(profiles, context=context)
        outcomes.update(done)
        deferred.extend(left)
    return outcomes, deferred


def _rejected(exc: Exception) -> Outcome:
    return Outcome(ResultStatus.REJECTED, error=_error(exc))


def _invalid(fields: dict[str, str]) -> Outcome:
    return Outcome(
        ResultStatus.REJECTED, error={"reason": "invalid", "fields": {k: [v] for k, v in fields.items()}}
    )


def _conflict(field: str, message: str) -> Outcome:
    return Outcome(ResultStatus.REJECTED, error={"reason": "conflict", "fields": {field: message}})


def _applied(customer_id: int, note: dict[str, Any] | None = None) -> Outcome:
    return Outcome(ResultStatus.APPLIED, customer_id=customer_id, error=note)


def _interaction_row(
    result: Claimed, customer_id: int, mapped: dict[str, Any], now: dt.datetime
) -> dict[str, Any]:
    """The contact row of one result, or {"error": {field: message}} as interaction_record refuses."""
    get = mapped.get
    occurred_at = get("interaction.occurred_at") or result.occurred_at
    errors: dict[str, str] = {}
    if occurred_at is None:
        errors["occurred_at"] = "A contact needs its time: send occurred_at or map interaction.occurred_at."
    elif occurred_at > now + _FUTURE_SLACK:
        errors["occurred_at"] = "The contact is dated in the future: check the time."
    channel, direction = get("interaction.channel"), get("interaction.direction")
    if not channel:
        errors["interaction.channel"] = "Missing: map the channel."
    if not direction:
        errors["interaction.direction"] = "Missing: map the direction (inbound or outbound)."
    row: dict[str, Any] = {
        "customer_id": customer_id, "channel": channel, "direction": direction,
        "occurred_at": occurred_at.isoformat() if occurred_at else None,
        "campaign_code": str(get("interaction.campaign_code") or ""),
        "disposition": str(get("interaction.disposition") or ""),
        "subject": str(get("interaction.subject") or "")[:200],
        "notes": str(get("interaction.notes") or ""),
        "duration_seconds": get("interaction.duration_seconds"),
        "external_id": str(get("interaction.external_id") or result.external_id),
    }  # fmt: skip
    for name, limit in _LIMITS.items():
        if len(row[name]) > limit:
            errors[f"interaction.{name}"] = f"At most {limit} characters (it has {len(row[name])})."
    duration = row["duration_seconds"]
    if duration is not None and not 0 <= int(duration) <= 2_147_483_647:
        errors["interaction.duration_seconds"] = "Must be a whole number of seconds, 0 or more."
    return {"error": errors} if errors else row


def _interactions(
    source_id: int, rows: list[tuple[Claimed, int, dict[str, Any]]], *, context: ApplyContext
) -> dict[int, Outcome]:
    if not rows:
        return {}
    now = timezone.now()
    outcomes: dict[int, Outcome] = {}
    wanted: dict[str, tuple[Claimed, dict[str, Any]]] = {}
    for result, customer_id, mapped in rows:
        row = _interaction_row(result, customer_id, mapped, now)
        if "error" in row:
            outcomes[result.id] = _invalid(row["error"])
        elif row["external_id"] in wanted:  # twice in one claim: the first one wins, as in sequence
            outcomes[result.id] = _repeat(row, wanted[row["external_id"]][1]["customer_id"])
        else:
            wanted[row["external_id"]] = (result, row)
    if not wanted:
        return outcomes
    sent = _jsonb([r for _, r in wanted.values()])
    params: dict[str, Any] = {"source": source_id, "now": now, "rows": sent}
    inserted = _insert_rows(_INSERT_INTERACTIONS, "", params)
    new_ids = {external_id for _, external_id in inserted}
    recorded_before = [e for e in wanted if e not in new_ids]
    existing = (
        dict(
            Interaction.objects.filter(
                source_system_id=source_id, external_id__in=recorded_before
            ).values_list("external_id", "customer_id")
        )
        if recorded_before
        else {}
    )
    for external_id, (result, row) in wanted.items():
        if external_id in new_ids:
            outcomes[result.id] = _applied(row["customer_id"])
        else:  # recorded before: the same contact again, or the id of another customer's
            outcomes[result.id] = _repeat(row, existing.get(external_id))
    source = context.source(source_id)
    actor = context.user_of(source)
    # The rows as sent, not read back: RETURNING only the new ids saves parsing them again.
    event_rows = [
        {"type": events.INTERACTION_RECORDED.name, "customer_id": row["customer_id"],
         "occurred_at": row["occurred_at"],
         "payload": {"channel": row["channel"], "direction": row["direction"],
                     "disposition": row["disposition"]},
         "idempotency_key": f"interaction.recorded:{pk}"}
        for pk, external_id in inserted
        for row in (wanted[external_id][1],)
    ]  # fmt: skip
    _insert_events(source_id, event_rows, actor_id=actor.pk if actor else None, now=now)
    for pk, external_id in inserted:
        customer_id = wanted[external_id][1]["customer_id"]
        realtime.send_on_commit(
            realtime.customer_group(customer_id), realtime.interaction_recorded(customer_id, pk)
        )
    return outcomes


def _repeat(row: dict[str, Any], first_customer_id: int | None) -> Outcome:
    if first_customer_id == row["customer_id"]:
        return _applied(row["customer_id"])
    return _conflict(
        "external_id", f"Your source system already used “{row['external_id']}” for a contact of another "
                       "customer record: give each contact its own external_id, or record it on that "
                       "customer.",
    )  # fmt: skip


def _insert_events(
    source_id: int, rows: list[dict[str, Any]], *, actor_id: int | None, now: dt.datetime
) -> set[str]:
    if not rows:
        return set()
    params: dict[str, Any] = {"source": source_id, "actor": actor_id, "now": now, "rows": _jsonb(rows)}
    inserted = _insert_rows(_INSERT_EVENTS, "(source_system_id, idempotency_key)", params)
    by_key = {row["idempotency_key"]: row for row in rows}
    # The rows just written, as the listeners read them, without reading them back.
    times: dict[str, dt.datetime] = {}
    recorded = [
        _event_instance((
            pk, row["type"], row["customer_id"], _moment(row["occurred_at"], times), row["payload"],
            source_id, key, actor_id, now, now, 1, ""))
        for pk, key in inserted
        for row in (by_key[key],)
    ]  # fmt: skip
    dispatched = events_dispatch_in_worker(recorded)
    # The outbox, as business_event_record does: the real-time listeners hear of the
    # new events on commit (and a worker runs the deferred ones if they failed here).
    events_dispatch_on_commit([e.pk for e in recorded], dispatched=dispatched)
    return {key for _, key in inserted}


def _moment(value: str, seen: dict[str, dt.datetime]) -> dt.datetime:
    """An ISO time of a row as sent, parsed once per distinct value (a batch shares a few)."""
    moment = seen.get(value)
    if moment is None:
        moment = seen[value] = dt.datetime.fromisoformat(value)
    return moment


def _event_instance(values: tuple[Any, ...]) -> BusinessEvent:
    """A BusinessEvent of a row just inserted, values in ``_EVENT_COLUMNS`` order.

    What ``Model.from_db`` makes, without ``Model.__init__``'s per-field work (a
    third of the cost of handing a thousand events to their listeners): every
    field is a plain column, so its attribute is the value as read."""
    event = BusinessEvent.__new__(BusinessEvent)
    event.__dict__.update(zip(_EVENT_COLUMNS, values, strict=True))
    state = event._state = ModelState()
    state.adding, state.db = False, "default"
    return event


def _purchases(
    source_id: int, rows: list[tuple[Claimed, int, dict[str, Any]]], *, context: ApplyContext
) -> dict[int, Outcome]:
    if not rows:
        return {}
    source = context.source(source_id)
    actor = context.user_of(source)
    now = timezone.now()
    outcomes: dict[int, Outcome] = {}
    wanted: dict[str, tuple[Claimed, dict[str, Any]]] = {}
    for result, customer_id, mapped in rows:
        amount = mapped.get("purchase.amount", mapped.get("event.amount"))
        if amount in (None, ""):
            outcomes[result.id] = _invalid({"purchase.amount": "Missing: map the amount of the purchase."})
            continue
        payload: dict[str, Any] = {"amount": _amount(amount), "channel": source.kind}
        for name in ("currency", "product"):
            if mapped.get(f"purchase.{name}"):
                payload[name] = str(mapped[f"purchase.{name}"])
        events.TRANSACTION_PURCHASE.validate(payload)
        wanted[result.external_id] = (result, {
            "type": events.TRANSACTION_PURCHASE.name, "customer_id": customer_id,
            "occurred_at": (result.occurred_at or now).isoformat(), "payload": payload,
            "idempotency_key": result.external_id})  # fmt: skip
    inserted = _insert_events(
        source_id, [row for _, row in wanted.values()], actor_id=actor.pk if actor else None, now=now
    )
    recorded_before = [k for k in wanted if k not in inserted]
    repeats = (
        {
            key: (customer_id, type_)
            for key, customer_id, type_ in BusinessEvent.objects.filter(
                source_system_id=source_id, idempotency_key__in=recorded_before
            ).values_list("idempotency_key", "customer_id", "type")
        }
        if recorded_before
        else {}
    )
    for key, (result, row) in wanted.items():
        if key in inserted or repeats.get(key) == (row["customer_id"], row["type"]):
            outcomes[result.id] = _applied(row["customer_id"])
        else:
            outcomes[result.id] = _conflict(
                "idempotency_key", f"Your source system already used the key “{key}” for a different fact "
                                   "(another customer or another event type): give each fact its own key.",
            )  # fmt: skip
    return outcomes


# --- Profiles ---------------------------------------------------------------------------------

# What the set-based path changes; a change of anything else (names, which feed
# the search keys) goes through customer_update one by one.
PROFILE_FIELDS = frozenset((
    "tier", "lifetime_value", "status", "language", "do_not_call", "do_not_email", "marketing_opt_in",
    "phones", "emails", "addresses", "date_of_birth",
))  # fmt: skip
_JSON_FIELDS = ("phones", "emails", "addresses")

_UPDATE_CUSTOMERS = """
UPDATE crm_customer c SET version = x.version, updated_at = x.updated_at,
    consents_updated_at = x.consents_updated_at, tier = x.tier, lifetime_value = x.lifetime_value,
    status = x.status, language = x.language, do_not_call = x.do_not_call, do_not_email = x.do_not_email,
    marketing_opt_in = x.marketing_opt_in, phones = x.phones, emails = x.emails, addresses = x.addresses,
    phone_keys = ARRAY(SELECT jsonb_array_elements_text(x.phone_keys)),
    email_keys = ARRAY(SELECT jsonb_array_elements_text(x.email_keys)), date_of_birth = x.date_of_birth
FROM jsonb_to_recordset(%(rows)s) AS x(id bigint, version integer, updated_at timestamptz,
    consents_updated_at timestamptz, tier text, lifetime_value numeric, status text, language text,
    do_not_call boolean, do_not_email boolean, marketing_opt_in boolean, phones jsonb, emails jsonb,
    addresses jsonb, phone_keys jsonb, email_keys jsonb, date_of_birth date)
WHERE c.id = x.id
"""


# The change history of those updates (as CustomerChange rows: values as JSON).
_INSERT_CHANGES = """
INSERT INTO crm_customerchange (customer_id, version, field, old_value, new_value, actor_id,
    source_system_id, at)
SELECT x.customer_id, x.version, x.field, x.old_value, x.new_value, x.actor_id, x.source_system_id, %(now)s
FROM jsonb_to_recordset(%(rows)s) AS x(customer_id bigint, version integer, field text, old_value jsonb,
    new_value jsonb, actor_id bigint, source_system_id bigint)
"""


def profiles_apply_bulk(
    rows: list[tuple[Claimed, int, dict[str, Any]]], *, context: ApplyContext
) -> tuple[dict[int, Outcome], list[Claimed]]:
    """Profile changes of keyed customers in a few statements, with what
    ``customer_update`` does for each: the row locked, the change validated,
    version + 1, a history row per field, the same business events (same keys),
    a live-screen message on commit. Returns the outcomes, and the results left
    for the one-by-one path (a name change; a second change of one customer).

    No field-access check is needed: every value comes from the source's own
    mappings, which is exactly what crm.field_access lets an integration set."""
    outcomes: dict[int, Outcome] = {}
    deferred: list[Claimed] = []
    if not rows:
        return outcomes, deferred
    now = timezone.now()
    columns = [*PROFILE_FIELDS, "version", "consents_updated_at", "household_id", "kind", "given_name",
               "family_name", "organization_name", "household_role"]  # fmt: skip
    customers = _customers_locked(Customer, {c for _, c, _ in rows}, columns)
    updates: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    event_rows: list[tuple[int, int | None, dict[str, Any]]] = []
    messages: list[tuple[int, int, list[str]]] = []
    seen: set[int] = set()
    # Which results of each key set each profile target last (see profile_newest_only).
    orders: dict[tuple[int, str], dict[str, list[Any]]] = {}
    for source_id in {r.source_system_id for r, _, _ in rows}:
        keys = [r.customer_key for r, _, _ in rows if r.source_system_id == source_id and r.customer_key]
        orders.update({(source_id, k): o for k, o in profile_orders_load(source_id, keys).items()})
    stamps: dict[int, dict[str, dict[str, list[Any]]]] = {}
    for result, customer_id, sent in rows:
        customer = customers.get(customer_id)
        if customer is None or customer_id in seen:
            deferred.append(result)
            continue
        mapped, note = profile_newest_only(
            result, sent, orders.get((result.source_system_id, result.customer_key))
        )
        changes = profile_changes(customer, mapped)
        if set(changes) - PROFILE_FIELDS:
            deferred.append(result)
            continue
        if result.customer_key:
            stamps.setdefault(result.source_system_id, {})[result.customer_key] = profile_stamps(
                result, mapped
            )
        if not changes:
            outcomes[result.id] = _applied(customer_id, note)
            continue
        before = {name: _history_value(customer, name) for name in changes}
        for name, value in changes.items():
            setattr(customer, name, value)
        errors = _profile_errors(customer, changes)
        if errors:
            for name, value in before.items():
                setattr(customer, name, value)
            outcomes[result.id] = _invalid(errors)
            stamps.get(result.source_system_id, {}).pop(result.customer_key, None)
            continue
        seen.add(customer_id)
        changed = list(changes)
        customer.version += 1
        if set(changed) & {"do_not_call", "do_not_email", "marketing_opt_in"}:
            customer.consents_updated_at = now
        updates.append(_customer_row(customer, now))
        source = context.source(result.source_system_id)
        actor = context.user_of(source)
        history.extend(
            {"customer_id": customer_id, "version": customer.version, "field": name, "old_value": old,
             "new_value": _history_value(customer, name), "actor_id": actor.pk if actor else None,
             "source_system_id": source.pk}
            for name, old in before.items()
        )  # fmt: skip
        event_rows.extend(
            (source.pk, actor.pk if actor else None,
             {"type": t, "customer_id": customer_id, "occurred_at": now.isoformat(), "payload": p,
              "idempotency_key": k})
            for t, p, k in profile_events(customer, changed)
        )  # fmt: skip
        messages.append((customer_id, customer.version, changed))
        outcomes[result.id] = _applied(customer_id, note)
    for source_id, key_stamps in stamps.items():
        profile_orders_record(source_id, key_stamps)
    if updates:
        with connection.cursor() as cursor:
            params: dict[str, Any] = {"rows": _jsonb(updates)}
            cursor.execute(_UPDATE_CUSTOMERS, params)
            params = {"rows": _jsonb(history), "now": now}
            cursor.execute(_INSERT_CHANGES, params)
        by_sender: dict[tuple[int, int | None], list[dict[str, Any]]] = {}
        for source_id, actor_id, row in event_rows:
            by_sender.setdefault((source_id, actor_id), []).append(row)
        for (source_id, actor_id), sender_rows in by_sender.items():
            _insert_events(source_id, sender_rows, actor_id=actor_id, now=now)
        for customer_id, version, changed in messages:
            realtime.send_on_commit(
                realtime.customer_group(customer_id), realtime.customer_updated(customer_id, version, changed)
            )
    return outcomes, deferred


def _customers_locked(model: Any, ids: set[int], names: list[str]) -> dict[int, Any]:
    """The customers ``ids`` with only the fields ``names`` loaded (as ``.only()``:
    another field read later is fetched then), locked FOR UPDATE in id order, like
    customers_reindex_search, so two workers cannot deadlock.

    Built from the rows without ``Model.__init__`` (what ``from_db`` spends per field
    was a third of reading a batch's customers): each attribute is the column as
    psycopg reads it, JSON decoded as JSONField does."""
    fields = [model._meta.pk, *(model._meta.get_field(name) for name in names)]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    sql = (
        # Names from the model; the ids travel as a parameter.
        f"SELECT {columns} FROM {model._meta.db_table}"
        " WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)::bigint)) ORDER BY id FOR UPDATE"
    )
    decoded = [isinstance(f, JSONField) for f in fields]
    attnames = [f.attname for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, [json.dumps(sorted(ids))])
        rows = cursor.fetchall()
    customers: dict[int, Any] = {}
    for row in rows:
        customer = model.__new__(model)
        customer.__dict__.update(
            (name, json_codec.loads(value) if json_field and isinstance(value, str) else value)
            for name, value, json_field in zip(attnames, row, decoded, strict=True)
        )
        state = customer._state = ModelState()
        state.adding, state.db = False, "default"
        customers[customer.pk] = customer
    return customers


def _profile_errors(customer: Any, changes: dict[str, Any]) -> dict[str, str]:
    """What ``full_clean`` would refuse in these changes, by field (the row's own
    rules: choices, validators, contact points and addresses)."""
    errors: dict[str, str] = {}
    for name in changes:
        if name in _JSON_FIELDS:
            continue
        try:
            setattr(customer, name, customer._meta.get_field(name).clean(getattr(customer, name), customer))
        except ValidationError as exc:
            errors[name] = " ".join(exc.messages)
    try:
        customer.clean()
    except ValidationError as exc:
        errors.update({k: " ".join(v) for k, v in exc.message_dict.items() if k in changes})
    return errors


def _customer_row(customer: Any, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": customer.pk, "version": customer.version, "updated_at": now.isoformat(),
        "consents_updated_at": (
            customer.consents_updated_at.isoformat() if customer.consents_updated_at else None
        ),
        "tier": customer.tier, "lifetime_value": str(customer.lifetime_value), "status": customer.status,
        "language": customer.language, "do_not_call": customer.do_not_call,
        "do_not_email": customer.do_not_email,
        "marketing_opt_in": customer.marketing_opt_in, "phones": customer.phones, "emails": customer.emails,
        "addresses": customer.addresses, "phone_keys": sorted({p["number"] for p in customer.phones}),
        "email_keys": sorted({e["address"].lower() for e in customer.emails}),
        "date_of_birth": customer.date_of_birth.isoformat() if customer.date_of_birth else None,
    }  # fmt: skip
