"""API v1: thin views that parse, authorize, call a selector or a service, render.

Who sees what is decided in ``get_queryset`` through crm.selectors: a customer's
token reaches only that customer, staff reach what their role's permissions
allow, and every staff or integration read of a customer record is appended to
the access log.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth import authenticate
from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.views import APIView

from crm import field_access, selectors, services
from crm.api import schema as _schema  # noqa: F401  (registers the token scheme)
from crm.api import serializers as s
from crm.api.base import StrictQueryParams
from crm.api.filters import AccountFilter, ProductFilter
from crm.api.pagination import PageNumberPagination, TimelinePagination
from crm.exceptions import StaleVersion
from crm.models import Account, ApiToken, Customer, Household, Product, User
from crm.models.choices import AccessChannel

# Who may read a customer's change history (supervisors and administrators, crm.roles).
CHANGES_PERMISSION = "crm.view_customerchange"
_FIELDS_REFUSED = OpenApiResponse(
    response=OpenApiTypes.OBJECT,
    description="Fields the caller may not set, each with why and how to get it set.",
    examples=[
        OpenApiExample(
            "An integration without a tier mapping",
            value={
                "tier": [
                    "Your source system's field mapping does not include customer.tier: "
                    "ask an administrator to map it."
                ]
            },
        )
    ],
)
_EXTERNAL_ID_CONFLICT = OpenApiResponse(
    response=OpenApiTypes.OBJECT,
    description="The external_id already names a contact of another customer record.",
)
_ETAG_HEADER = OpenApiParameter(
    "ETag",
    str,
    OpenApiParameter.HEADER,
    response=[200, 201, 304, 412],
    description='The record\'s version, quoted (e.g. "3"): send it back in If-Match to change the record.',
)
_STALE_VERSION = OpenApiResponse(
    response=inline_serializer(
        "StaleVersion",
        {
            "detail": serializers.CharField(),
            "current_version": serializers.IntegerField(help_text="Read the record again at this version."),
        },
    ),
    description="Someone changed the record since the version in If-Match: nothing was applied.",
)
_PRECONDITION_REQUIRED = OpenApiResponse(
    response=inline_serializer("PreconditionRequired", {"detail": serializers.CharField()}),
    description="If-Match is missing or is not an ETag of this API.",
)
_ETAG_RE = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


class PreconditionRequired(APIException):
    status_code = 428
    default_detail = (
        "Send If-Match with the ETag from your last read of this customer "
        '(e.g. If-Match: "3"), so that a concurrent change is never overwritten.'
    )
    default_code = "precondition_required"


def _user(request: Request) -> User:
    return request.user  # type: ignore[return-value]


def _log_reads(request: Request, customer_ids: list[int]) -> None:
    services.access_log_record(
        user=_user(request), customer_ids=customer_ids, channel=AccessChannel.API, path=request.path
    )


def _fields_sent(request: Request) -> list[str]:
    return list(request.data) if isinstance(request.data, dict) else []


def _source_of(user: User) -> Any:
    return user.source_system if user.is_integration else None


def _etag_versions(header: str) -> set[int]:
    """The versions named by an If-Match / If-None-Match header ("3", W/"3", 3)."""
    versions = set()
    for tag in header.split(","):
        match = _ETAG_RE.match(tag)
        if match:
            versions.add(int(match.group(1)))
    return versions


def _customer_etag(customer: Customer) -> str:
    return f'"{customer.version}"'


@extend_schema(tags=["customers"])
class CustomerViewSet(
    StrictQueryParams,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Customers: search, read, create and change (with If-Match)."""

    query_serializers = {
        "list": s.CustomerSearchQuerySerializer,
        "timeline": s.TimelineQuerySerializer,
        "changes": s.CustomerChangeQuerySerializer,
    }
    paginated_actions = frozenset({"list", "timeline", "changes"})

    def get_queryset(self) -> QuerySet[Customer]:
        customers = selectors.customers_visible_to(_user(self.request))
        return customers.defer(*selectors.SEARCH_COLUMNS) if self.action == "retrieve" else customers

    def get_serializer_class(self) -> type[BaseSerializer]:
        return s.CustomerListSerializer if self.action == "list" else s.CustomerSerializer

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        customers = selectors.customer_search(queryset=self.get_queryset(), **self.query())
        page = self.paginate_queryset(customers) or []
        _log_reads(request, [c.pk for c in page])
        return self.get_paginated_response(s.CustomerListSerializer(page, many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "If-None-Match",
                str,
                OpenApiParameter.HEADER,
                description="The ETag you hold: 304 without a body when it is still current.",
            ),
            _ETAG_HEADER,
        ],
        responses={
            200: s.CustomerSerializer,
            304: OpenApiResponse(description="The version you hold is current (no body)."),
        },
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """The record with its version as ETag; ``If-None-Match`` with the current
        ETag answers 304 (still a read: the caller shows what it holds)."""
        customer = self.get_object()
        _log_reads(request, [customer.pk])
        etag = _customer_etag(customer)
        if customer.version in _etag_versions(request.headers.get("If-None-Match", "")):
            response = Response(status=status.HTTP_304_NOT_MODIFIED)
        else:
            response = Response(s.CustomerSerializer(customer).data)
        response["ETag"] = etag
        return response

    @extend_schema(
        request=s.CustomerWriteSerializer,
        parameters=[_ETAG_HEADER],
        responses={201: s.CustomerSerializer, 403: _FIELDS_REFUSED},
        description=(
            "Integrations may set identity, contact points and preferences, plus tier, lifetime value, "
            "status and consents where their source's field mapping targets them; agents every field "
            "but tier, lifetime value and status. A field the caller may not set is a 403 naming it."
        ),
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        user = _user(request)
        if not (user.is_integration or user.has_perm("crm.add_customer")):
            raise PermissionDenied("You may not create customers.")
        # Fields the caller may not set are refused (403) before their values are checked.
        field_access.customer_fields_check(user, _fields_sent(request), creating=True)
        incoming = s.CustomerWriteSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        customer = services.customer_create(actor=user, source=_source_of(user), **incoming.validated_data)
        response = Response(s.CustomerSerializer(customer).data, status=status.HTTP_201_CREATED)
        response["ETag"] = _customer_etag(customer)
        return response

    @extend_schema(
        request=s.CustomerWriteSerializer,
        parameters=[
            OpenApiParameter(
                "If-Match",
                str,
                OpenApiParameter.HEADER,
                required=True,
                description='The ETag of your last read, e.g. "3".',
            ),
            _ETAG_HEADER,
        ],
        responses={
            200: s.CustomerSerializer,
            403: _FIELDS_REFUSED,
            412: _STALE_VERSION,
            428: _PRECONDITION_REQUIRED,
        },
        description=(
            "Change some fields. A customer may change their contact points, preferences and "
            "consents; see creating a customer for integrations and staff. A field the caller may "
            "not change is a 403 naming it and saying why."
        ),
    )
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        user = _user(request)
        customer = self.get_object()
        if not (user.is_customer or user.is_integration or user.has_perm("crm.change_customer")):
            raise PermissionDenied("You may not change customers.")
        header = request.headers.get("If-Match")
        if not header:
            raise PreconditionRequired()
        match = _ETAG_RE.match(header)
        if match is None:
            raise PreconditionRequired(f'If-Match {header!r} is not an ETag of this API; send e.g. "3".')
        field_access.customer_fields_check(user, _fields_sent(request))
        incoming = s.CustomerWriteSerializer(data=request.data, partial=True)
        incoming.is_valid(raise_exception=True)
        try:
            customer = services.customer_update(
                customer_id=customer.pk,
                expected_version=int(match.group(1)),
                changes=incoming.validated_data,
                actor=user,
                source=_source_of(user),
            )
        except StaleVersion as exc:
            response = Response(
                {"detail": str(exc), "current_version": exc.current_version},
                status=status.HTTP_412_PRECONDITION_FAILED,
            )
            response["ETag"] = f'"{exc.current_version}"'
            return response
        response = Response(s.CustomerSerializer(customer).data)
        response["ETag"] = _customer_etag(customer)
        return response

    @extend_schema(responses={200: s.InteractionSerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=TimelinePagination)
    def timeline(self, request: Request, pk: str | None = None) -> Response:
        """The customer's whole contact history, newest first (cursor pagination)."""
        customer = self.get_object()
        query = self.query()
        interactions = selectors.customer_timeline(
            customer_id=customer.pk,
            channels=query.get("channel"),
            since=query.get("since"),
            until=query.get("until"),
        )
        page = self.paginate_queryset(interactions)
        _log_reads(request, [customer.pk])
        serializer = (
            s.SelfServiceInteractionSerializer if _user(request).is_customer else s.InteractionSerializer
        )
        return self.get_paginated_response(serializer(page, many=True).data)

    @extend_schema(
        request=s.InteractionCreateSerializer,
        responses={201: s.InteractionSerializer, 200: s.InteractionSerializer, 409: _EXTERNAL_ID_CONFLICT},
    )
    @timeline.mapping.post
    def record_interaction(self, request: Request, pk: str | None = None) -> Response:
        """Record a contact; repeating an external_id from the same source for this
        customer returns the first (200), for another customer is a 409."""
        user = _user(request)
        if not (user.is_integration or user.has_perm("crm.add_interaction")):
            raise PermissionDenied("You may not record contacts.")
        customer = self.get_object()
        incoming = s.InteractionCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        interaction, created = services.interaction_record(
            customer_id=customer.pk,
            source=_source_of(user),
            agent=None if user.is_integration else user,
            actor=user,
            **incoming.validated_data,
        )
        return Response(
            s.InteractionSerializer(interaction).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        responses={
            200: s.CustomerChangeSerializer(many=True),
            403: OpenApiResponse(
                response=s.ErrorSerializer, description="The caller is not a supervisor or an administrator."
            ),
        },
    )
    @action(detail=True, methods=["get"], pagination_class=PageNumberPagination)
    def changes(self, request: Request, pk: str | None = None) -> Response:
        """Who changed which field of the record, when, from what to what: newest
        first. Supervisors and administrators only; reading it is logged as a read
        of the customer."""
        if not _user(request).has_perm(CHANGES_PERMISSION):
            raise PermissionDenied(
                "Only supervisors and administrators may read a customer's change history."
            )
        customer = self.get_object()
        changes = selectors.customer_changes(customer_id=customer.pk, field=self.query().get("field"))
        page = self.paginate_queryset(changes)
        _log_reads(request, [customer.pk])
        return self.get_paginated_response(s.CustomerChangeSerializer(page, many=True).data)

    @extend_schema(responses={200: s.AccountSerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=None)
    def accounts(self, request: Request, pk: str | None = None) -> Response:
        customer = self.get_object()
        accounts = (
            Account.objects.filter(customer=customer).select_related("product").order_by("-opened_on", "-id")
        )
        _log_reads(request, [customer.pk])
        return Response(s.AccountSerializer(accounts, many=True).data)


@extend_schema(tags=["households"])
class HouseholdViewSet(
    StrictQueryParams,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = s.HouseholdSerializer

    def get_queryset(self) -> QuerySet[Household]:
        user = _user(self.request)
        members = selectors.customers_visible_to(user).order_by("sort_name")
        return (
            selectors.households_visible_to(user)
            .prefetch_related(Prefetch("members", queryset=members))
            .order_by("name", "id")
        )

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        household = self.get_object()
        _log_reads(request, [m.pk for m in household.members.all()])
        return Response(self.get_serializer(household).data)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not _user(request).has_perm("crm.add_household"):
            raise PermissionDenied("You may not create households.")
        incoming = s.HouseholdSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = {k: v for k, v in incoming.validated_data.items() if k != "name"}
        household = services.household_create(name=incoming.validated_data["name"], **data)
        return Response(s.HouseholdSerializer(household).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.HouseholdMembershipSerializer, responses={200: s.HouseholdSerializer})
    @action(detail=True, methods=["post"])
    def members(self, request: Request, pk: str | None = None) -> Response:
        """Add a customer to this household (moving them out of any other)."""
        user = _user(request)
        if not user.has_perm("crm.change_household"):
            raise PermissionDenied("You may not change households.")
        household = self.get_object()
        incoming = s.HouseholdMembershipSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        customer = get_object_or_404(
            selectors.customers_visible_to(user), pk=incoming.validated_data["customer"]
        )
        services.household_add_member(
            household_id=household.pk, customer_id=customer.pk, role=incoming.validated_data["role"],
            actor=user,
        )  # fmt: skip
        return Response(self.get_serializer(self.get_queryset().get(pk=household.pk)).data)


@extend_schema(tags=["accounts"])
class AccountViewSet(StrictQueryParams, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.AccountSerializer
    filterset_class = AccountFilter

    def get_queryset(self) -> QuerySet[Account]:
        return selectors.accounts_visible_to(_user(self.request)).order_by("-opened_on", "id")

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        account = self.get_object()
        _log_reads(request, [account.customer_id])
        return Response(self.get_serializer(account).data)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().list(request, *args, **kwargs)
        results = response.data.get("results", []) if isinstance(response.data, dict) else []
        _log_reads(request, [row["customer"] for row in results])
        return response


@extend_schema(tags=["products"])
class ProductViewSet(StrictQueryParams, viewsets.ReadOnlyModelViewSet):
    """The product catalog (changed by administrators in the admin)."""

    serializer_class = s.ProductSerializer
    filterset_class = ProductFilter
    queryset = Product.objects.order_by("name")


@extend_schema(tags=["auth"])
class TokenView(StrictQueryParams, APIView):
    """Exchange a username and password for a bearer token (self-service apps),
    or revoke the token the request carries."""

    permission_classes = [permissions.AllowAny]
    throttle_scope = "token"

    @extend_schema(
        request=s.TokenRequestSerializer,
        responses={
            201: inline_serializer(
                "TokenResponse",
                {
                    "token": serializers.CharField(help_text="The secret, shown this once."),
                    "expires_at": serializers.DateTimeField(
                        help_text="Always set: a staff token lives CRM_STAFF_TOKEN_TTL_HOURS (12 by "
                        "default), a customer's CRM_CUSTOMER_TOKEN_TTL_HOURS (720)."
                    ),
                },
            ),
            401: OpenApiResponse(response=s.ErrorSerializer, description="Wrong username or password."),
            429: OpenApiResponse(
                response=s.ErrorSerializer,
                description="Too many failed log-ins for this account or from this address: even "
                "the right password is refused until the lock ends (see Retry-After).",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        incoming = s.TokenRequestSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        user = authenticate(
            request._request,
            username=incoming.validated_data["username"],
            password=incoming.validated_data["password"],
        )
        if user is None:
            lockout = services.login_lockout_of(request._request)
            if lockout is not None:
                return Response(
                    {"detail": lockout.message},
                    status=status.HTTP_429_TOO_MANY_REQUESTS,
                    headers={"Retry-After": str(lockout.seconds_left())},
                )
            return Response({"detail": "Wrong username or password."}, status=status.HTTP_401_UNAUTHORIZED)
        token, secret = services.api_token_create(user=user, name="password grant")  # type: ignore[arg-type]
        return Response({"token": secret, "expires_at": token.expires_at}, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request) -> Response:
        if not isinstance(request.auth, ApiToken):
            return Response(
                {"detail": "Send the token to revoke in the Authorization header."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        services.api_token_revoke(token_id=request.auth.pk, actor=_user(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["auth"], responses={200: s.MeSerializer})
class MeView(StrictQueryParams, APIView):
    """Who the caller is: staff (with roles), an integration or a customer."""

    def get(self, request: Request) -> Response:
        user = _user(request)
        kind = "customer" if user.is_customer else "integration" if user.is_integration else "staff"
        return Response(
            {
                "username": user.get_username(),
                "kind": kind,
                "roles": sorted(user.roles),
                "customer": user.customer_id,
                "source_system": user.source_system.code if user.source_system else None,
                "time_zone": user.time_zone,
            }
        )
