"""API v1 for offers: a customer's offers for the self-service web and the agent
screen, and their answers; the delivery feed of the e-mail and outbound-call
offers for the e-mail platform and the dialer, which pass the answers back.
Other integrations may not read or answer offers."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crm import events
from crm import selectors as crm_selectors
from crm.api.base import StrictQueryParams
from crm.api.serializers import JsonTypes
from crm.models import User
from policies import actions, conditions, selectors, services
from policies.models import OfferPresentation, Policy

RESPOND_PERMISSION = "crm.change_customer"


class OfferSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    self_service_text = serializers.CharField()


class AgentOfferSerializer(OfferSerializer):
    talking_points = serializers.CharField()
    value = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=True)


class PresentationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    sequence = serializers.IntegerField(help_text="The customer's presentations count from 1, without gaps.")
    customer = serializers.IntegerField(source="customer_id")
    channel = serializers.CharField()
    status = serializers.CharField()
    presented_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    responded_at = serializers.DateTimeField(allow_null=True)
    offer = OfferSerializer()


class AgentPresentationSerializer(PresentationSerializer):
    offer = AgentOfferSerializer()  # type: ignore[assignment]
    policy = serializers.IntegerField(source="policy_id", allow_null=True)


class OffersSerializer(serializers.Serializer):
    last_sequence = serializers.IntegerField(help_text="Send it back as after= when the page reconnects.")
    reload = serializers.BooleanField(
        help_text="The after= given was too far behind: these are the current offers; start over from them."
    )
    offers = PresentationSerializer(many=True)


class AgentOffersSerializer(OffersSerializer):
    offers = AgentPresentationSerializer(many=True)  # type: ignore[assignment]


class OffersQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(
        min_value=0, max_value=2_147_483_647, required=False,
        help_text="The last sequence this page saw: every presentation since, in order, once.",
    )  # fmt: skip


class DeclineSerializer(JsonTypes, serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


def _user(request: Request) -> User:
    return request.user  # type: ignore[return-value]


def _no_integrations(user: User) -> None:
    if user.is_integration:
        raise PermissionDenied("Integrations may not read or answer offers.")


def _after(view: StrictQueryParams, request: Request) -> int | None:
    if len(request.query_params.getlist("after")) > 1:
        raise ValidationError({"after": ["Give after once: the last sequence this page saw."]})
    after: int | None = view.query().get("after")
    return after


def _render(user: User, found: selectors.CustomerOffers) -> Response:
    serializer = OffersSerializer if user.is_customer else AgentOffersSerializer
    body = {"last_sequence": found.last_sequence, "reload": found.reload, "offers": found.presentations}
    return Response(serializer(body).data)


_OFFERS_DOC = (
    "The offers waiting for the customer's answer; with after=<last sequence seen>, every presentation "
    "since then, in order (a page that reconnects misses nothing). Customers see the self-service text; "
    "agents also the talking points and value."
)


@extend_schema(tags=["offers"], description=_OFFERS_DOC, responses={200: AgentOffersSerializer})
class CustomerOffersView(StrictQueryParams, APIView):
    query_serializers = {"get": OffersQuerySerializer}

    def get(self, request: Request, id: int) -> Response:  # noqa: A002  (the path's name)
        user = _user(request)
        _no_integrations(user)
        customer = get_object_or_404(crm_selectors.customers_visible_to(user), pk=id)
        return _render(user, selectors.customer_offers(customer_id=customer.pk, after=_after(self, request)))


@extend_schema(
    tags=["offers"],
    description="The offers waiting for the signed-in customer's answer (self-service log-ins only). "
    "A page that reconnects asks GET /customers/{id}/offers/?after=<last sequence seen>.",
    responses={200: OffersSerializer},
)
class MyOffersView(StrictQueryParams, APIView):
    def get(self, request: Request) -> Response:
        user = _user(request)
        if user.customer_id is None:
            raise PermissionDenied(
                "Only a customer's own log-in has offers here; staff use /customers/{id}/offers/."
            )
        return _render(user, selectors.customer_offers(customer_id=user.customer_id))


class _Respond(StrictQueryParams, APIView):
    accepted = True

    def _answer(self, request: Request, presentation_id: int, reason: str = "") -> Response:
        user = _user(request)
        visible = crm_selectors.customers_visible_to(user).values("pk")
        offers = OfferPresentation.objects.filter(customer__in=visible)
        if user.is_integration:
            # The e-mail platform and the dialer pass on the answers to the offers they
            # delivered (a click, a yes on the phone); other integrations answer none.
            channel = selectors.delivery_channel_of(user)
            if channel is None:
                raise PermissionDenied(
                    "Only an e-mail platform or a dialer answers offers, for the ones it delivered."
                )
            offers = offers.filter(channel=channel)
        presentation = get_object_or_404(offers, pk=presentation_id)
        if not user.is_customer and not user.is_integration and not user.has_perm(RESPOND_PERMISSION):
            raise PermissionDenied("You may not answer offers for customers.")
        answered = services.offer_respond(
            presentation_id=presentation.pk, accepted=self.accepted, actor=user, reason=reason
        )
        serializer = PresentationSerializer if user.is_customer else AgentPresentationSerializer
        return Response(
            serializer(OfferPresentation.objects.select_related("offer").get(pk=answered.pk)).data
        )


_ANSWER_RESPONSES: dict[int, Any] = {
    200: AgentPresentationSerializer,
    409: OpenApiResponse(
        response=OpenApiTypes.OBJECT,
        description="The offer was already answered, or has expired (under status).",
    ),
}


@extend_schema(tags=["offers"], request=None, responses=_ANSWER_RESPONSES)
class OfferAcceptView(_Respond):
    """Accept an offer: the customer themselves, or an agent on their behalf."""

    def post(self, request: Request, id: int) -> Response:  # noqa: A002  (the path's name)
        return self._answer(request, id)


@extend_schema(tags=["offers"], request=DeclineSerializer, responses=_ANSWER_RESPONSES)
class OfferDeclineView(_Respond):
    """Decline an offer; it is not presented again until its cooling-off has passed."""

    accepted = False

    def post(self, request: Request, id: int) -> Response:  # noqa: A002  (the path's name)
        incoming = DeclineSerializer(data=request.data if isinstance(request.data, dict) else {})
        incoming.is_valid(raise_exception=True)
        return self._answer(request, id, reason=incoming.validated_data["reason"])


# --- Authoring aids (the supervisor pages build on these) -------------------------------------

AUTHOR_PERMISSION = "policies.change_policy"


def _author(request: Request) -> User:
    user = _user(request)
    if not user.has_perm(AUTHOR_PERMISSION):
        raise PermissionDenied("Only supervisors and administrators write policies.")
    return user


class FieldSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField(help_text="The CEL type: string, double, int or bool.")


class EventTypeSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    event_fields = FieldSerializer(
        many=True, help_text="event.<name> in a condition; type and source are on every event."
    )


class ActionSpecSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    settings = serializers.DictField(
        child=serializers.CharField(), help_text="Each setting and what it takes."
    )


class VocabularySerializer(serializers.Serializer):
    event_types = EventTypeSerializer(many=True)
    customer_fields = FieldSerializer(many=True)
    history_functions = serializers.ListField(child=serializers.CharField())
    actions = ActionSpecSerializer(many=True)


@extend_schema(tags=["policies"], responses={200: VocabularySerializer})
class PolicyVocabularyView(StrictQueryParams, APIView):
    """What a policy may say: the event catalog with each type's fields, the
    customer's fields, the history functions and the actions with their settings."""

    def get(self, request: Request) -> Response:
        _author(request)

        def fields(mapping: dict[str, str]) -> list[dict[str, str]]:
            return [{"name": name, "type": kind} for name, kind in mapping.items()]

        body = {
            "event_types": [
                {"name": t.name, "description": t.description,
                 "event_fields": fields(conditions.event_fields([t.name]))}
                for t in sorted(events.CATALOG.values(), key=lambda t: t.name)
            ],
            "customer_fields": fields(conditions.CUSTOMER_FIELDS),
            "history_functions": list(conditions.HISTORY_FUNCTIONS.values()),
            "actions": [
                {"name": name, "description": spec.description,
                 "settings": {k: s.help or s.kind for k, s in spec.settings.items()}}
                for name, spec in actions.ACTIONS.items()
            ],
        }  # fmt: skip
        return Response(VocabularySerializer(body).data)


