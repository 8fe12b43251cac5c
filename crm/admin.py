"""Django admin for reference data and users. The customer record itself is
edited through the desktop and the API (services, version checks, events)."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from crm import services
from crm.api.pagination import CappedCountPaginator
from crm.models import (
    AccessLogEntry,
    ApiToken,
    CustomerChange,
    FieldMapping,
    LoginLockout,
    Product,
    SourceRecord,
    SourceSystem,
    TouchpointBatch,
    TouchpointResult,
    User,
)
from crm.models.choices import ResultStatus

admin.site.site_header = "Contact Center CRM administration"
admin.site.site_title = "CRM admin"
admin.site.index_title = "Reference data and users"


class AdminLoginForm(AdminAuthenticationForm):
    """The admin's log-in form, saying so when failed log-ins have locked the
    account or address (the lock refuses even the right password)."""

    def get_invalid_login_error(self) -> ValidationError:
        lockout = services.login_lockout_of(self.request) if self.request is not None else None
        if lockout is not None:
            return ValidationError(lockout.message, code="locked_out")
        return super().get_invalid_login_error()


admin.site.login_form = AdminLoginForm


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "category", "active"]
    list_filter = ["category", "active"]
    search_fields = ["name", "code"]


class FieldMappingInline(admin.TabularInline):
    model = FieldMapping
    extra = 0
    fields = ["record_kind", "position", "source_field", "target", "transform", "transform_args", "required"]


@admin.register(SourceSystem)
class SourceSystemAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "kind", "active", "created_at"]
    list_filter = ["kind", "active"]
    search_fields = ["name", "code"]
    inlines = [FieldMappingInline]
    actions = ["issue_token"]

    def save_model(self, request: HttpRequest, obj: SourceSystem, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        # A new source system gets its integration user through the service.
        created = services.source_system_create(code=obj.code, name=obj.name, kind=obj.kind)
        obj.pk = created.pk
        obj.created_at = created.created_at

    @admin.action(description="Issue a new API token (shown once)")
    def issue_token(self, request: HttpRequest, queryset: Any) -> None:
        for source in queryset:
            user = User.objects.filter(source_system=source).first()
            if user is None:
                self.message_user(request, f"{source.name} has no integration user.", messages.ERROR)
                continue
            _, secret = services.api_token_create(user=user, name=f"admin: {request.user}")
            self.message_user(
                request, f"Token for {source.name} (copy it now, it is not shown again): {secret}",
                messages.WARNING,
            )  # fmt: skip


@admin.register(SourceRecord)
class SourceRecordAdmin(admin.ModelAdmin):
    list_display = ["source_system", "external_key", "customer_id", "last_seen_at"]
    list_filter = ["source_system"]
    search_fields = ["external_key"]
    raw_id_fields = ["customer"]
    # The apply workers' bookkeeping of which result last set each profile value.
    readonly_fields = ["profile_orders"]


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ["username", "first_name", "last_name", "kind", "is_active", "last_login"]
    list_filter = ["groups", "is_active", "is_staff"]
    fieldsets = (
        *BaseUserAdmin.fieldsets,  # type: ignore[misc]
        ("Contact center", {"fields": ("time_zone", "customer", "source_system")}),
    )
    raw_id_fields = ["customer"]

    @admin.display(description="Kind")
    def kind(self, user: User) -> str:
        if user.is_customer:
            return "self-service customer"
        if user.is_integration:
            return "integration"
        return ", ".join(sorted(user.roles)) or "no role"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued through the API or `manage.py` and only their digests
    are stored, so here they can be looked at and revoked, never read."""

    list_display = ["name", "user", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    readonly_fields = ["user", "name", "prefix", "digest", "created_at", "expires_at", "last_used_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        revoked = services.api_tokens_revoke(
            token_ids=list(queryset.values_list("pk", flat=True)), actor=cast("User", request.user)
        )
        self.message_user(request, f"Revoked {revoked} token(s).")


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Rows written by services alone (and kept by the database): the admin only
    shows them. The other apps' audit and decision rows use it too."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AccessLogEntry)
class AccessLogAdmin(ReadOnlyAdmin):
    """Billions of rows in monthly partitions: the list never counts them all
    (a capped count, no "show all"), and offers no date drill-down, whose
    first/last-date query no index of this table serves. Narrow by customer
    id or user name instead, which the indexes do serve."""

    list_display = ["at", "user", "customer_id", "channel", "path"]
    list_filter = ["channel"]
    search_fields = ["=customer_id", "user__username"]
    list_select_related = ["user"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    ordering = ["-at"]


@admin.register(LoginLockout)
class LoginLockoutAdmin(ReadOnlyAdmin):
    """Written by the log-in guard only; read here, never edited."""

    list_display = ["at", "scope", "username", "client_address", "attempts", "locked_until", "entry_point"]
    list_filter = ["scope", "entry_point"]
    search_fields = ["username", "client_address"]
    date_hierarchy = "at"


@admin.register(CustomerChange)
class CustomerChangeAdmin(ReadOnlyAdmin):
    """The change history of customer records, to look at: rows are written by
    crm.services with each change and never edited (the database refuses)."""

    list_display = [
        "at",
        "customer_id",
        "field",
        "version",
        "old_value",
        "new_value",
        "actor",
        "source_system",
    ]
    # One customer's history: ?customer__id__exact=<id>, or search for the id.
    list_filter = ["field", "source_system"]
    search_fields = ["=customer__id", "actor__username"]
    list_select_related = ["actor", "source_system"]
    date_hierarchy = "at"
    ordering = ["-at", "-id"]

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        return lookup in ("customer__id__exact", "customer_id__exact") or super().lookup_allowed(
            lookup, value, request
        )


# --- Touchpoint inbox -----------------------------------------------------------------------


@admin.register(TouchpointBatch)
class TouchpointBatchAdmin(ReadOnlyAdmin):
    """Batches as sources sent them, with what intake refused and why."""

    list_display = ["id", "source_system", "origin", "file_name", "received_at", "submitted", "accepted",
                    "duplicates", "refused", "completed_at"]  # fmt: skip
    list_filter = ["source_system", "origin"]
    list_select_related = ["source_system"]
    search_fields = ["=id", "file_name"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    ordering = ["-received_at", "-id"]


class TouchpointResultActionForm(ActionForm):
    customer_id = forms.IntegerField(
        required=False, label="Customer id (to attach to)",
        help_text="For “attach to customer”: one of the candidates shown in the result's error.",
    )  # fmt: skip


@admin.register(TouchpointResult)
class TouchpointResultAdmin(ReadOnlyAdmin):
    """Every result and where it stands. Dead-lettered and rejected ones show their
    error: fix the mapping (Source systems) and retry them. Results in review
    list their candidate customers: attach one, or create a new customer."""

    list_display = ["id", "source_system", "external_id", "record_kind", "customer_key", "status", "attempts",
                    "customer_id", "received_at", "applied_at", "error"]  # fmt: skip
    list_filter = ["status", "source_system", "record_kind"]
    list_select_related = ["source_system"]
    search_fields = ["=external_id", "=customer_key", "=batch__id"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    ordering = ["-received_at", "-id"]
    action_form = TouchpointResultActionForm
    actions = ["retry", "attach_to_customer", "create_new_customer"]

    @admin.action(description="Retry (dead-lettered or rejected results)")
    def retry(self, request: HttpRequest, queryset: Any) -> None:
        count = services.touchpoint_results_retry(
            result_ids=queryset.values_list("pk", flat=True), actor=cast("User", request.user)
        )
        self.message_user(request, f"{count} result(s) back in the queue; others were not dead or rejected.")

    @admin.action(description="Review: attach to the customer id given above")
    def attach_to_customer(self, request: HttpRequest, queryset: Any) -> None:
        raw = request.POST.get("customer_id", "")
        if not raw.isdigit():
            self.message_user(
                request, "Give the id of one of the candidates in “Customer id”.", messages.ERROR
            )
            return
        self._each_in_review(
            request, queryset, lambda pk: services.touchpoint_review_attach(
                result_id=pk, customer_id=int(raw), actor=cast("User", request.user)),
        )  # fmt: skip

    @admin.action(description="Review: create a new customer from the result")
    def create_new_customer(self, request: HttpRequest, queryset: Any) -> None:
        self._each_in_review(
            request, queryset,
            lambda pk: services.touchpoint_review_create_new(result_id=pk, actor=cast("User", request.user)),
        )  # fmt: skip

    def _each_in_review(self, request: HttpRequest, queryset: Any, decide: Any) -> None:
        done = 0
        for pk in queryset.filter(status=ResultStatus.REVIEW).values_list("pk", flat=True):
            try:
                decide(pk)
                done += 1
            except ValidationError as exc:
                self.message_user(request, f"Result {pk}: {' '.join(exc.messages)}", messages.ERROR)
        self.message_user(request, f"{done} result(s) settled and queued to apply.")


# --- File imports and "Try the mappings" (crm.admin_imports) ---------------------------------
# Registered from their own module; it extends SourceSystemAdmin, so it comes last.
from crm import admin_imports  # noqa: E402, F401
