"""Validation and normalisation of the values a person or a source system types in.

Each function raises ``ValidationError`` with a message that says what is wrong
and how to fix it; callers attach it to the field it came from.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from functools import lru_cache

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email as django_validate_email

from crm import clock

_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_time_zone(value: str) -> None:
    if value not in _time_zones():
        raise ValidationError(
            f"“{value}” is not a known time zone: use an IANA name such as America/New_York or Europe/Paris."
        )


def validate_language(value: str) -> None:
    if not _LANGUAGE_RE.match(value or ""):
        raise ValidationError(
            f"“{value}” is not a language code: use an ISO 639 code such as en, es or pt-BR."
        )


def validate_birth_date(value: dt.date | None) -> None:
    if value is None:
        return
    today = clock.latest_date_anywhere()
    if value > today:
        raise ValidationError("The date of birth is in the future: enter a past date.")
    if value.year < today.year - 130:
        raise ValidationError("The date of birth is more than 130 years ago: check the year.")


def normalize_phone(raw: str, *, region: str | None = None) -> str:
    """Return ``raw`` as E.164 (``+15551234567``), reading it as dialled in ``region``.

    Accepts what people type and what switches send: spaces, dashes, brackets,
    a leading 00 or 011, a national number without the country code.
    """
    text = (raw or "").strip()
    if not text:
        raise ValidationError("The phone number is empty: enter a number such as +1 202 555 0143.")
    if text.startswith("00"):
        text = "+" + text[2:]
    elif text.startswith("011"):
        text = "+" + text[3:]
    try:
        number = phonenumbers.parse(text, region or settings.CRM_DEFAULT_PHONE_REGION)
    except phonenumbers.NumberParseException:
        raise ValidationError(
            f"“{raw}” cannot be read as a phone number: enter it with its country code, e.g. +1 202 555 0143."
        ) from None
    if not phonenumbers.is_possible_number(number):
        raise ValidationError(f"“{raw}” has the wrong number of digits for a phone number in that country.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def try_normalize_phone(raw: str) -> str | None:
    try:
        return normalize_phone(raw)
    except ValidationError:
        return None


def format_phone(e164: str) -> str:
    """E.164 to the international format people read (``+1 202-555-0143``)."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def normalize_email(raw: str) -> str:
    text = (raw or "").strip()
    try:
        django_validate_email(text)
    except ValidationError:
        raise ValidationError(f"“{raw}” is not an e-mail address: enter one like name@example.com.") from None
    local, _, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}"


COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
