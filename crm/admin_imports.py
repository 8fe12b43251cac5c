"""Administrators' pages for legacy file imports and for trying a source's mappings.

- File imports (admin, File imports, "Import CSV files"): choose the source
  system, upload up to three CSV files each with its record kind; the files are
  kept under CRM_IMPORT_DIR and read by a Celery task; the job's page polls a
  small progress partial every second, then links the rejected-rows report.
- "Try the mappings" on a source system's page: paste a sample record and see
  the mapped result or each error by source field; nothing is saved.

Both are for the administrator role only (administrators hold every crm
permission; supervisors can look at mappings but change nothing here).
"""

from __future__ import annotations

import csv
import shutil
import uuid
from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.text import get_valid_filename

from crm import services
from crm.admin import FieldMappingInline, SourceSystemAdmin
from crm.mapping_preview import mapping_preview
from crm.models import FileImport, SourceSystem
from crm.models.choices import RecordKind, SourceKind
from crm.services.imports import FileSpec

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
# Three slots cover the usual legacy export: customers, accounts, history.
UPLOAD_SLOTS = ((1, RecordKind.CUSTOMER), (2, RecordKind.ACCOUNT), (3, RecordKind.INTERACTION))


def is_administrator(user: Any) -> bool:
    return bool(user.is_active and (user.is_superuser or (user.is_staff and "administrator" in user.roles)))


class AdministratorOnly:
    """Every page of the admin class, for the administrator role only."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_administrator(request.user) and super().has_module_permission(request)  # type: ignore[misc]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_administrator(request.user) and super().has_view_permission(request, obj)  # type: ignore[misc]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_administrator(request.user) and super().has_add_permission(request)  # type: ignore[misc]


# --- Uploading files --------------------------------------------------------------------------


class ImportUploadForm(forms.Form):
    source_system = forms.ModelChoiceField(
        queryset=SourceSystem.objects.filter(active=True).exclude(kind=SourceKind.CRM).order_by("name"),
        empty_label="Choose the system the files come from",
        error_messages={
            "required": "Choose the source system the files come from.",
            "invalid_choice": "That source system does not exist or is deactivated: choose one from "
            "the list.",
        },
    )
    file_1 = forms.FileField(required=False, label="File")
    kind_1 = forms.ChoiceField(choices=RecordKind.choices, initial=RecordKind.CUSTOMER, label="Its records")
    file_2 = forms.FileField(required=False, label="File")
    kind_2 = forms.ChoiceField(choices=RecordKind.choices, initial=RecordKind.ACCOUNT, label="Its records")
    file_3 = forms.FileField(required=False, label="File")
    kind_3 = forms.ChoiceField(
        choices=RecordKind.choices, initial=RecordKind.INTERACTION, label="Its records"
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        chosen = [n for n, _ in UPLOAD_SLOTS if cleaned.get(f"file_{n}")]
        if not chosen:
            self.add_error(None, ValidationError("Choose at least one CSV file to import.", code="no_file"))
        for n in chosen:
            name = cleaned[f"file_{n}"].name
            if not name.lower().endswith(CSV_SUFFIXES):
                self.add_error(
                    f"file_{n}",
                    f"{name} is not a CSV file: export it as .csv (comma- or semicolon-separated).",
                )
        return cleaned

    def slots(self) -> list[tuple[forms.BoundField, forms.BoundField]]:
        return [(self[f"file_{n}"], self[f"kind_{n}"]) for n, _ in UPLOAD_SLOTS]


def uploads_save(files: list[tuple[str, Any]]) -> tuple[Path, list[FileSpec]]:
    """Keep the uploaded files on disk for the worker (each job in its own folder)."""
    folder = Path(settings.CRM_IMPORT_DIR) / uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=False)
    specs = []
    for n, (kind, upload) in enumerate(files, start=1):
        name = get_valid_filename(Path(upload.name).name) or f"file-{n}.csv"
        target = folder / f"{n}-{name}"
        if hasattr(upload, "temporary_file_path"):
            # A large upload is already on disk (FILE_UPLOAD_TEMP_DIR): move it, not copy it.
            shutil.move(upload.temporary_file_path(), target)
        else:
            with target.open("wb") as out:
                for chunk in upload.chunks():
                    out.write(chunk)
        specs.append(FileSpec(kind, name, str(target)))
    return folder, specs


def progress_context(job: FileImport) -> dict[str, Any]:
    """The job and its files, with the row figures summed from the files: they
    are one query, so the totals agree with the files table even when a chunk
    commits between the job's query and theirs (every second or so)."""
    files = list(job.files.all())
    totals = {name: sum(getattr(f, name) for f in files)
              for name in ("rows_read", "accepted", "duplicates", "refused")}  # fmt: skip
    return {"job": job, "files": files, "totals": totals}


