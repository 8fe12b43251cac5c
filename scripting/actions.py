"""The actions a step runs when the agent leaves it: one registry, read by the
validation before publish (settings) and by the runner (which function runs).

Each runs through another app's services only (crm for the record, policies
for offers); the function is named by its path and resolved when it runs, so
this module imports neither."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crm import events
from crm.models.choices import TaskKind

# Customer fields a script may update from an answer (through crm.services.customer_update,
# with its field-access rules and the version check).
UPDATABLE_FIELDS = ("given_name", "family_name", "language", "preferred_channel", "time_zone",
                    "marketing_opt_in", "do_not_email")  # fmt: skip


@dataclass(frozen=True)
class ActionSpec:
    name: str
    label: str
    function: str  # "scripting.services.<name>", resolved at run time
    required: tuple[str, ...] = ()
    # setting -> the question types it may name (empty: any question)
    question_settings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], list[str]] | None = None

    def problems(self, settings: dict[str, Any], questions: dict[str, dict[str, Any]]) -> list[str]:
        found = [f"set {name}." for name in self.required if settings.get(name) in (None, "", [])]
        for name, types in self.question_settings.items():
            key = settings.get(name)
            if not key:
                continue
            question = questions.get(key)
            if question is None:
                found.append(f"{name} names no question of this script (“{key}”).")
            elif types and question["type"] not in types:
                found.append(f"{name} must name a question of type {' or '.join(types)}.")
        if not found and self.check is not None:
            found.extend(self.check(settings))
        return found


def _update_field(settings: dict[str, Any]) -> list[str]:
    if settings["field"] not in UPDATABLE_FIELDS:
        return [f"field must be one of {', '.join(UPDATABLE_FIELDS)}."]
    return []


def _task(settings: dict[str, Any]) -> list[str]:
    problems = []
    if settings.get("kind", "follow_up") not in TaskKind.values:
        problems.append(f"kind must be one of {', '.join(TaskKind.values)}.")
    hours = settings.get("in_hours", 0)
    if isinstance(hours, bool) or not isinstance(hours, int | float) or hours < 0:
        problems.append("in_hours must be a number of hours, 0 or more.")
    return problems


def _event(settings: dict[str, Any]) -> list[str]:
    if settings["type"] not in events.CATALOG:
        return [f"“{settings['type']}” is not a business event type."]
    return []


REGISTRY: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec("record_disposition", "Record a disposition",
                   "scripting.services.action_record_disposition", required=("code",)),
        ActionSpec("update_customer_field", "Update a customer field from an answer",
                   "scripting.services.action_update_customer_field", required=("field", "question"),
                   question_settings={"question": ()}, check=_update_field),
        ActionSpec("schedule_callback", "Schedule a callback", "scripting.services.action_schedule_callback",
                   required=("in_hours",), check=_task),
        ActionSpec("record_offer_response", "Record the answer to an offer",
                   "scripting.services.action_record_offer_response", required=("offer", "question"),
                   question_settings={"question": ("yes_no",)}),
        ActionSpec("create_task", "Create a task", "scripting.services.action_create_task",
                   required=("title",), check=_task),
        ActionSpec("add_do_not_call", "Add to do-not-call", "scripting.services.action_add_do_not_call",
                   question_settings={"question": ("yes_no",)}),
        ActionSpec("raise_event", "Raise a business event with the answers",
                   "scripting.services.action_raise_event", required=("type",), check=_event),
    )
}  # fmt: skip

SCRIPT_ANSWERED = events.EventType(
    "script.answered",
    "A call script reached a step that raises it; the run's answers are in the payload, by question key.",
    {"script": ("string", True), "version": ("integer", True), "run_id": ("integer", True),
     "step": ("string", True)},
)  # fmt: skip
