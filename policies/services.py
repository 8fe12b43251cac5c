"""Every write of the policies app: policies and offers saved, offers presented
and answered, the actions' effects (tasks, notices, tags)."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from crm import events, realtime
from crm import services as crm_services
from crm.exceptions import Conflict
from crm.models import BusinessEvent, Interaction, Task, User
from crm.services.event_dispatch import events_dispatch_on_commit
from crm.services.events import server_bound_cursor
from policies import actions as action_registry
from policies import conditions
from policies.models import (
    Offer,
    OfferPresentation,
    Policy,
    PolicyStatus,
    PresentationStatus,
)


@dataclass
class ClaimFirst:
    """A statement's worth of writes that ``offers_present`` puts before its own, in
    the same statement: ``ctes`` (named parameters from ``params``) define a CTE
    ``claim`` that returns a row when the caller's claim is won; the presentations,
    their events and the tags are written only then. ``columns``: more values for
    the caller, selected with each row (in ``values`` after the statement; None when
    the claim was lost, and nothing was written)."""

    ctes: str
    params: dict[str, Any]
    columns: str = ""
    values: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class ActionRun:
    """What an action implementation is given: the event and whose policy it is."""

    event: BusinessEvent
    customer_id: int
    policy_id: int
    now: dt.datetime


# --- Authoring ------------------------------------------------------------------------------

POLICY_FIELDS = frozenset(
    {"name", "description", "trigger_types", "condition", "actions", "priority", "active_from",
     "active_until", "status", "holdout_percent"}
)  # fmt: skip
OFFER_FIELDS = frozenset(
    {"code", "name", "product", "talking_points", "self_service_text", "channels", "value", "marketing",
     "max_presentations", "period_days", "cooling_off_days", "expires_after_hours", "valid_from", "valid_to",
     "status"}
)  # fmt: skip


def _only_fields(model: type[Any], allowed: frozenset[str], fields: dict[str, Any]) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        # A misspelt name would otherwise be set on the instance and silently never saved.
        raise TypeError(
            f"{model.__name__} has no settable {', '.join(unknown)}; use {', '.join(sorted(allowed))}."
        )


def policy_save(
    *,
    actor: User | None,
    policy_id: int | None = None,
    **fields: Any,
) -> Policy:
    """Create a policy, or change one, after checking what the engine will run.

    1. Trigger types must be in the event catalog.
    2. The condition compiles and type-checks against those types' payloads
       (policies.conditions); errors name the line and column.
    3. The actions are checked against the registry (policies.actions): known
       names, complete settings, existing offers made for the channels asked.
    4. Saved with its version increased; the engine's index is refreshed on commit."""
    _only_fields(Policy, POLICY_FIELDS, fields)
    with transaction.atomic():
        if policy_id is None:
            policy = Policy(created_by=actor)
        else:
            policy = Policy.objects.select_for_update().get(pk=policy_id)
            policy.version += 1
        for name, value in fields.items():
            setattr(policy, name, value)
        policy_validate(policy)
        policy.updated_by = actor
        policy.updated_at = timezone.now()
        policy.full_clean()
        policy.save()
        _index_changed_here_and_on_commit()
    return policy


def policy_validate(policy: Policy) -> None:
    """Raise a ValidationError naming each field of ``policy`` the engine could not run."""
    errors: dict[str, list[str]] = {}
    types = list(policy.trigger_types or [])
    if not types:
        errors["trigger_types"] = ["Name at least one event type that triggers this policy."]
    unknown = [t for t in types if t not in events.CATALOG]
    if unknown:
        errors["trigger_types"] = [
            f"Unknown event type {', '.join(unknown)}: use types from the catalog, e.g. "
            f"{', '.join(sorted(events.CATALOG)[:5])}."
        ]
    if types and not unknown:
        try:
            conditions.check(policy.condition or "", types)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    try:
        policy.actions = action_registry.validate_actions(policy.actions)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)


def policy_set_status(*, policy_id: int, status: str, actor: User | None) -> Policy:
    """Activate, pause or retire a policy (a retired one never comes back)."""
    with transaction.atomic():
        policy = Policy.objects.select_for_update().get(pk=policy_id)
        if policy.status == PolicyStatus.RETIRED and status != PolicyStatus.RETIRED:
            raise ValidationError({"status": "A retired policy stays retired: copy it into a new one."})
        if status == PolicyStatus.ACTIVE:
            policy_validate(policy)  # the offers it names may have changed since it was saved
        policy.status = status
        policy.version += 1
        policy.updated_by = actor
        policy.updated_at = timezone.now()
        policy.full_clean()
        policy.save()
        _index_changed_here_and_on_commit()
    return policy


