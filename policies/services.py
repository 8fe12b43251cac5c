"""Every write of the policies app: policies and offers saved, offers presented
and answered, the actions' effects (tasks, notices, tags)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from crm import events, realtime
from crm import services as crm_services
from crm.exceptions import Conflict
from crm.models import BusinessEvent, Interaction, Task, User
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

# pg_advisory_xact_lock(namespace, key): the namespace keeps this lock apart from others.
_SEQUENCE_LOCK_NAMESPACE = 7301
# The customer's sequence lock, taken in a statement of its own or inside another one
# (the engine's claim) that runs before the presentations' insert in the same transaction.
SEQUENCE_LOCK_SQL = "pg_advisory_xact_lock(%s, %s)"


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
    locked: bool = False,
) -> list[OfferPresentation]:
    """Put the offers one event won in front of the customer, in a fixed number of
    statements however many there are. ``items``: (policy id, offer, channel), the
    offer as the engine's index holds it (``engine.OfferInfo``).

    1. Take the customer's next sequence numbers under a transaction-scoped lock
       (two events of one customer decided at once must not share a number); the
       insert that follows reads the last number in its own statement, whose
       snapshot is taken after the lock is held.
    2. Write the presentations, and record an offer.presented for each, which
       flows back into the loop (contact history, other policies).
    3. Tell every screen showing the customer, and their own session, on commit.

    ``locked``: the caller's transaction already holds the customer's sequence lock
    (``SEQUENCE_LOCK_SQL`` in an earlier statement: one round trip fewer)."""
    if not items:
        return []
    # No savepoint of its own: the presentations stand or fall with the decision.
    with transaction.atomic(savepoint=False):
        with server_bound_cursor() as cursor:
            if not locked:
                cursor.execute(f"SELECT {SEQUENCE_LOCK_SQL}", sequence_lock_params(customer_id))
            cursor.execute(
                "INSERT INTO policies_offerpresentation (offer_id, customer_id, channel, policy_id, event_id,"
                " sequence, status, presented_at, expires_at)"
                " SELECT i.offer_id, %s, i.channel, i.policy_id, %s, last.n + i.n, %s, %s, i.expires_at"
                " FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::timestamptz[])"
                " WITH ORDINALITY AS i(offer_id, channel, policy_id, expires_at, n),"
                " (SELECT coalesce(max(sequence), 0) AS n FROM policies_offerpresentation"
                "  WHERE customer_id = %s) AS last"
                " ORDER BY i.n RETURNING id, sequence",
                [customer_id, event.pk, PresentationStatus.PRESENTED, now,
                 [offer.id for _, offer, _ in items], [channel for _, _, channel in items],
                 [policy_id for policy_id, _, _ in items],
                 [now + dt.timedelta(hours=offer.expires_after_hours) for _, offer, _ in items], customer_id],
            )  # fmt: skip
            numbered = sorted(cursor.fetchall(), key=lambda row: row[1])
        presentations = [
            OfferPresentation(
                id=pk,
                offer_id=offer.id,
                customer_id=customer_id,
                channel=channel,
                policy_id=policy_id,
                event_id=event.pk,
                sequence=sequence,
                presented_at=now,
                expires_at=now + dt.timedelta(hours=offer.expires_after_hours),
            )
            for (pk, sequence), (policy_id, offer, channel) in zip(numbered, items, strict=True)
        ]
        codes = [offer.code for _, offer, _ in items]
        crm_services.business_events_record_new(
            items=[
                ("offer.presented", customer_id, now, _offer_payload(p, code), f"offer.presented:{p.pk}")
                for p, code in zip(presentations, codes, strict=True)
            ],
            source=crm_services.CRM_SOURCE_CODE,
        )
        group = realtime.customer_group(customer_id)
        for presentation, (_, offer, channel) in zip(presentations, items, strict=True):
            realtime.send_on_commit(
                group,
                realtime.offer_presented(
                    customer_id=customer_id, presentation_id=presentation.pk, sequence=presentation.sequence,
                    channel=channel, expires_at=presentation.expires_at.isoformat(),
                    offer={"code": offer.code, "name": offer.name, "talking_points": offer.talking_points,
                           "self_service_text": offer.self_service_text, "value": offer.value_text},
                ),
            )  # fmt: skip
    return presentations


def sequence_lock_params(customer_id: int) -> list[int]:
    return [_SEQUENCE_LOCK_NAMESPACE, customer_id]


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
    # One statement, no savepoint: a tag the customer already has stays as it was.
    with server_bound_cursor() as cursor:
        cursor.execute(
            "INSERT INTO policies_customertag (customer_id, tag, policy_id, created_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (customer_id, tag) DO NOTHING",
            [run.customer_id, settings["tag"], run.policy_id, timezone.now()],
        )


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
    payload: dict[str, Any] = {
        "offer": offer_code,
        "channel": presentation.channel,
        "presentation_id": presentation.pk,
    }
    if presentation.policy_id is not None:
        payload["policy_id"] = presentation.policy_id
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
