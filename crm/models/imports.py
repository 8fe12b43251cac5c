"""Legacy file imports: CSV files read into the touchpoint inbox with the source's mappings.

A job holds one or more files (customers, accounts, history), each read in
chunks that go through the same intake as the API. Progress and the rows a
chunk refused are written in the chunk's own transaction, so a job taken over
after a lost worker resumes at the first row not yet stored, and its counts
and report never count a row twice.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from crm.models.choices import RecordKind


class ImportStatus(models.TextChoices):
    QUEUED = "queued", "Waiting for a worker"
    RUNNING = "running", "Reading"
    DONE = "done", "Done"
    FAILED = "failed", "Stopped with an error"


class FileImport(models.Model):
    """One import of CSV files for a source system, with its progress."""

    source_system = models.ForeignKey("crm.SourceSystem", on_delete=models.PROTECT, related_name="imports")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=8, choices=ImportStatus.choices, default=ImportStatus.QUEUED)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Who is reading it, and when it last showed signs of life: a worker takes a
    # job over only when the one before it has gone quiet (crm.services.imports).
    claimed_by = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Why the import stopped, when it did.")
    rows_read = models.PositiveBigIntegerField(default=0)
    accepted = models.PositiveBigIntegerField(default=0, help_text="Rows stored in the inbox (new ones).")
    duplicates = models.PositiveBigIntegerField(
        default=0, help_text="Rows stored by an earlier import or API call: not stored again."
    )
    refused = models.PositiveBigIntegerField(default=0)
    bytes_read = models.PositiveBigIntegerField(default=0)
    bytes_total = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "file import"

    def __str__(self) -> str:
        return f"import {self.pk} for {self.source_system_id}"

    @property
    def percent(self) -> int:
        if self.status == ImportStatus.DONE:
            return 100
        if not self.bytes_total:
            return 0
        return min(99, int(100 * self.bytes_read / self.bytes_total))

    @property
    def finished(self) -> bool:
        return self.status in (ImportStatus.DONE, ImportStatus.FAILED)


class ImportFile(models.Model):
    """One CSV file of an import, with the record kind its rows are."""

    job = models.ForeignKey(FileImport, on_delete=models.CASCADE, related_name="files")
    position = models.PositiveSmallIntegerField(default=0, help_text="Files are read in this order.")
    record_kind = models.CharField(max_length=12, choices=RecordKind.choices)
    name = models.CharField(max_length=255, help_text="The file's name as given (ids are made from it).")
    path = models.CharField(max_length=1024, help_text="Where the file is read from.")
    size = models.PositiveBigIntegerField(default=0)
    # The last line whose row is stored (or refused): a resumed job skips up to it.
    lines_done = models.PositiveBigIntegerField(default=0)
    rows_read = models.PositiveBigIntegerField(default=0)
    accepted = models.PositiveBigIntegerField(default=0)
    duplicates = models.PositiveBigIntegerField(default=0)
    refused = models.PositiveBigIntegerField(default=0)
    bytes_read = models.PositiveBigIntegerField(default=0)
    done = models.BooleanField(default=False)

    class Meta:
        ordering = ["job", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "position"], name="importfile_one_file_per_position"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.record_kind})"


class ImportRejection(models.Model):
    """A row an import refused: where it is and what to fix. The rejected-rows report."""

    job = models.ForeignKey(FileImport, on_delete=models.CASCADE, related_name="rejections")
    file = models.ForeignKey(ImportFile, on_delete=models.CASCADE, related_name="rejections")
    line = models.PositiveBigIntegerField()
    field = models.CharField(max_length=255)
    reason = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["job", "file", "line"], name="importrejection_report_order")]

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}"