def offer_save(*, offer_id: int | None = None, **fields: Any) -> Offer:
    """Create or change an offer; the engine's index is refreshed on commit."""
    _only_fields(Offer, OFFER_FIELDS, fields)
    with transaction.atomic():
        offer = Offer() if offer_id is None else Offer.objects.select_for_update().get(pk=offer_id)
        for name, value in fields.items():
            setattr(offer, name, value)
        offer.updated_at = timezone.now()
        offer.full_clean()
        offer.save()
        _index_changed_here_and_on_commit()
    return offer


def _index_changed_here_and_on_commit() -> None:
    """This process's index is rebuilt at once (it reads this transaction's rows);
    other processes hear of the change once it is committed."""
    from policies import engine  # noqa: PLC0415  (the engine imports these services)

    engine.index_changed_on_commit()


# --- Actions (registered in policies.actions) -----------------------------------------------


def offer_present(*, run: ActionRun, settings: dict[str, Any]) -> OfferPresentation:
    """Put one offer in front of the customer on one channel (``offers_present`` for one)."""
    from policies import engine  # noqa: PLC0415  (the engine imports these services)

    offer = settings["offer"]
    info = offer if isinstance(offer, engine.OfferInfo) else engine.offer_info(offer)
    (presentation,) = offers_present(
        event=run.event, customer_id=run.customer_id, now=run.now,
        items=[(run.policy_id, info, settings["channel"])],
    )  # fmt: skip
    return presentation


def offers_present(
    *,
    event: BusinessEvent,
    customer_id: int,
    now: dt.datetime,
    items: list[tuple[int | None, Any, str]],
    tags: Sequence[tuple[str, int | None]] = (),
    returning: bool = True,
    recorded: list[BusinessEvent] | None = None,
    claim: ClaimFirst | None = None,
) -> list[OfferPresentation]:
    """Put the offers one event won in front of the customer, in a fixed number of
    statements however many there are. ``items``: (policy id, offer, channel), the
    offer as the engine's index holds it (``engine.OfferInfo``). ``tags``: (tag,
    policy id) the same event puts on the customer, written by the same statement.

    1. One statement takes the customer's next numbers (``PresentationCounter``,
       whose row stays locked until the transaction ends: two events of one
       customer decided at once never share a number, and commit their numbers
       in order), writes the presentations, an offer.presented event for each
       (it flows back into the loop: contact history, other policies) and the
       tags. The items travel as one JSON parameter: psycopg adapts a list
       parameter in Python, element by element, which cost more than the
       statement's round trip.
    2. Tell every screen showing the customer, and their own session, on commit.

    ``claim``: the caller's claim, written first by the same statement, which then
    writes nothing when it is lost (``claim.values`` stays None, [] is returned).
    ``returning=False``: the caller needs no rows back (none are built).
    ``recorded``: gets the ``offer.presented`` events written (the engine decides
    them next, in the same pass: ``engine.decide``)."""
    if not items:
        customer_tags_add(customer_id=customer_id, tags=tags, now=now)
        return []
    expires = [now + dt.timedelta(hours=offer.expires_after_hours) for _, offer, _ in items]
    # The statement builds the events' payloads as _offer_payload would: their shape is checked here.
    policy_id, offer, channel = items[0]
    events.get("offer.presented").validate(_offer_payload_of(offer.code, channel, 0, policy_id))
    params: dict[str, Any] = {
        "customer": customer_id, "event": event.pk, "status": PresentationStatus.PRESENTED, "now": now,
        "source": crm_services.CRM_SOURCE_CODE, "tags": _tags_json(tags),
        "items": json.dumps([
            {"offer_id": offer.id, "channel": channel, "policy_id": policy_id, "expires_at": ends.isoformat(),
             "code": offer.code}
            for (policy_id, offer, channel), ends in zip(items, expires, strict=True)
        ]),
    }  # fmt: skip
    params["count"] = len(items)
    sql = _present_sql("", "")
    if claim is not None:
        params.update(claim.params)
        sql = _present_sql(claim.ctes, claim.columns)
    # No savepoint of its own: the presentations stand or fall with the decision (one
    # statement: outside a transaction, its own).
    with transaction.atomic(savepoint=False) if connection.in_atomic_block else nullcontext():
        with server_bound_cursor() as cursor:
            cursor.execute(sql, params)
            made = cursor.fetchall()
        if claim is not None:
            if not made:
                return []  # the claim was lost: nothing written
            claim.values = tuple(made[0][4:])
        presentations: list[OfferPresentation] = []
        told: list[BusinessEvent] = []
        group = realtime.customer_group(customer_id)
        for (pk, sequence, event_id, source_id, *_), (policy_id, offer, channel), ends in zip(
            made, items, expires, strict=True
        ):
            if returning:
                presentations.append(
                    OfferPresentation(
                        id=pk, offer_id=offer.id, customer_id=customer_id, channel=channel,
                        policy_id=policy_id, event_id=event.pk, sequence=sequence, presented_at=now,
                        expires_at=ends,
                    )
                )  # fmt: skip
            if event_id is not None:  # None: that key was recorded before
                told.append(
                    BusinessEvent(
                        id=event_id, type="offer.presented", customer_id=customer_id, occurred_at=now,
                        payload=_offer_payload_of(offer.code, channel, pk, policy_id),
                        source_system_id=source_id, idempotency_key=f"offer.presented:{pk}", recorded_at=now,
                    )
                )  # fmt: skip
            realtime.send_on_commit(
                group,
                realtime.offer_presented(
                    customer_id=customer_id, presentation_id=pk, sequence=sequence, channel=channel,
                    expires_at=ends.isoformat(),
                    offer={"code": offer.code, "name": offer.name, "talking_points": offer.talking_points,
                           "self_service_text": offer.self_service_text, "value": offer.value_text},
                ),
            )  # fmt: skip
        events_dispatch_on_commit([e.pk for e in told], recorded=told)
    if recorded is not None:
        recorded.extend(told)
    return presentations