@admin.register(FileImport)
class FileImportAdmin(AdministratorOnly, admin.ModelAdmin):
    list_display = ["id", "source_system", "status", "file_names", "figures", "created_at"]
    # No filter sidebar: the list is short, and the figures need its width.
    list_select_related = ["source_system", "created_by"]
    ordering = ["-created_at", "-id"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # written by the import alone

    @admin.display(description="Files")
    def file_names(self, job: FileImport) -> str:
        return ", ".join(f.name for f in job.files.all())

    @admin.display(description="Rows read · stored · refused")
    def figures(self, job: FileImport) -> str:
        return f"{job.rows_read:,} · {job.accepted:,} · {job.refused:,}"

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("files")

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("<int:job_id>/progress/", view(self.progress_view), name="crm_fileimport_progress"),
            path("<int:job_id>/report.csv", view(self.report_view), name="crm_fileimport_report"),
            *super().get_urls(),
        ]

    def _job(self, request: HttpRequest, job_id: Any) -> FileImport:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(FileImport.objects.select_related("source_system", "created_by"), pk=job_id)

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ImportUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            job = self._start(request, form)
            if job is not None:
                return HttpResponseRedirect(reverse("admin:crm_fileimport_change", args=[job.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import CSV files",
            "opts": self.model._meta,
            "form": form,
            "recent": FileImport.objects.select_related("source_system").order_by("-created_at")[:5],
        }
        return TemplateResponse(request, "admin/crm/fileimport/upload.html", context)

    def _start(self, request: HttpRequest, form: ImportUploadForm) -> FileImport | None:
        files = [(form.cleaned_data[f"kind_{n}"], form.cleaned_data[f"file_{n}"]) for n, _ in UPLOAD_SLOTS
                 if form.cleaned_data.get(f"file_{n}")]  # fmt: skip
        folder, specs = uploads_save(files)
        try:
            return services.file_import_create(
                source=form.cleaned_data["source_system"],
                files=specs,
                actor=request.user,  # type: ignore[arg-type]
            )
        except ValidationError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            for message in exc.messages:
                form.add_error(None, message)
            return None

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        job = self._job(request, object_id)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Import {job.pk}: {job.source_system.name}",
            "opts": self.model._meta,
            "original": job,
            **progress_context(job),
        }
        return TemplateResponse(request, "admin/crm/fileimport/progress.html", context)

    def progress_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        job = self._job(request, job_id)
        return TemplateResponse(request, "admin/crm/fileimport/_progress.html", progress_context(job))

    def report_view(self, request: HttpRequest, job_id: int) -> StreamingHttpResponse:
        job = self._job(request, job_id)

        class Echo:
            def write(self, value: str) -> str:
                return value

        writer = csv.writer(Echo())
        rows = (writer.writerow(row) for row in services.file_import_report_rows(job=job))
        response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="import-{job.pk}-rejected-rows.csv"'
        return response


# --- Trying the mappings ----------------------------------------------------------------------


class MappingPreviewForm(forms.Form):
    record_kind = forms.ChoiceField(choices=RecordKind.choices, label="Record kind")
    sample = forms.CharField(
        widget=forms.Textarea(
            attrs={"rows": 8, "cols": 90, "spellcheck": "false", "class": "vLargeTextField"}
        ),
        label="Sample record",
        help_text="One record as the source sends it: a JSON object, or a CSV header line and one row.",
    )


class CompactFieldMappingInline(FieldMappingInline):
    # A source has dozens of mappings; the default JSON textarea made each row ten lines tall.
    formfield_overrides = {
        models.JSONField: {"widget": forms.Textarea(attrs={"rows": 1, "cols": 36, "class": "mapping-args"})}
    }


class SourceSystemWithTools(SourceSystemAdmin):
    """The source system's admin, with "Try the mappings" beside History."""

    change_form_template = "admin/crm/sourcesystem/change_form.html"
    inlines = [CompactFieldMappingInline]

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("<int:source_id>/try-mappings/", view(self.try_mappings_view),
                 name="crm_sourcesystem_try_mappings"),
            *super().get_urls(),
        ]  # fmt: skip

    def try_mappings_view(self, request: HttpRequest, source_id: int) -> HttpResponse:
        if not is_administrator(request.user):
            raise PermissionDenied
        source = get_object_or_404(SourceSystem, pk=source_id)
        kinds = list(source.mappings.order_by("record_kind").values_list("record_kind", flat=True).distinct())
        initial = {"record_kind": kinds[0] if kinds else RecordKind.CUSTOMER}
        form = MappingPreviewForm(request.POST or None, initial=initial)
        preview = None
        if request.method == "POST" and form.is_valid():
            try:
                preview = mapping_preview(
                    source=source,
                    record_kind=form.cleaned_data["record_kind"],
                    sample=form.cleaned_data["sample"],
                )
            except ValidationError as exc:
                for message in exc.messages:
                    form.add_error("sample", message)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Try the mappings of {source.name}",
            "opts": self.model._meta,
            "original": source,
            "source": source,
            "form": form,
            "preview": preview,
            "mapped_kinds": [RecordKind(k).label for k in kinds if k in RecordKind.values],
            "default_region": settings.CRM_DEFAULT_PHONE_REGION,
        }
        return TemplateResponse(request, "admin/crm/sourcesystem/try_mappings.html", context)


admin.site.unregister(SourceSystem)
admin.site.register(SourceSystem, SourceSystemWithTools)

__all__ = ["FileImportAdmin", "SourceSystemWithTools", "is_administrator"]
