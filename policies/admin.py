"""Django admin for offers and policies until the supervisor pages exist: every
save goes through the same checks as the services (condition, actions), and
decisions are read-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone

from crm.admin import ReadOnlyAdmin
from policies import engine, services
from policies.models import Decision, Offer, OfferPresentation, Policy


class PolicyForm(forms.ModelForm):
    class Meta:
        model = Policy
        fields = ["name", "description", "trigger_types", "condition", "actions", "priority", "active_from",
                  "active_until", "status", "holdout_percent"]  # fmt: skip

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        candidate = Policy(**{k: v for k, v in cleaned.items() if k in self.Meta.fields})
        try:
            services.policy_validate(candidate)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, messages)
        return cleaned


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    form = PolicyForm
    list_display = ["name", "status", "priority", "holdout_percent", "version", "updated_at"]
    list_filter = ["status"]
    search_fields = ["name"]

    def save_model(self, request: HttpRequest, obj: Policy, form: Any, change: bool) -> None:
        if change:
            obj.version += 1
        else:
            obj.created_by = request.user  # type: ignore[assignment]
        obj.updated_by = request.user  # type: ignore[assignment]
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)
        engine.index_changed_on_commit()


@admin.register(Offer)
class OfferAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "status", "value", "marketing"]
    list_filter = ["status", "marketing"]
    search_fields = ["code", "name"]

    def save_model(self, request: HttpRequest, obj: Offer, form: Any, change: bool) -> None:
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)
        engine.index_changed_on_commit()


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "policy", "customer", "outcome", "reason"]
    list_filter = ["outcome"]
    list_select_related = ["policy"]
    raw_id_fields = ["event", "customer", "task"]


@admin.register(OfferPresentation)
class OfferPresentationAdmin(ReadOnlyAdmin):
    list_display = ["presented_at", "offer", "customer", "channel", "status", "sequence", "delivered_at"]
    list_filter = ["status", "channel"]
    list_select_related = ["offer"]
    raw_id_fields = ["customer", "event", "responded_by", "policy"]