# The presentations numbered after the customer's last (the counter, taken from the
# rows' own maximum when it is behind them: rows written by other means), in the
# items' order; an offer.presented event for each, with the payload _offer_payload
# builds, from the CRM's own source (looked up here), skipped if its key was recorded
# before; the tags. Rows come back in sequence order, each with its event's id (NULL
# when skipped) and source. The counter's upsert locks its row until the transaction
# ends, and one that waited for it reads the number the other left: no numbers
# shared, and they commit in order (a screen catching up after n never misses n - 1).
_PRESENT_SQL = (
    "WITH {claim} i AS (SELECT * FROM ROWS FROM (json_to_recordset(%(items)s::json) AS (offer_id bigint,"
    "  channel text, policy_id bigint, expires_at timestamptz, code text))"
    "  WITH ORDINALITY AS i(offer_id, channel, policy_id, expires_at, code, n)),"
    " last AS (INSERT INTO policies_presentationcounter AS c (customer_id, last)"
    "  SELECT %(customer)s, coalesce((SELECT max(sequence) FROM policies_offerpresentation"
    "  WHERE customer_id = %(customer)s), 0) + %(count)s {guard}"
    "  ON CONFLICT (customer_id) DO UPDATE SET last = greatest(c.last + %(count)s, EXCLUDED.last)"
    "  RETURNING c.last - %(count)s AS n),"
    " made AS (INSERT INTO policies_offerpresentation (offer_id, customer_id, channel, policy_id, event_id,"
    "  sequence, status, presented_at, expires_at)"
    "  SELECT i.offer_id, %(customer)s, i.channel, i.policy_id, %(event)s, last.n + i.n, %(status)s, %(now)s,"
    "  i.expires_at FROM i, last ORDER BY i.n RETURNING id, sequence, channel, policy_id),"
    " told AS (INSERT INTO crm_businessevent (type, customer_id, occurred_at, payload, source_system_id,"
    "  idempotency_key, recorded_at)"
    "  SELECT 'offer.presented', %(customer)s, %(now)s, jsonb_strip_nulls(jsonb_build_object('offer', i.code,"
    "  'channel', made.channel, 'presentation_id', made.id, 'policy_id', made.policy_id)),"
    "  (SELECT id FROM crm_sourcesystem WHERE code = %(source)s), 'offer.presented:' || made.id, %(now)s"
    "  FROM made, last, i WHERE i.n = made.sequence - last.n ORDER BY made.sequence"
    "  ON CONFLICT (source_system_id, idempotency_key) DO NOTHING RETURNING id, idempotency_key,"
    "  source_system_id),"
    " tagged AS ({tagged})"
    " SELECT made.id, made.sequence, told.id, told.source_system_id{columns} FROM made"
    " LEFT JOIN told ON told.idempotency_key = 'offer.presented:' || made.id ORDER BY made.sequence"
)
# A tag the customer already has stays as it was (first policy first).
_TAG_SQL = (
    "INSERT INTO policies_customertag (customer_id, tag, policy_id, created_at)"
    " SELECT %(customer)s, t.tag, t.policy_id, %(now)s"
    " FROM ROWS FROM (json_to_recordset(%(tags)s::json) AS (tag text, policy_id bigint))"
    " WITH ORDINALITY AS t(tag, policy_id, n){guard} ORDER BY t.n ON CONFLICT (customer_id, tag) DO NOTHING"
)


