"""API v1 for touchpoint systems: send results in batches, follow a batch's progress.

Only a source's own integration user may use its endpoints. A source with a
signing secret must also sign each request: ``X-Signature-Timestamp`` (unix
seconds) and ``X-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">``,
made within 5 minutes and never sent twice.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db.models import Count
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import AuthenticationFailed, ParseError, PermissionDenied, ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crm import json_codec, services
from crm.api import schema as _schema  # noqa: F401  (registers the token scheme)
from crm.api.base import StrictQueryParams
from crm.models import SourceSystem, TouchpointBatch, TouchpointResult, User
from crm.models.choices import BatchOrigin, RecordKind, ResultStatus

SIGNATURE_MAX_AGE = 300  # seconds either side of our clock
REASONS_DEFAULT = 100
REASONS_MAX = 500


# --- Schema ---------------------------------------------------------------------------------


class ResultItemSerializer(serializers.Serializer):
    """One result as a source sends it (documentation only: items are checked one
    by one by the intake service, so that one bad item refuses only itself)."""

    external_id = serializers.CharField(max_length=120, help_text="The source's own id of this result.")
    record_kind = serializers.ChoiceField(choices=RecordKind.choices)
    customer_key = serializers.CharField(
        max_length=120, required=False, allow_blank=True, help_text="The source's own key of the customer."
    )
    sequence = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="The source's order. One customer key's results apply by sequence, then occurred_at, "
        "then arrival; a result without a sequence comes before the numbered ones of its key, and "
        "waits, like every later one, while an earlier one is in the review queue. A profile value "
        "(customer.*, address.*) from a result older in this order than the one that last set it "
        "is not written (the result is applied, with the reason superseded naming it).",
    )
    occurred_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="ISO 8601 with an offset (Z or +02:00); a naive time is refused.",
    )
    payload = serializers.DictField(
        help_text="The source's fields, mapped by its field mappings of this kind."
    )


class BatchProgressQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        min_value=1, max_value=REASONS_MAX, default=REASONS_DEFAULT, required=False,
        help_text=f"How many reasons to list (1-{REASONS_MAX}, default {REASONS_DEFAULT}).",
    )  # fmt: skip


class ResultsRequestSerializer(serializers.Serializer):
    results = ResultItemSerializer(many=True, help_text="1 to 1,000 results.")


class IntakeErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the item in the results list, from 0.")
    external_id = serializers.CharField(allow_null=True)
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))  # type: ignore[assignment]


class BatchReceivedSerializer(serializers.Serializer):
    batch = serializers.IntegerField(help_text="The batch id, for GET .../batches/<id>.")
    submitted = serializers.IntegerField()
    accepted = serializers.IntegerField(help_text="New results stored, to be applied.")
    duplicates = serializers.IntegerField(help_text="Results whose external_id was sent before: kept once.")
    refused = serializers.IntegerField()
    errors = IntakeErrorSerializer(many=True, help_text="Each refused item, by index and field.")  # type: ignore[assignment]


class ResultReasonSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    status = serializers.ChoiceField(choices=ResultStatus.choices)
    error = serializers.DictField(allow_null=True)


class BatchProgressSerializer(serializers.Serializer):
    batch = serializers.IntegerField()
    source = serializers.CharField()  # type: ignore[assignment]
    origin = serializers.ChoiceField(choices=BatchOrigin.choices)
    file_name = serializers.CharField(allow_blank=True)
    received_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True, help_text="Null while results are pending.")
    submitted = serializers.IntegerField()
    received = serializers.IntegerField(help_text="Results stored from this batch.")
    duplicates = serializers.IntegerField()
    refused = serializers.IntegerField(help_text="Items refused at intake (see intake_errors).")
    applied = serializers.IntegerField()
    rejected = serializers.IntegerField()
    review = serializers.IntegerField(help_text="Waiting for an administrator: several customers match.")
    dead_lettered = serializers.IntegerField()
    pending = serializers.IntegerField()
    intake_errors = IntakeErrorSerializer(many=True)
    reasons = ResultReasonSerializer(many=True, help_text="Rejected, review and dead results with why.")
    reasons_truncated = serializers.BooleanField(help_text="More reasons exist than the limit shows.")


def _described(description: str, example: dict[str, Any] | None = None) -> OpenApiResponse:
    return OpenApiResponse(
        response=OpenApiTypes.OBJECT,
        description=description,
        examples=[OpenApiExample("example", value=example)] if example else None,
    )


_401 = _described(
    "No or a bad token; or, for a source with a signing secret, a missing, malformed, wrong, "
    "expired (over 5 minutes) or replayed signature. The detail says which.",
    {"detail": "The signature timestamp is 612 s from our clock: sign with the current time."},
)
_403 = _described("The token is not the integration user of this source system.")
_404 = _described("No active source system has this code, or (GET) the batch is not this source's.")
_400_QUERY = _described(
    "An unknown query parameter, or a limit that is not a whole number from 1 to 500.",
    {"unknown": ["Unknown query parameter: this operation reads limit."]},
)


# --- Helpers ---------------------------------------------------------------------------------


def _source_for(request: Request, code: str) -> SourceSystem:
    source = get_object_or_404(SourceSystem, code=code, active=True)
    user: User = request.user  # type: ignore[assignment]
    if user.source_system_id != source.pk:
        raise PermissionDenied(
            f"Only the integration user of the source system “{code}” may use this endpoint."
        )
    return source


def signature_check(*, source: SourceSystem, timestamp: str, signature: str, body: bytes, now: float) -> None:
    """Refuse (401) a request from a source with a signing secret unless it is signed
    with that secret over ``f"{timestamp}.{body}"``, made within 5 minutes, and
    its signature was never seen before (remembered in PostgreSQL, so a Redis
    restart does not open a window for replays)."""
    if not source.signing_secret:
        return
    if not timestamp or not signature:
        raise AuthenticationFailed(
            f"{source.code} signs its requests: send X-Signature-Timestamp (unix seconds) and "
            'X-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">.'
        )
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise AuthenticationFailed("X-Signature-Timestamp must be unix seconds, e.g. 1767225600.") from None
    if abs(now - sent_at) > SIGNATURE_MAX_AGE:
        raise AuthenticationFailed(
            f"The signature timestamp is {abs(int(now) - sent_at)} s from our clock (at most "
            f"{SIGNATURE_MAX_AGE} s): sign each request when you send it, with a synchronised clock."
        )
    scheme, _, digest = signature.partition("=")
    if scheme != "sha256" or not digest:
        raise AuthenticationFailed("X-Signature must read sha256=<hex digest>.")
    expected = hmac.new(
        source.signing_secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, digest.strip().lower()):
        raise AuthenticationFailed(
            "The signature does not match: sign the exact bytes of the body with the source's secret."
        )
    if not services.touchpoint_signature_remember(source=source, digest=digest.strip().lower()):
        raise AuthenticationFailed("This signature was used before: sign each request anew (a replay).")


# --- Views -----------------------------------------------------------------------------------


@extend_schema(tags=["touchpoints"])
class TouchpointResultsView(StrictQueryParams, APIView):
    """A source system's batch of results (interactions, profile changes,
    purchases, accounts, events), stored durably before the answer and applied
    by workers within seconds."""

    throttle_scope = "touchpoints"
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="touchpoint_results_send",
        request=ResultsRequestSerializer,
        parameters=[
            OpenApiParameter(
                "X-Signature-Timestamp",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="Unix seconds; required when the source has a signing secret.",
            ),
            OpenApiParameter(
                "X-Signature",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description='sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">; required '
                "when the source has a signing secret.",
            ),
        ],
        responses={
            202: OpenApiResponse(
                BatchReceivedSerializer,
                description="Stored (durably, in PostgreSQL) and queued. Sent even when some or all "
                "items were refused: check refused and errors, fix those items and send them again.",
            ),
            400: _described(
                "The body is not JSON, has no results list, holds no result or more than 1,000, or "
                "an unknown query parameter was given. Nothing was stored.",
                {"results": ["1200 results in one batch: send at most 1000 per batch."]},
            ),
            401: _401,
            403: _403,
            404: _404,
            413: _described(
                "The body is larger than the server accepts (DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MB by "
                "default): send fewer results per batch."
            ),
            429: _described("Too many requests from this source: wait as Retry-After says."),
        },
    )
    def post(self, request: Request, source_code: str) -> Response:
        source = _source_for(request, source_code)
        try:
            body = request.body
        except RequestDataTooBig:
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            return Response(
                {"detail": f"The body is larger than {limit:,} bytes: send fewer results per batch."},
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        signature_check(
            source=source, timestamp=request.headers.get("X-Signature-Timestamp", ""),
            signature=request.headers.get("X-Signature", ""), body=body, now=time.time(),
        )  # fmt: skip
        try:
            data = json_codec.loads(body) if body else None
        except ValueError as exc:
            raise ParseError(f"The body is not JSON: {exc}.") from None
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise ValidationError({"results": ['Send {"results": [ ... ]}, a list of 1 to 1,000 results.']})
        batch = services.touchpoint_batch_receive(
            source=source, items=data["results"], origin=BatchOrigin.API, actor=cast("User", request.user)
        )
        return Response(
            {
                "batch": batch.pk,
                "submitted": batch.submitted,
                "accepted": batch.accepted,
                "duplicates": batch.duplicates,
                "refused": batch.refused,
                "errors": batch.intake_errors,
            },
            status=status.HTTP_202_ACCEPTED,
        )


@extend_schema(tags=["touchpoints"])
class TouchpointBatchView(StrictQueryParams, APIView):
    """How far a batch got: counts by state and why results were not applied."""

    query_serializers = {"get": BatchProgressQuerySerializer}

    @extend_schema(
        operation_id="touchpoint_batch_progress",
        responses={
            200: OpenApiResponse(
                BatchProgressSerializer,
                description="The batch's counts by state (pending falls to 0 as workers apply it; "
                "completed_at is set then), with why results were rejected, wait for review or "
                "were dead-lettered.",
            ),
            400: _400_QUERY,
            401: _401,
            403: _403,
            404: _404,
        },
    )
    def get(self, request: Request, source_code: str, batch_id: int) -> Response:
        limit: int = self.query()["limit"]
        source = _source_for(request, source_code)
        batch = get_object_or_404(TouchpointBatch, pk=batch_id, source_system=source)
        counts = dict(
            TouchpointResult.objects.filter(batch=batch)
            .order_by()
            .values("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
        unapplied = [ResultStatus.REJECTED, ResultStatus.REVIEW, ResultStatus.DEAD]
        reasons = list(
            TouchpointResult.objects.filter(batch=batch, status__in=unapplied)
            .order_by("id")
            .values("external_id", "status", "error")[: limit + 1]
        )
        return Response(
            {
                "batch": batch.pk,
                "source": source.code,
                "origin": batch.origin,
                "file_name": batch.file_name,
                "received_at": batch.received_at,
                "completed_at": batch.completed_at,
                "submitted": batch.submitted,
                "received": batch.accepted,
                "duplicates": batch.duplicates,
                "refused": batch.refused,
                "applied": counts.get(ResultStatus.APPLIED, 0),
                "rejected": counts.get(ResultStatus.REJECTED, 0),
                "review": counts.get(ResultStatus.REVIEW, 0),
                "dead_lettered": counts.get(ResultStatus.DEAD, 0),
                "pending": counts.get(ResultStatus.PENDING, 0),
                "intake_errors": batch.intake_errors,
                "reasons": reasons[:limit],
                "reasons_truncated": len(reasons) > limit,
            }
        )
