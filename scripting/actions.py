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
class Setting:
    """One setting of an action as the designer's form shows it: ``kind`` is
    text, number, question (one of the script's questions) or choice (one of
    ``choices``: (value, label) pairs)."""

    name: str
    label: str
    kind: str = "text"
    choices: tuple[tuple[str, str], ...] | Callable[[], tuple[tuple[str, str], ...]] = ()
    hint: str = ""

    def options(self) -> tuple[tuple[str, str], ...]:
        """The choices now (a callable is read when the form is drawn: the event
        catalog fills as apps load)."""
        return self.choices() if callable(self.choices) else self.choices


@dataclass(frozen=True)
class ActionSpec:
    name: str
    label: str
    function: str  # "scripting.services.<name>", resolved at run time
    required: tuple[str, ...] = ()
    # setting -> the question types it may name (empty: any question)
    question_settings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], list[str]] | None = None
    settings: tuple[Setting, ...] = ()

    def label_of(self, name: str) -> str:
        return next((f"“{s.label}” ({name})" for s in self.settings if s.name == name), name)

    def problems(self, settings: dict[str, Any], questions: dict[str, dict[str, Any]]) -> list[str]:
        found = [
            f"set {self.label_of(name)}." for name in self.required if settings.get(name) in (None, "", [])
        ]
        for name, types in self.question_settings.items():
            key = settings.get(name)
            if not key:
                continue
            question = questions.get(key)
            if question is None:
                found.append(f"{self.label_of(name)} names no question of this script (“{key}”).")
            elif types and question["type"] not in types:
                found.append(f"{self.label_of(name)} must name a question of type {' or '.join(types)}.")
        if not found and self.check is not None:
            found.extend(self.check(settings))
        return found


_FIELD_CHOICES = tuple((name, name.replace("_", " ")) for name in UPDATABLE_FIELDS)


def _update_field(settings: dict[str, Any]) -> list[str]:
    if settings["field"] not in UPDATABLE_FIELDS:
        return [f"field must be one of {', '.join(UPDATABLE_FIELDS)}."]
    if settings.get("question") in (None, "") and settings.get("value") in (None, ""):
        return ["set “Answer to store” (question) or “Fixed value” (value)."]
    if settings.get("question") and settings.get("value") not in (None, ""):
        return ["store either an answer (question) or a fixed value (value), not both."]
    return []


def _task(settings: dict[str, Any]) -> list[str]:
    problems = []
    if settings.get("kind", "follow_up") not in TaskKind.values:
        problems.append(f"kind must be one of {', '.join(TaskKind.values)}.")
    hours = settings.get("in_hours", 0)
    if isinstance(hours, bool) or not isinstance(hours, int | float) or hours < 0:
        problems.append("in_hours must be a number of hours, 0 or more.")
    queue = settings.get("queue", "")
    if queue and queue not in {code for code, _ in _queue_options()}:
        problems.append(f"“{queue}” is not a queue: choose one of the list.")
    return problems


def _queue_options() -> tuple[tuple[str, str], ...]:
    from scripting.services import queue_choices  # noqa: PLC0415  (services imports this module)

    return tuple(queue_choices() or ())


def _event(settings: dict[str, Any]) -> list[str]:
    if settings["type"] not in events.CATALOG:
        return [f"“{settings['type']}” is not a business event type."]
    return []


REGISTRY: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec("record_disposition", "Record a disposition",
                   "scripting.services.action_record_disposition", required=("code",),
                   settings=(Setting("code", "Disposition code", hint="e.g. resolved"),)),
        ActionSpec("update_customer_field", "Update a customer field",
                   "scripting.services.action_update_customer_field", required=("field",),
                   question_settings={"question": ()}, check=_update_field,
                   settings=(Setting("field", "Customer field", "choice", _FIELD_CHOICES),
                             Setting("question", "Answer to store", "question"),
                             Setting("value", "Fixed value", hint="instead of an answer"))),
        ActionSpec("schedule_callback", "Schedule a callback", "scripting.services.action_schedule_callback",
                   required=("in_hours",), check=_task,
                   settings=(Setting("in_hours", "Call back in (hours)", "number"),
                             Setting("title", "Callback title", hint="optional"))),
        ActionSpec("record_offer_response", "Record the answer to an offer",
                   "scripting.services.action_record_offer_response", required=("offer", "question"),
                   question_settings={"question": ("yes_no",)},
                   settings=(Setting("offer", "Offer code"),
                             Setting("question", "Yes/no answer to the offer", "question"))),
        ActionSpec("create_task", "Create a task", "scripting.services.action_create_task",
                   required=("title",), check=_task,
                   settings=(Setting("title", "Task title"),
                             Setting("kind", "Task kind", "choice", tuple(TaskKind.choices)),
                             Setting("in_hours", "Due in (hours)", "number", hint="empty: no due date"),
                             Setting("queue", "For the agents of", "choice", _queue_options,
                                     hint="empty: on the customer's record only"))),
        ActionSpec("add_do_not_call", "Add to do-not-call", "scripting.services.action_add_do_not_call",
                   question_settings={"question": ("yes_no",)},
                   settings=(Setting("question", "Only when this yes/no answer is yes", "question",
                                     hint="empty: always"),)),
        ActionSpec("raise_event", "Raise a business event with the answers",
                   "scripting.services.action_raise_event", required=("type",), check=_event,
                   settings=(Setting("type", "Event type", "choice",
                                     lambda: tuple((t, t) for t in sorted(events.CATALOG))),)),
    )
}  # fmt: skip

SCRIPT_ANSWERED = events.EventType(
    "script.answered",
    "A call script reached a step that raises it; the run's answers are in the payload, by question key.",
    {"script": ("string", True), "version": ("integer", True), "run_id": ("integer", True),
     "step": ("string", True)},
)  # fmt: skip