@functools.cache
def _present_sql(claim: str, columns: str) -> str:
    """The presentations' statement, after the caller's ``claim`` CTEs when given
    (then written only if the claim returned a row), selecting ``columns`` too."""
    guard = " WHERE EXISTS (SELECT 1 FROM claim)" if claim else ""
    return (
        _PRESENT_SQL.replace("{tagged}", _TAG_SQL.replace("{guard}", guard))
        .replace("{guard}", guard)
        .replace("{claim}", f"{claim}," if claim else "")
        .replace("{columns}", columns)
    )


def _tags_json(tags: Sequence[tuple[str, int | None]]) -> str:
    return json.dumps([{"tag": tag, "policy_id": policy_id} for tag, policy_id in tags])


def customer_tags_add(
    *, customer_id: int, tags: Sequence[tuple[str, int | None]], now: dt.datetime | None = None
) -> None:
    """Tag the customer, (tag, policy id) each, in one statement: a tag the customer
    already has stays as it was. No savepoint."""
    if not tags:
        return
    with server_bound_cursor() as cursor:
        params: dict[str, Any] = {
            "customer": customer_id,
            "now": now or timezone.now(),
            "tags": _tags_json(tags),
        }
        cursor.execute(_TAG_SQL.replace("{guard}", ""), params)


def policy_task_create(*, run: ActionRun, settings: dict[str, Any]) -> Task:
    """A task for the customer, due within the hours the policy says; its origin
    names the policy (``policy:<id>``) so its outcome can be traced back."""
    assignee, note = _assignee(settings["assign_to"], run.customer_id)
    target_kind, _, target = str(settings["assign_to"]).partition(":")
    task = Task.objects.create(
        customer_id=run.customer_id, kind=settings["kind"], title=settings["title"][:200],
        description=note, priority=settings.get("priority") or 3,
        queue=target if target_kind == "queue" else "",
        due_at=run.now + dt.timedelta(hours=settings["due_in_hours"]),
        assigned_to=assignee, origin=f"policy:{run.policy_id}",
    )  # fmt: skip
    if assignee is not None:
        realtime.send_on_commit(
            realtime.agent_group(assignee.pk),
            realtime.agent_notice(customer_id=run.customer_id, message=task.title,
                                  origin=task.origin, task_id=task.pk),
        )  # fmt: skip
    return task


def agent_notify(*, run: ActionRun, settings: dict[str, Any]) -> None:
    """A notice to the customer's last agent, or to everyone in a role (frames only:
    anything an agent must not miss is a task)."""
    target = settings["to"]
    if target == "last_agent":
        agent = _last_agent(run.customer_id)
        recipients = [agent.pk] if agent else []
    else:
        recipients = list(
            User.objects.filter(groups__name=target[5:], is_active=True).values_list("pk", flat=True)
        )
    message = realtime.agent_notice(
        customer_id=run.customer_id, message=settings["message"], origin=f"policy:{run.policy_id}"
    )
    for user_id in recipients:
        realtime.send_on_commit(realtime.agent_group(user_id), message)


def customer_tag(*, run: ActionRun, settings: dict[str, Any]) -> None:
    customer_tags_add(customer_id=run.customer_id, tags=[(settings["tag"], run.policy_id)], now=run.now)


def _last_agent(customer_id: int) -> User | None:
    interaction = (
        Interaction.objects.filter(customer_id=customer_id, agent__isnull=False)
        .select_related("agent")
        .order_by("-occurred_at", "-id")
        .first()
    )
    return interaction.agent if interaction else None


def _assignee(target: str, customer_id: int) -> tuple[User | None, str]:
    if target == "last_agent":
        agent = _last_agent(customer_id)
        return agent, "" if agent else "No agent has handled this customer yet: take it from the open tasks."
    kind, _, name = target.partition(":")
    return None, f"For the {name} {'queue' if kind == 'queue' else 'role'}."


# --- Responses --------------------------------------------------------------------------------


