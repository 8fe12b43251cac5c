"""Source systems: this CRM's own, the touchpoints' integration users, and
which external key in which system is which customer."""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from crm.bulk_sql import text_any
from crm.models import SourceRecord, SourceSystem, User

CRM_SOURCE_CODE = "crm"


def crm_source() -> SourceSystem:
    """The source system that stands for this CRM's own screens and API."""
    return SourceSystem.objects.get(code=CRM_SOURCE_CODE)


def source_system_create(*, code: str, name: str, kind: str) -> SourceSystem:
    """A source system and the integration user its tokens belong to."""
    source = SourceSystem(code=code, name=name, kind=kind)
    source.full_clean()
    with transaction.atomic():
        source.save()
        user = User(username=f"integration-{code}", source_system=source)
        user.set_unusable_password()
        user.save()
    return source


# --- Source records ------------------------------------------------------------------


def source_record_link(
    *, source: SourceSystem, external_key: str, customer_id: int, seen_at: dt.datetime | None = None
) -> tuple[SourceRecord, bool]:
    """Say that ``external_key`` in ``source`` is this customer.

    Repeating a link refreshes ``last_seen_at``; pointing a key that already
    names another customer at this one is refused: re-keying is a merge, which
    must be decided, not slipped in by a feed."""
    key = (external_key or "").strip()
    if not key or len(key) > 120:
        raise ValidationError({"external_key": "Give the source's key for the customer (1-120 characters)."})
    moment = seen_at or timezone.now()
    with transaction.atomic():
        # Locks the key's row if it exists, so two feeds linking one key agree.
        record = (
            SourceRecord.objects.select_for_update().filter(source_system=source, external_key=key).first()
        )
        if record is None:
            try:
                with transaction.atomic():
                    record = SourceRecord.objects.create(
                        source_system=source, external_key=key, customer_id=customer_id, last_seen_at=moment
                    )
                return record, True
            except IntegrityError:
                record = SourceRecord.objects.select_for_update().get(source_system=source, external_key=key)
        if record.customer_id != customer_id:
            raise ValidationError(
                {"external_key": f"{source.code}:{key} already names customer C-{record.customer_id:07d}; "
                                 "merge the two records instead of re-keying."}
            )  # fmt: skip
        if moment > record.last_seen_at:
            record.last_seen_at = moment
            record.save(update_fields=["last_seen_at"])
    return record, False


def source_records_seen(*, source: SourceSystem, keys: list[str], seen_at: dt.datetime | None = None) -> int:
    """Refresh ``last_seen_at`` of these keys of ``source`` in one statement, at most
    once a day per key: a busy feed must not rewrite a row per result it sends."""
    moment = seen_at or timezone.now()
    wanted = sorted({k for k in keys if k})
    if not wanted:
        return 0
    return SourceRecord.objects.filter(
        text_any("external_key", wanted), source_system=source, last_seen_at__lt=moment - dt.timedelta(days=1)
    ).update(last_seen_at=moment)
