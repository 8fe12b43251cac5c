"""POST /api/v1/events: integrations send business events directly.

One event, or ``{"events": [...]}`` with up to ``MAX_BATCH``. Each is checked
against the event catalog (crm.events) with an error per field, per item index
in a batch; a batch is all or nothing, so a client fixes the items named and
sends the same batch again (keys make the resend harmless). Events are
idempotent per (the caller's source system, idempotency_key).
"""

from __future__ import annotations

import datetime as dt
from contextlib import nullcontext
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crm import events, selectors, services
from crm.api.base import StrictQueryParams
from crm.api.serializers import AwareDateTimeField, JsonTypes
from crm.exceptions import Conflict
from crm.models import SourceRecord, User
from crm.services.events import server_bound_cursor

MAX_BATCH = 500


class EventInSerializer(JsonTypes, serializers.Serializer):
    type = serializers.CharField(
        max_length=60, help_text="A type from the event catalog, e.g. transaction.withdrawal."
    )
    occurred_at = AwareDateTimeField(help_text="When it happened, with its zone (Z or an offset).")
    idempotency_key = serializers.CharField(
        max_length=200, help_text="Your own unique key for this fact: sending it again records nothing new."
    )
    customer = serializers.IntegerField(
        min_value=1, required=False, help_text="The CRM's customer id; or give customer_key."
    )
    customer_key = serializers.CharField(
        max_length=120, required=False, help_text="Your system's key of the customer, as linked to the CRM."
    )
    payload = serializers.DictField(
        required=False, default=dict, help_text="The fields of this event type, as the catalog lists them."
    )

    def validate_type(self, value: str) -> str:
        if value not in events.CATALOG:
            raise serializers.ValidationError(
                f"“{value}” is not a known event type. Known types: {', '.join(sorted(events.CATALOG))}."
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("customer" in attrs) == ("customer_key" in attrs):
            raise serializers.ValidationError(
                {"customer": ["Give either customer (the CRM's id) or customer_key (your key), not both."]}
            )
        try:
            events.get(attrs["type"]).validate(attrs.get("payload") or {}, strict=True)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return attrs


_EVENT_FIELDS = frozenset({"type", "occurred_at", "idempotency_key", "customer", "customer_key", "payload"})


def _plainly_valid(item: Any) -> dict[str, Any] | None:
    """What ``EventInSerializer`` validates ``item`` to, when the item is plainly
    valid (canonical JSON types, text without surrounding blanks or control
    characters, a zone on the time, a known type and a payload its type accepts);
    None for anything else, which the serializer then checks and names. The
    serializer's fields are copied and run per item: a third of a millisecond per
    event, most of the view's own time, for the answer this gives."""
    if type(item) is not dict or not item.keys() <= _EVENT_FIELDS:
        return None
    event_type, occurred_at, key = item.get("type"), item.get("occurred_at"), item.get("idempotency_key")
    if type(event_type) is not str or event_type not in events.CATALOG:
        return None
    if not _plain_text(key, 200) or type(occurred_at) is not str or occurred_at != occurred_at.strip():
        return None
    try:
        moment = parse_datetime(occurred_at)
        if moment is None or moment.tzinfo is None:
            return None
        moment = moment.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None
    attrs: dict[str, Any] = {"type": event_type, "occurred_at": moment, "idempotency_key": key}
    if "customer" in item:
        customer = item["customer"]
        if "customer_key" in item or type(customer) is not int or customer < 1:
            return None
        attrs["customer"] = customer
    elif _plain_text(item.get("customer_key"), 120):
        attrs["customer_key"] = item["customer_key"]
    else:
        return None
    payload = item.get("payload", {})
    if type(payload) is not dict:
        return None
    try:
        events.get(event_type).validate(payload, strict=True)
    except DjangoValidationError:
        return None
    attrs["payload"] = dict(payload)
    return attrs


def _plain_text(value: Any, max_length: int) -> bool:
    return (
        type(value) is str and 0 < len(value) <= max_length and value.isprintable() and value == value.strip()
    )


class EventBatchSerializer(serializers.Serializer):
    events = serializers.ListField(
        child=serializers.DictField(), min_length=1, max_length=MAX_BATCH,
        help_text=f"1 to {MAX_BATCH} events, each as for a single event.",
    )  # fmt: skip


class EventRecordedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    type = serializers.CharField()
    customer = serializers.IntegerField()
    idempotency_key = serializers.CharField()
    created = serializers.BooleanField(help_text="False when this key had already been recorded.")


class EventBatchRecordedSerializer(serializers.Serializer):
    events = EventRecordedSerializer(many=True, help_text="In the order sent.")
    created = serializers.IntegerField(help_text="How many were new.")


_EVENT_OR_BATCH = PolymorphicProxySerializer(
    component_name="EventOrBatch",
    serializers=[EventInSerializer, EventBatchSerializer],
    resource_type_field_name=None,
)


@extend_schema(tags=["events"])
class EventsView(StrictQueryParams, APIView):
    """Business events from integrations (only integration tokens may send them: 403
    for anyone else). A 400 names each refused field; in a batch under
    events.<index>, and then nothing of the batch was recorded."""

    @extend_schema(
        request=_EVENT_OR_BATCH,
        responses={
            201: OpenApiResponse(EventRecordedSerializer, description="One event, recorded now."),
            200: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="EventOrBatchRecorded",
                    serializers=[EventRecordedSerializer, EventBatchRecordedSerializer],
                    resource_type_field_name=None,
                ),
                description="A batch (each item says whether it was new); or one event whose key was "
                "already recorded, answered with that first event.",
            ),
            409: OpenApiResponse(
                response=OpenApiTypes.OBJECT,
                description="Your source already used this idempotency_key for another customer or "
                "event type.",
            ),
        },
        examples=[
            OpenApiExample(
                "A large withdrawal",
                request_only=True,
                value={
                    "type": "transaction.withdrawal",
                    "occurred_at": "2026-03-01T14:30:00Z",
                    "idempotency_key": "atm-778812",
                    "customer_key": "C-10077",
                    "payload": {"amount": 12500.0, "account_number": "CHK-10077", "channel": "atm"},
                },
            )
        ],
    )
    def post(self, request: Request) -> Response:
        user: User = request.user  # type: ignore[assignment]
        if not user.is_integration:
            raise PermissionDenied("Only an integration's token may send business events.")
        data = request.data
        if isinstance(data, dict) and "events" in data:
            batch = EventBatchSerializer(data=data)
            batch.is_valid(raise_exception=True)
            items = batch.validated_data["events"]
            results = self._record(user, items, batched=True)
            body = {"events": results, "created": sum(1 for r in results if r["created"])}
            return Response(body, status=status.HTTP_200_OK)
        (result,) = self._record(user, [data], batched=False)
        return Response(result, status=status.HTTP_201_CREATED if result["created"] else status.HTTP_200_OK)

    def _record(self, user: User, items: list[Any], *, batched: bool) -> list[dict[str, Any]]:
        """Check every item, then record them all in one transaction."""
        checked: list[dict[str, Any]] = []
        errors: dict[str, Any] = {}
        for index, item in enumerate(items):
            plain = _plainly_valid(item)
            if plain is not None:
                checked.append(plain)
                continue
            incoming = EventInSerializer(data=item)
            if incoming.is_valid():
                checked.append(incoming.validated_data)
            else:
                errors[str(index)] = incoming.errors
        if errors:
            raise ValidationError({"events": errors} if batched else errors["0"])
        # One event naming the CRM's customer id: its insert checks that the customer
        # exists (one round trip fewer); a batch is checked whole first, naming each item.
        insert_checks = not batched and "customer" in checked[0]
        customer_ids = (
            [checked[0]["customer"]] if insert_checks else self._customers(user, checked, batched=batched)
        )
        source = user.source_system
        assert source is not None  # noqa: S101  (an integration has its source)
        results = []
        # A single event is one statement: no transaction around it (a BEGIN and a COMMIT
        # fewer); its listeners run once it is in, as on a commit.
        with transaction.atomic() if batched else nullcontext():
            for index, (attrs, customer_id) in enumerate(zip(checked, customer_ids, strict=True)):
                try:
                    event, created = services.business_event_record(
                        type=attrs["type"], occurred_at=attrs["occurred_at"],
                        payload=attrs.get("payload") or {}, source=source,
                        idempotency_key=attrs["idempotency_key"], customer_id=customer_id, actor=user,
                        customer_must_exist=insert_checks,
                    )  # fmt: skip
                except DjangoValidationError as exc:
                    if insert_checks:  # the customer named is unknown: as _customers says it
                        raise ValidationError(exc.message_dict) from None
                    raise
                except Conflict as exc:
                    if batched:
                        raise Conflict({f"events.{index}.{k}": v for k, v in exc.errors.items()}) from None
                    raise
                results.append({"id": event.pk, "type": event.type, "customer": customer_id,
                                "idempotency_key": event.idempotency_key, "created": created})  # fmt: skip
        return results

    def _customers(self, user: User, checked: list[dict[str, Any]], *, batched: bool) -> list[int]:
        """The CRM customer of each item; an unknown one is a 400 naming the item."""
        keys = {a["customer_key"] for a in checked if "customer_key" in a}
        by_key: dict[str, int] = {}
        if keys:
            by_key = dict(
                SourceRecord.objects.filter(
                    source_system=user.source_system, external_key__in=keys
                ).values_list("external_key", "customer_id")
            )
        ids = {a["customer"] for a in checked if "customer" in a}
        known: set[int] = set()
        if ids and user.is_integration:
            # An integration may name every customer (crm.selectors.customers_visible_to);
            # the ORM's query, built and compiled per request, cost more than its round trip.
            # The ids as an array's text, which PostgreSQL reads: psycopg adapts a list in
            # Python, element by element.
            with server_bound_cursor() as cursor:
                cursor.execute(
                    "SELECT id FROM crm_customer WHERE id = ANY(%s::bigint[])",
                    ["{" + ",".join(str(int(pk)) for pk in ids) + "}"],
                )
                known = {row[0] for row in cursor.fetchall()}
        elif ids:
            known = set(selectors.customers_visible_to(user).filter(pk__in=ids).values_list("pk", flat=True))
        out: list[int] = []
        errors: dict[str, Any] = {}
        for index, attrs in enumerate(checked):
            if "customer_key" in attrs:
                customer_id = by_key.get(attrs["customer_key"])
                if customer_id is None:
                    errors[str(index)] = {
                        "customer_key": [
                            f"Your system has no customer linked under “{attrs['customer_key']}”: send the "
                            "customer through the touchpoint API first, or give the CRM's customer id."
                        ]
                    }
                    continue
            else:
                customer_id = attrs["customer"]
                if customer_id not in known:
                    errors[str(index)] = {"customer": [f"There is no customer {customer_id}."]}
                    continue
            out.append(customer_id)
        if errors:
            raise ValidationError({"events": errors} if batched else errors["0"])
        return out
