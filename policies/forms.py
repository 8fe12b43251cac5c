"""The supervisor pages' forms: a policy (its actions read from the registry's
settings) and an offer. They parse; policies.services checks and saves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.http import QueryDict

from crm import events
from crm.models import Product
from policies import actions as action_registry
from policies.models import Offer, OfferChannel, Policy

MAX_ACTIONS = 8
DATETIME_LOCAL = "%Y-%m-%dT%H:%M"


class LocalDateTimeInput(forms.DateTimeInput):
    """A browser date-time picker, read and shown in the viewer's time zone."""

    input_type = "datetime-local"

    def __init__(self) -> None:
        super().__init__(format=DATETIME_LOCAL)


class PolicyForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    trigger_types = forms.MultipleChoiceField(
        choices=[], widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Tick at least one event type that triggers this policy."},
    )  # fmt: skip
    condition = forms.CharField(
        required=False, max_length=4000,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocomplete": "off",
                                     "class": "code-input"}),
    )  # fmt: skip
    priority = forms.IntegerField(min_value=1, max_value=100, initial=50)
    holdout_percent = forms.IntegerField(min_value=0, max_value=100, initial=0, label="Holdout %")
    active_from = forms.DateTimeField(
        required=False, widget=LocalDateTimeInput(), input_formats=[DATETIME_LOCAL]
    )
    active_until = forms.DateTimeField(
        required=False, widget=LocalDateTimeInput(), input_formats=[DATETIME_LOCAL]
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["trigger_types"]
        assert isinstance(field, forms.MultipleChoiceField)  # noqa: S101  (declared above)
        field.choices = [(name, name) for name in sorted(events.CATALOG)]

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        start, end = cleaned.get("active_from"), cleaned.get("active_until")
        if start and end and end <= start:
            self.add_error("active_until", "The window must end after it starts: move the end later.")
        return cleaned


def policy_initial(policy: Policy) -> dict[str, Any]:
    return {
        "name": policy.name, "description": policy.description, "trigger_types": policy.trigger_types,
        "condition": policy.condition, "priority": policy.priority,
        "holdout_percent": policy.holdout_percent, "active_from": policy.active_from,
        "active_until": policy.active_until,
    }  # fmt: skip


@dataclass
class ActionRow:
    """One action of the editor: its name and the value of each of its settings as typed."""

    number: int
    name: str
    values: dict[str, Any]


def action_rows(actions: list[dict[str, Any]]) -> list[ActionRow]:
    """The saved actions, plus empty rows to add more (two, up to MAX_ACTIONS)."""
    rows = [
        ActionRow(i, str(a.get("action", "")), dict(a.get("settings") or {}))
        for i, a in enumerate(actions[:MAX_ACTIONS])
    ]
    while len(rows) < min(len(actions) + 2, MAX_ACTIONS):
        rows.append(ActionRow(len(rows), "", {}))
    return rows


def actions_from_post(data: QueryDict) -> tuple[list[dict[str, Any]], list[ActionRow]]:
    """The actions as the registry wants them, and the rows as typed (to show again
    with the errors). A row whose action is left empty is no action."""
    parsed: list[dict[str, Any]] = []
    rows: list[ActionRow] = []
    for number in range(MAX_ACTIONS):
        name = data.get(f"action-{number}", "")
        spec = action_registry.ACTIONS.get(name)
        if spec is None:
            if name:
                parsed.append({"action": name, "settings": {}})  # the registry names the problem
            continue
        values: dict[str, Any] = {}
        for key, setting in spec.settings.items():
            field = f"action-{number}-{name}-{key}"
            if setting.kind == "channels":
                chosen = data.getlist(field)
                if chosen:
                    values[key] = chosen
                continue
            raw = data.get(field, "").strip()
            if not raw:
                continue
            if setting.kind in ("hours", "priority"):
                values[key] = int(raw) if raw.lstrip("-").isdigit() else raw
            else:
                values[key] = raw
        parsed.append({"action": name, "settings": values})
        rows.append(ActionRow(len(rows), name, values))
    while len(rows) < min(len(parsed) + 1, MAX_ACTIONS):
        rows.append(ActionRow(len(rows), "", {}))
    return parsed, rows


def action_editor(rows: list[ActionRow]) -> list[dict[str, Any]]:
    """The registry as the editor draws it, once per row: each action with an input
    per setting (named action-<row>-<action>-<setting>) holding the value typed."""
    offers = list(Offer.objects.exclude(status="retired").order_by("name").values_list("code", "name"))
    out = []
    for row in rows:
        fieldsets = []
        for name, spec in action_registry.ACTIONS.items():
            mine = row.name == name
            settings = []
            for key, setting in spec.settings.items():
                value = row.values.get(key) if mine else None
                choices = (
                    offers if (name, key) == ("present_offer", "offer")
                    else list(OfferChannel.choices) if setting.kind == "channels"
                    else [(c, c.replace("_", " ")) for c in setting.choices]
                )  # fmt: skip
                settings.append({
                    "key": key, "label": key.replace("_", " "), "kind": setting.kind,
                    "required": setting.required, "help": setting.help,
                    "field": f"action-{row.number}-{name}-{key}", "choices": choices,
                    "value": "" if value is None else value,
                    "chosen": value if isinstance(value, list) else [str(value)] if value is not None else [],
                })  # fmt: skip
            fieldsets.append(
                {"name": name, "description": spec.description, "settings": settings, "mine": mine}
            )
        out.append({"number": row.number, "name": row.name, "fieldsets": fieldsets})
    return out


class OfferForm(forms.ModelForm):
    channels = forms.MultipleChoiceField(
        choices=OfferChannel.choices, widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Tick at least one channel where this offer may be presented."},
    )  # fmt: skip
    product = forms.ModelChoiceField(
        queryset=Product.objects.order_by("name"),
        required=False,
        empty_label="No product (lift not measurable)",
    )
    valid_from = forms.DateTimeField(
        required=False, widget=LocalDateTimeInput(), input_formats=[DATETIME_LOCAL]
    )
    valid_to = forms.DateTimeField(
        required=False, widget=LocalDateTimeInput(), input_formats=[DATETIME_LOCAL]
    )

    class Meta:
        model = Offer
        fields = [
            "code", "name", "product", "status", "talking_points", "self_service_text", "channels", "value",
            "marketing", "max_presentations", "period_days", "cooling_off_days", "expires_after_hours",
            "valid_from", "valid_to",
        ]  # fmt: skip
        widgets = {
            "talking_points": forms.Textarea(attrs={"rows": 3}),
            "self_service_text": forms.Textarea(attrs={"rows": 3}),
        }

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        start, end = cleaned.get("valid_from"), cleaned.get("valid_to")
        if start and end and end <= start:
            self.add_error("valid_to", "The offer must end after it starts: move “valid to” later.")
        return cleaned

    def _post_clean(self) -> None:
        # The service runs the model's checks when it saves; the form only parses.
        pass
