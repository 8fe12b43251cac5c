"""An administrator's decisions on touchpoint results the workers could not apply:
retry dead-lettered or rejected ones (after fixing a mapping, say), and settle
the review queue (attach to one of the candidates, or create a new customer)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from crm.models import Customer, TouchpointBatch, TouchpointResult, User
from crm.models.choices import ResultStatus
from crm.services.touchpoints import result_map, source_mappings, touchpoint_apply_enqueue

RETRYABLE = (ResultStatus.DEAD, ResultStatus.REJECTED)


def _back_to_pending(queryset: Any, **extra: Any) -> int:
    """Put results back in the queue as new: no attempts, no error, no claim;
    their batches are not complete any more. The apply task is asked on commit."""
    batch_ids = list(queryset.values_list("batch_id", flat=True).distinct())
    count: int = queryset.update(
        status=ResultStatus.PENDING, attempts=0, error=None, claimed_at=None, claimed_by="", **extra
    )
    if count:
        TouchpointBatch.objects.filter(pk__in=batch_ids).update(completed_at=None)
        transaction.on_commit(touchpoint_apply_enqueue)
    return count


def touchpoint_results_retry(*, result_ids: Iterable[int], actor: User | None = None) -> int:
    """Retry dead-lettered and rejected results; others are left as they are.
    Returns how many went back to pending."""
    with transaction.atomic():
        return _back_to_pending(
            TouchpointResult.objects.filter(pk__in=list(result_ids), status__in=RETRYABLE)
        )


def _in_review(result_id: int) -> TouchpointResult:
    result = (
        TouchpointResult.objects.select_for_update()
        .select_related("source_system")
        .filter(pk=result_id)
        .first()
    )
    if result is None or result.status != ResultStatus.REVIEW:
        raise ValidationError({"result": "Only a result waiting for review can be attached or created."})
    return result


def touchpoint_review_attach(
    *, result_id: int, customer_id: int, actor: User | None = None
) -> TouchpointResult:
    """Attach a result in review to one of its candidate customers; it is then
    applied to that customer (and its source key linked to them)."""
    with transaction.atomic():
        result = _in_review(result_id)
        candidates = (result.error or {}).get("candidates") or []
        if customer_id not in candidates:
            raise ValidationError(
                {"customer_id": f"C-{customer_id:07d} is not a candidate of this result: pick one of "
                                f"{', '.join(f'C-{c:07d}' for c in candidates)}, or create a new customer."}
            )  # fmt: skip
        _back_to_pending(TouchpointResult.objects.filter(pk=result.pk), customer_id=customer_id)
    result.refresh_from_db()
    return result


def touchpoint_review_create_new(*, result_id: int, actor: User | None = None) -> TouchpointResult:
    """Settle a result in review as a new customer: created now from the result's
    mapped profile (as from its source), then the result is applied to them."""
    from crm.services.touchpoint_effects import customer_from_mapped  # noqa: PLC0415

    with transaction.atomic():
        result = _in_review(result_id)
        source = result.source_system
        mapped = result_map(
            source=source, record_kind=result.record_kind, payload=result.payload,
            mappings=source_mappings(source),
        )  # fmt: skip
        integration = User.objects.filter(source_system=source).first()
        customer: Customer = customer_from_mapped(mapped, source=source, actor=integration)
        _back_to_pending(TouchpointResult.objects.filter(pk=result.pk), customer_id=customer.pk)
    result.refresh_from_db()
    return result