def offer_respond(
    *, presentation_id: int, accepted: bool, actor: User, reason: str = ""
) -> OfferPresentation:
    """The customer accepts or declines an offer (themselves, or through an agent).

    1. Lock the presentation; only one still presented and not expired can be answered.
    2. Record the answer and an offer.accepted / offer.declined business event, so
       it reaches contact history, the contact rules (cooling off) and other policies.
    3. Tell every screen showing the customer, on commit."""
    now = timezone.now()
    with transaction.atomic():
        presentation = (
            OfferPresentation.objects.select_for_update().select_related("offer").get(pk=presentation_id)
        )
        if presentation.status != PresentationStatus.PRESENTED:
            raise Conflict(
                {"status": f"This offer was already {presentation.status}: it cannot be answered again."}
            )
        if presentation.expires_at <= now:
            raise Conflict({"status": "This offer has expired: it can no longer be answered."})
        presentation.status = PresentationStatus.ACCEPTED if accepted else PresentationStatus.DECLINED
        presentation.responded_at = now
        presentation.responded_by = actor
        presentation.save(update_fields=["status", "responded_at", "responded_by"])
        _record_offer_event(
            "offer.accepted" if accepted else "offer.declined", presentation,
            offer_code=presentation.offer.code, actor=actor, reason=reason,
        )  # fmt: skip
        _send_responded(presentation)
    return presentation


def offers_expire(*, now: dt.datetime | None = None, limit: int = 5000) -> int:
    """Mark presentations unanswered past their expiry as expired, each with an
    offer.expired event; return how many. Safe to run concurrently: rows another
    run holds are skipped."""
    moment = now or timezone.now()
    with transaction.atomic():
        due = list(
            OfferPresentation.objects.select_for_update(skip_locked=True)
            .select_related("offer")
            .filter(status=PresentationStatus.PRESENTED, expires_at__lte=moment)
            .order_by("expires_at")[:limit]
        )
        for presentation in due:
            presentation.status = PresentationStatus.EXPIRED
            presentation.responded_at = moment
            presentation.save(update_fields=["status", "responded_at"])
            _record_offer_event("offer.expired", presentation, offer_code=presentation.offer.code, actor=None)
            _send_responded(presentation)
    return len(due)


def _send_responded(presentation: OfferPresentation) -> None:
    realtime.send_on_commit(
        realtime.customer_group(presentation.customer_id),
        realtime.offer_responded(
            customer_id=presentation.customer_id, presentation_id=presentation.pk,
            sequence=presentation.sequence, status=presentation.status,
        ),
    )  # fmt: skip


def _offer_payload(presentation: OfferPresentation, offer_code: str) -> dict[str, Any]:
    return _offer_payload_of(offer_code, presentation.channel, presentation.pk, presentation.policy_id)


def _offer_payload_of(
    offer_code: str, channel: str, presentation_id: int, policy_id: int | None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"offer": offer_code, "channel": channel, "presentation_id": presentation_id}
    if policy_id is not None:
        payload["policy_id"] = policy_id
    return payload


def _record_offer_event(
    event_type: str, presentation: OfferPresentation, *, offer_code: str, actor: User | None, reason: str = ""
) -> None:
    payload = _offer_payload(presentation, offer_code)
    if reason and event_type == "offer.declined":
        payload["reason"] = reason[:200]
    crm_services.business_event_record(
        type=event_type, occurred_at=presentation.responded_at or presentation.presented_at, payload=payload,
        source=crm_services.crm_source(), idempotency_key=f"{event_type}:{presentation.pk}",
        customer_id=presentation.customer_id, actor=actor,
    )  # fmt: skip


@dataclass(frozen=True)
class DeliveryAck:
    acknowledged: list[int]
    already: list[int]
    unknown: list[int]


def offers_mark_delivered(*, channel: str, presentation_ids: list[int]) -> DeliveryAck:
    """The channel's integration has taken these offers for delivery: they leave
    its feed. Repeating an acknowledgement changes nothing; an id that is not an
    offer of this channel is reported back, never touched."""
    wanted = list(dict.fromkeys(presentation_ids))
    with transaction.atomic():
        marked = set(
            OfferPresentation.objects.select_for_update()
            .filter(pk__in=wanted, channel=channel, delivered_at__isnull=True)
            .values_list("pk", flat=True)
        )
        OfferPresentation.objects.filter(pk__in=marked).update(delivered_at=timezone.now())
        known = set(
            OfferPresentation.objects.filter(pk__in=wanted, channel=channel).values_list("pk", flat=True)
        )
    return DeliveryAck(
        acknowledged=[pk for pk in wanted if pk in marked],
        already=[pk for pk in wanted if pk in known and pk not in marked],
        unknown=[pk for pk in wanted if pk not in known],
    )
