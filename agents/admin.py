"""Queues and agents' skills, set up by supervisors and administrators; calls
and state history to look at (they change only through the telephony API)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from agents.models import Agent, AgentStateChange, Call, CallEvent, Queue
from crm.admin import ReadOnlyAdmin


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "code", "ring_seconds", "wrap_up_seconds", "service_level_seconds", "active"]
    list_filter = ["active"]
    search_fields = ["name", "code"]


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["user", "state", "state_since", "break_reason"]
    list_filter = ["state", "queues"]
    search_fields = ["user__username", "user__first_name", "user__last_name"]
    filter_horizontal = ["queues"]
    fields = ["user", "queues", "state", "state_since", "break_reason", "call"]
    readonly_fields = ["user", "state", "state_since", "break_reason", "call"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a presence row appears when a staff member first uses the desk


@admin.register(Call)
class CallAdmin(ReadOnlyAdmin):
    list_display = [
        "telephony_id",
        "queue",
        "state",
        "caller_number",
        "customer",
        "agent",
        "arrived_at",
        "end_reason",
    ]
    list_filter = ["state", "queue", "end_reason"]
    search_fields = ["telephony_id", "caller_number", "ani"]
    date_hierarchy = "arrived_at"
    list_select_related = ["queue", "customer", "agent__user"]


@admin.register(AgentStateChange)
class AgentStateChangeAdmin(ReadOnlyAdmin):
    list_display = ["agent", "state", "reason", "at", "changed_by"]
    list_filter = ["state"]
    date_hierarchy = "at"
    list_select_related = ["agent__user", "changed_by"]


@admin.register(CallEvent)
class CallEventAdmin(ReadOnlyAdmin):
    list_display = ["call", "kind", "event_id", "at"]
    list_filter = ["kind"]