class PolicyCheckSerializer(serializers.Serializer):
    trigger_types = serializers.ListField(
        child=serializers.CharField(max_length=60), min_length=1, max_length=20
    )
    condition = serializers.CharField(required=False, allow_blank=True, default="", max_length=4000)
    actions = serializers.ListField(child=serializers.DictField(), min_length=1, max_length=20)


@extend_schema(
    tags=["policies"],
    request=PolicyCheckSerializer,
    responses={200: inline_serializer("PolicyCheckOk", {"ok": serializers.BooleanField()})},
)
class PolicyCheckView(StrictQueryParams, APIView):
    """Check a policy as it would be saved, without saving it: a 400 names each
    problem (a condition's with its line and column)."""

    def post(self, request: Request) -> Response:
        _author(request)
        incoming = PolicyCheckSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        services.policy_validate(Policy(**incoming.validated_data))
        return Response({"ok": True})


# --- Delivery by the e-mail platform and the dialer -------------------------------------------


def _delivery_channel(request: Request) -> str:
    channel = selectors.delivery_channel_of(_user(request))
    if channel is None:
        raise PermissionDenied(
            "Only an e-mail platform's or a dialer's integration takes offers to deliver "
            "(its source system's kind is email or dialer)."
        )
    return channel


class DeliveryCustomerSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    display_name = serializers.CharField()
    email = serializers.CharField(source="primary_email", help_text="Empty when none is on file.")
    phone = serializers.CharField(source="primary_phone", help_text="E.164; empty when none is on file.")
    language = serializers.CharField()
    time_zone = serializers.CharField(help_text="Send or call within the customer's hours in this zone.")


