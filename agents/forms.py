"""Reading what an agent types into the one search box.

Agents paste whatever the caller reads out: a name, a number as dialled, an
e-mail, an account or customer number. The box guesses which from the shape of
the input (the field selector overrides the guess), and turns it into the
keyword arguments of ``crm.selectors.customer_search``.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass, field

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.db import models

from crm import services

_CUSTOMER_NUMBER_RE = re.compile(r"^\s*C-?\d{1,12}\s*$", re.IGNORECASE)
_BARE_NUMBER_RE = re.compile(r"^\s*\d{1,12}\s*$")
# What a phone number looks like when dialled: digits and the punctuation people add.
_PHONE_SHAPE_RE = re.compile(r"^[\d\s()+\-./]+$")
_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9-]{4,34}$")
MAX_QUERY_LENGTH = 200


class SearchField(models.TextChoices):
    AUTO = "auto", "Anything"
    NAME = "name", "Name"
    PHONE = "phone", "Phone"
    EMAIL = "email", "E-mail"
    ACCOUNT = "account", "Account no."
    NUMBER = "number", "Customer no."


@dataclass(frozen=True)
class Attempt:
    """One way of reading the input: which field, and the selector's arguments."""

    field: SearchField
    params: dict[str, str]


@dataclass(frozen=True)
class SearchPlan:
    text: str
    chosen: SearchField
    # Tried in order; the first that finds someone wins. Only a letter-free input
    # in "Anything" mode has two (phone, then account number).
    attempts: list[Attempt] = field(default_factory=list)
    # An input error found before any query: (field label, message).
    error: tuple[str, str] | None = None


class CustomerSearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=MAX_QUERY_LENGTH, strip=True)
    field = forms.ChoiceField(required=False, choices=SearchField.choices)

    def plan(self) -> SearchPlan:
        """What to search for; a plan with no attempts and no error means no search."""
        if self.is_bound:
            # Fills cleaned_data with the fields that are valid: a bad ``field`` value
            # falls back to guessing instead of losing what the agent typed.
            self.is_valid()
        data = getattr(self, "cleaned_data", {})
        text = str(data.get("q") or "")
        chosen = SearchField(data.get("field") or SearchField.AUTO)
        if self.is_bound and "q" in self.errors:
            return SearchPlan(
                text="",
                chosen=chosen,
                error=("Search", f"Type at most {MAX_QUERY_LENGTH} characters."),
            )
        if not text:
            return SearchPlan(text="", chosen=chosen)
        if chosen == SearchField.NUMBER:
            if _BARE_NUMBER_RE.match(text):
                text = f"C-{text.strip()}"
            if not _CUSTOMER_NUMBER_RE.match(text):
                return SearchPlan(
                    text=text,
                    chosen=chosen,
                    error=("Customer no.", f"“{text}” is not a customer number: type one like C-0000123."),
                )
        if chosen == SearchField.ACCOUNT and not _ACCOUNT_RE.match(text):
            return SearchPlan(
                text=text,
                chosen=chosen,
                error=(
                    "Account no.",
                    f"“{text}” is not an account number: use 4-34 letters, digits or dashes.",
                ),
            )
        fields = [chosen] if chosen != SearchField.AUTO else guess_fields(text)
        return SearchPlan(text=text, chosen=chosen, attempts=[_attempt(f, text) for f in fields])


def guess_fields(text: str) -> list[SearchField]:
    """Which fields ``text`` may be, most likely first, from its shape alone."""
    if "@" in text:
        return [SearchField.EMAIL]
    if _CUSTOMER_NUMBER_RE.match(text):
        return [SearchField.NUMBER]
    if _PHONE_SHAPE_RE.match(text) and any(c.isdigit() for c in text):
        # Digits only could also be an account number: try that when no phone matches.
        compact = text.replace(" ", "")
        return [SearchField.PHONE, SearchField.ACCOUNT] if _ACCOUNT_RE.match(compact) else [SearchField.PHONE]
    if " " not in text.strip() and any(c.isdigit() for c in text) and _ACCOUNT_RE.match(text.strip()):
        # Letters mixed with digits and no space (CHK-0012345) is how account numbers look.
        return [SearchField.ACCOUNT]
    return [SearchField.NAME]


def _attempt(chosen: SearchField, text: str) -> Attempt:
    params = {
        SearchField.NAME: {"q": text},
        SearchField.NUMBER: {"q": text},
        SearchField.PHONE: {"phone": text},
        SearchField.EMAIL: {"email": text},
        SearchField.ACCOUNT: {"account_number": text.replace(" ", "")},
    }[chosen]
    return Attempt(field=chosen, params=params)


class StaffLoginForm(AuthenticationForm):
    """Django's log-in form, telling a locked-out person why and for how long
    instead of "wrong password" (the lock refuses even the right one)."""

    def get_invalid_login_error(self) -> ValidationError:
        lockout = services.login_lockout_of(self.request) if self.request is not None else None
        if lockout is not None:
            return ValidationError(lockout.message, code="locked_out")
        return super().get_invalid_login_error()


class WrapUpForm(forms.Form):
    """After-call work. The callback time is typed on the customer's clock (the
    screen shows it), as a browser's datetime-local field sends it."""

    disposition = forms.CharField(max_length=40, error_messages={"required": "Choose how the call ended."})
    notes = forms.CharField(max_length=4000, required=False)
    callback_at = forms.CharField(max_length=20, required=False)

    def clean_callback_at(self) -> dt.datetime | None:
        raw = (self.cleaned_data.get("callback_at") or "").strip()
        if not raw:
            return None
        try:
            # A wall-clock time on purpose: its zone (the customer's) is given in callback_moment.
            return dt.datetime.strptime(raw, "%Y-%m-%dT%H:%M")  # noqa: DTZ007
        except ValueError:
            raise forms.ValidationError(
                "Give the callback as a date and time, e.g. 2026-12-03T10:30."
            ) from None

    def callback_moment(self, zone: str) -> dt.datetime | None:
        """The callback as an instant: the wall-clock time read in ``zone``."""
        local: dt.datetime | None = self.cleaned_data.get("callback_at")
        if local is None:
            return None
        try:
            tz = zoneinfo.ZoneInfo(zone) if zone else dt.UTC
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            tz = dt.UTC
        return local.replace(tzinfo=tz)
