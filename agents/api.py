"""The telephony API: a PBX bridge or a hosted contact-center platform reports
calls here, with its own ids. Thin views: parse, authorize, call a service."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import services
from agents.models import Call
from crm.api.base import StrictQueryParams
from crm.api.serializers import ErrorSerializer, JsonTypes
from crm.models import SourceSystem, User
from crm.models.choices import SourceKind

# Source systems that may speak for a telephony system.
TELEPHONY_KINDS = {SourceKind.IVR, SourceKind.DIALER}


class CallArrivalSerializer(JsonTypes, serializers.Serializer):
    call_id = serializers.CharField(max_length=120, help_text="The telephony system's own id of the call.")
    ani = serializers.CharField(
        max_length=40, allow_blank=True, help_text="The caller's number (empty: withheld)."
    )
    dnis = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    queue = serializers.CharField(max_length=40, help_text="The code of the queue the call is for.")


class CallEventSerializer(JsonTypes, serializers.Serializer):
    event_id = serializers.CharField(max_length=120, help_text="The telephony system's id of this event.")
    kind = serializers.ChoiceField(choices=services.CALL_EVENTS)
    queue = serializers.CharField(
        max_length=40, required=False, help_text="For a transfer: the queue the call goes to."
    )
    agent = serializers.CharField(
        max_length=150, required=False,
        help_text="For a transfer to a named agent: their user name. The agent must be available and "
        "answer the call's queue (or the queue given); otherwise 409 and nothing changes.",
    )  # fmt: skip


class CallSerializer(serializers.ModelSerializer):
    call_id = serializers.CharField(source="telephony_id", read_only=True)
    queue = serializers.CharField(source="queue.code", read_only=True)
    agent = serializers.SerializerMethodField()

    class Meta:
        model = Call
        fields = ["id", "call_id", "state", "queue", "caller_number", "customer", "candidates", "agent",
                  "arrived_at", "answered_at", "ended_at", "end_reason"]  # fmt: skip

    def get_agent(self, call: Call) -> str | None:
        return call.agent.user.username if call.agent_id and call.agent else None


_WHEN = serializers.DateTimeField()


def call_body(call: Call) -> dict[str, Any]:
    """What ``CallSerializer`` answers (it stays the schema's description), built
    directly: a ModelSerializer rebuilds its fields from the model on every
    instance, ~0.5 ms of the web process's CPU on each call arrival and event, the
    floor's hot path. tests/agents/test_routing.py holds the two equal."""
    return {
        "id": call.pk,
        "call_id": call.telephony_id,
        "state": call.state,
        "queue": call.queue.code,
        "caller_number": call.caller_number,
        "customer": call.customer_id,
        "candidates": call.candidates,
        "agent": call.agent.user.username if call.agent_id and call.agent else None,
        "arrived_at": _WHEN.to_representation(call.arrived_at),
        "answered_at": _WHEN.to_representation(call.answered_at) if call.answered_at else None,
        "ended_at": _WHEN.to_representation(call.ended_at) if call.ended_at else None,
        "end_reason": call.end_reason,
    }


def _telephony_source(request: Request) -> SourceSystem:
    user: User = request.user  # type: ignore[assignment]
    source = user.source_system if user.is_integration else None
    if source is None or source.kind not in TELEPHONY_KINDS:
        raise PermissionDenied(
            "Only a telephony system's integration (an IVR or dialer source) reports calls."
        )
    return source


@extend_schema(tags=["calls"])
class CallsView(StrictQueryParams, APIView):
    @extend_schema(
        request=CallArrivalSerializer,
        responses={
            201: CallSerializer,
            200: OpenApiResponse(
                CallSerializer, description="This call id was reported before: the call as it is."
            ),
        },
        description="A new inbound call. The caller is matched by number; the call rings the queue's "
        "longest-idle available agent (whose desktop pops the customer) or waits in the queue.",
    )
    def post(self, request: Request) -> Response:
        source = _telephony_source(request)
        incoming = CallArrivalSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data: dict[str, Any] = incoming.validated_data
        call, created = services.call_arrive(
            source=source,
            telephony_id=data["call_id"],
            ani=data["ani"],
            dnis=data["dnis"],
            queue_code=data["queue"],
        )
        return Response(call_body(call), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@extend_schema(tags=["calls"])
class CallEventsView(StrictQueryParams, APIView):
    @extend_schema(
        request=CallEventSerializer,
        responses={
            200: CallSerializer,
            404: OpenApiResponse(ErrorSerializer, description="No call with this id from your system."),
            409: OpenApiResponse(
                ErrorSerializer, description="The event cannot happen in the call's state: nothing changed."
            ),
        },
        description="An event of a call: answered, held, resumed, transferred (to a queue, or to a named "
        "available agent with the queue's skill), ended. "
        "Sent twice with the same event_id, it is applied once.",
    )
    def post(self, request: Request, call_id: str) -> Response:
        source = _telephony_source(request)
        incoming = CallEventSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data: dict[str, Any] = incoming.validated_data
        payload = {key: data[key] for key in ("queue", "agent") if data.get(key)}
        try:
            call, _ = services.call_event(
                source=source,
                telephony_id=call_id,
                event_id=data["event_id"],
                kind=data["kind"],
                payload=payload,
            )
        except services.CallNotFound:
            raise NotFound(
                f"No call “{call_id}” from your system: report it with POST /api/v1/calls/ first."
            ) from None
        return Response(call_body(call))
