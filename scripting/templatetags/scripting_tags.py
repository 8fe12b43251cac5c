"""Template helpers of the script panel (no logic beyond a lookup)."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def chosen(value: Any, choice: str) -> bool:
    """Is ``choice`` the answer (or among the answers) saved?"""
    return choice in value if isinstance(value, list) else value == choice


@register.filter
def dict_get(mapping: Any, key: str) -> Any:
    """``mapping[key]`` or None (an action's setting in the designer's form)."""
    return mapping.get(key) if isinstance(mapping, dict) else None
