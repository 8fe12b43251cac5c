"""The registry of policy actions: one table read both when a policy is saved
(``validate_actions``) and when the engine runs it (``implementation``).

A policy's actions are stored as ``[{"action": <name>, "settings": {...}}]``.
Nothing runs by a name the registry does not know: the engine resolves the
implementation through ``ACTIONS[name].path``, never through a name read from
the database.

``present_offer`` is arbitrated: the engine first turns it into proposals (one
per channel), passes them through the contact rules and arbitration, and calls
its implementation only for the winners. The other actions run for every
matching policy outside its holdout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.module_loading import import_string

from crm.models.choices import TaskKind
from crm.models.users import Role


@dataclass(frozen=True)
class Setting:
    kind: str  # "text" | "code" | "channels" | "hours" | "choice" | "assignee" | "priority"
    required: bool = True
    help: str = ""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Action:
    path: str
    description: str
    settings: dict[str, Setting] = field(default_factory=dict)
    arbitrated: bool = False


ASSIGNEE_HELP = (
    '"last_agent" (the agent who last handled the customer), "role:<agent|supervisor|administrator>" '
    'or "queue:<name>" (e.g. queue:sales)'
)

ACTIONS: dict[str, Action] = {
    "present_offer": Action(
        path="policies.services.offer_present",
        description="Present an offer to the customer on the given channels (after contact rules and "
        "arbitration).",
        settings={
            "offer": Setting("code", help="The offer's code."),
            "channels": Setting("channels", help="agent_screen, self_service, email, outbound_call."),
        },
        arbitrated=True,
    ),
    "create_task": Action(
        path="policies.services.policy_task_create",
        description="Create a task for a queue, a role or the customer's last agent, due within some hours.",
        settings={
            "kind": Setting("choice", choices=tuple(TaskKind.values)),
            "title": Setting("text", help="What to do, e.g. “Call about the large withdrawal”."),
            "due_in_hours": Setting("hours", help="1-720."),
            "assign_to": Setting("assignee", help=ASSIGNEE_HELP),
            "priority": Setting("priority", required=False, help="1 (highest) to 5; 3 when left out."),
        },
    ),
    "notify_agent": Action(
        path="policies.services.agent_notify",
        description="Send a notice to the customer's last agent or to everyone in a role.",
        settings={
            "to": Setting("assignee", help='"last_agent" or "role:<role>".'),
            "message": Setting("text"),
        },
    ),
    "tag_customer": Action(
        path="policies.services.customer_tag",
        description="Put a label on the customer (e.g. mortgage-prospect).",
        settings={"tag": Setting("code", help="Lower-case letters, digits, - and _.")},
    ),
}


@cache
def implementation(name: str) -> Callable[..., Any]:
    """The function behind a registered action (KeyError for any other name)."""
    return import_string(ACTIONS[name].path)  # type: ignore[no-any-return]


def validate_actions(actions: Any, *, offers: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Check a policy's actions against the registry; return them normalised, or
    raise ValidationError on ``actions`` naming each problem and its fix.

    ``offers`` maps offer codes to Offer rows (read from the database when not given)."""
    from policies.models import Offer, OfferChannel, OfferStatus  # noqa: PLC0415  (models import this module's users)

    if not isinstance(actions, list) or not actions:
        raise ValidationError(
            {"actions": ['Give a list of actions, e.g. [{"action": "tag_customer", ...}].']}
        )
    if offers is None:
        codes = [a.get("settings", {}).get("offer") for a in actions if isinstance(a, dict)]
        offers = {o.code: o for o in Offer.objects.filter(code__in=[c for c in codes if isinstance(c, str)])}
    problems: list[str] = []
    normalised: list[dict[str, Any]] = []
    for number, item in enumerate(actions, start=1):
        where = f"Action {number}"
        if not isinstance(item, dict) or not isinstance(item.get("action"), str):
            problems.append(f'{where}: give {{"action": <name>, "settings": {{...}}}}.')
            continue
        name = item["action"]
        spec = ACTIONS.get(name)
        if spec is None:
            problems.append(f"{where}: unknown action “{name}”: use one of {', '.join(sorted(ACTIONS))}.")
            continue
        where = f"Action {number} ({name})"
        settings = item.get("settings", {})
        if not isinstance(settings, dict):
            problems.append(f"{where}: settings must be an object.")
            continue
        for extra in sorted(set(settings) - set(spec.settings)):
            problems.append(f"{where}: no setting “{extra}”; it takes {', '.join(spec.settings)}.")
        for key, setting in spec.settings.items():
            value = settings.get(key)
            if value in (None, "", []):
                if setting.required:
                    problems.append(f"{where}: give {key} ({setting.help or setting.kind}).")
                continue
            problem = _setting_problem(setting, value)
            if problem:
                problems.append(f"{where}: {key} {problem}")
        if name == "notify_agent" and str(settings.get("to", "")).startswith("queue:"):
            problems.append(f'{where}: a notice goes to a person: use "last_agent" or "role:<role>".')
        if name == "present_offer" and isinstance(settings.get("offer"), str):
            offer = offers.get(settings["offer"])
            asked = settings.get("channels")
            channels: list[Any] = asked if isinstance(asked, list) else []
            if offer is None:
                problems.append(
                    f"{where}: there is no offer “{settings['offer']}”: create it first or fix the code."
                )
            elif offer.status == OfferStatus.RETIRED:
                problems.append(f"{where}: the offer “{offer.code}” is retired: choose a live offer.")
            else:
                for channel in channels:
                    if channel in OfferChannel.values and channel not in offer.channels:
                        problems.append(
                            f"{where}: the offer “{offer.code}” is not made for {channel}; "
                            f"its channels are {', '.join(offer.channels) or 'none'}."
                        )
        normalised.append({"action": name, "settings": settings})
    if problems:
        raise ValidationError({"actions": problems})
    return normalised


def _setting_problem(setting: Setting, value: Any) -> str | None:
    from crm.models.holdings import code_validator  # noqa: PLC0415
    from policies.models import OfferChannel  # noqa: PLC0415

    if setting.kind == "text":
        if not isinstance(value, str) or len(value) > 200:
            return "must be text of at most 200 characters."
    elif setting.kind == "code":
        if not isinstance(value, str):
            return "must be a code in quotes."
        try:
            code_validator(value)
        except ValidationError:
            return f"“{value}”: use lower-case letters, digits, - and _."
    elif setting.kind == "channels":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"must be a list of channels: {', '.join(OfferChannel.values)}."
        unknown = [v for v in value if v not in OfferChannel.values]
        if unknown:
            return f"has unknown channels {', '.join(unknown)}: use {', '.join(OfferChannel.values)}."
    elif setting.kind == "hours":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 720:
            return "must be a whole number of hours from 1 to 720 (30 days)."
    elif setting.kind == "priority":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 5:
            return "must be a whole number from 1 (highest) to 5."
    elif setting.kind == "choice":
        if value not in setting.choices:
            return f"“{value}” is not allowed: use one of {', '.join(setting.choices)}."
    elif setting.kind == "assignee":
        return _assignee_problem(value)
    return None


def _assignee_problem(value: Any) -> str | None:
    if value == "last_agent":
        return None
    if isinstance(value, str) and value.startswith("role:") and value[5:] in Role.values:
        return None
    if isinstance(value, str) and value.startswith("queue:") and 0 < len(value[6:]) <= 40:
        return None
    return f"“{value}” is not an assignee: use {ASSIGNEE_HELP}."
