"""Source systems and how their records and fields map onto the common definitions."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from crm.models.choices import RecordKind, SourceKind
from crm.models.holdings import code_validator
from crm.validation import validate_time_zone


class SourceSystem(models.Model):
    """A touchpoint or back-office system that sends results in (web, IVR, dialer, ...)."""

    code = models.CharField(max_length=40, unique=True, validators=[code_validator])
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=12, choices=SourceKind.choices)
    active = models.BooleanField(default=True)
    signing_secret = models.CharField(
        max_length=128,
        blank=True,
        help_text="When set, every result this source sends must carry an HMAC-SHA256 signature "
        "made with this secret; unsigned requests are refused.",
    )
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_time_zone],
        help_text="The zone of the source's dates and times that carry no offset (IANA name).",
    )
    phone_region = models.CharField(
        max_length=2,
        blank=True,
        help_text="How this source's phone numbers without a country code are read (e.g. US); "
        "empty: the CRM's default region.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SourceRecord(models.Model):
    """Which external key in which source system is which customer."""

    source_system = models.ForeignKey(SourceSystem, on_delete=models.PROTECT, related_name="records")
    external_key = models.CharField(max_length=120)
    customer = models.ForeignKey("crm.Customer", on_delete=models.CASCADE, related_name="source_records")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_seen_at = models.DateTimeField(default=timezone.now)
    profile_orders = models.JSONField(
        null=True,
        blank=True,
        help_text="Per profile target (customer.tier, address.city, ...), where in the source's order "
        "the result that last set it stands: [sequence, occurred_at, result id]. A result older than "
        "that leaves the target as it is.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source_system", "external_key"], name="sourcerecord_unique_key_per_source"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source_system_id}:{self.external_key}"


class FieldMapping(models.Model):
    """How one field of a source's records maps onto a common definition.

    ``target`` and ``transform`` are checked against the registries in
    ``crm.mapping`` when the mapping is saved, never at import time.
    """

    source_system = models.ForeignKey(SourceSystem, on_delete=models.CASCADE, related_name="mappings")
    record_kind = models.CharField(max_length=12, choices=RecordKind.choices, default=RecordKind.CUSTOMER)
    source_field = models.CharField(max_length=120)
    target = models.CharField(max_length=60, help_text="e.g. customer.family_name, interaction.channel")
    transform = models.CharField(max_length=30, default="text")
    transform_args = models.JSONField(default=dict, blank=True)
    required = models.BooleanField(default=False)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["source_system", "record_kind", "position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["source_system", "record_kind", "target"],
                name="fieldmapping_one_source_field_per_kind_and_target",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source_field} → {self.target} ({self.transform})"

    def clean(self) -> None:
        from crm.mapping import validate_mapping  # noqa: PLC0415  (mapping imports models)

        validate_mapping(self.target, self.transform, self.transform_args)