class DeliveryOfferSerializer(OfferSerializer):
    talking_points = serializers.CharField(help_text="What the dialer's agent says.")


class DeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="Acknowledge it once taken; answer it at /offers/{id}/accept/.")
    channel = serializers.CharField()
    presented_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(help_text="Do not deliver it after this time.")
    customer = DeliveryCustomerSerializer()
    offer = DeliveryOfferSerializer()


class DeliveriesSerializer(serializers.Serializer):
    channel = serializers.CharField()
    deliveries = DeliverySerializer(many=True)
    more = serializers.BooleanField(help_text="More are waiting: acknowledge these and read again.")


class DeliveriesQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=500, required=False, default=100)


class DeliveryAckSerializer(JsonTypes, serializers.Serializer):
    delivered = serializers.ListField(
        child=serializers.IntegerField(min_value=1), min_length=1, max_length=500,
        help_text="The ids of the offers taken for delivery (at most 500).",
    )  # fmt: skip


class DeliveryAckResultSerializer(serializers.Serializer):
    acknowledged = serializers.ListField(child=serializers.IntegerField())
    already = serializers.ListField(child=serializers.IntegerField(), help_text="Acknowledged before.")
    unknown = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="Not offers of this channel: nothing was changed for them.",
    )


@extend_schema(
    tags=["offers"],
    description="The offers the policies presented on this integration's channel (an e-mail platform: "
    "email; a dialer: outbound_call) that it has not acknowledged yet, oldest first. At least once: an "
    "offer stays in the feed until acknowledged. Offers whose customer withdrew consent, or that expired, "
    "are left out.",
    responses={200: DeliveriesSerializer},
)
class OfferDeliveriesView(StrictQueryParams, APIView):
    query_serializers = {"get": DeliveriesQuerySerializer}

    def get(self, request: Request) -> Response:
        channel = _delivery_channel(request)
        rows, more = selectors.offers_to_deliver(channel=channel, limit=self.query()["limit"])
        return Response(DeliveriesSerializer({"channel": channel, "deliveries": rows, "more": more}).data)


@extend_schema(
    tags=["offers"],
    description="Acknowledge offers taken for delivery: they leave the feed. Idempotent.",
    request=DeliveryAckSerializer,
    responses={200: DeliveryAckResultSerializer},
)
class OfferDeliveriesAckView(StrictQueryParams, APIView):
    def post(self, request: Request) -> Response:
        channel = _delivery_channel(request)
        incoming = DeliveryAckSerializer(data=request.data if isinstance(request.data, dict) else {})
        incoming.is_valid(raise_exception=True)
        ack = services.offers_mark_delivered(
            channel=channel, presentation_ids=incoming.validated_data["delivered"]
        )
        return Response(DeliveryAckResultSerializer(ack).data)
