"""Template helpers of the script panel (no logic beyond a lookup)."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def run_answers(panel: Any, run_id: int | None) -> list[tuple[str, str]]:
    """The answers of a past run, for its contact-history entry: (question, answer)."""
    if panel is None or run_id is None:
        return []
    return list(panel.history.get(run_id, []))


@register.filter
def chosen(value: Any, choice: str) -> bool:
    """Is ``choice`` the answer (or among the answers) saved?"""
    return choice in value if isinstance(value, list) else value == choice


@register.filter
def dict_get(mapping: Any, key: str) -> Any:
    """``mapping[key]`` or None (an action's setting in the designer's form)."""
    return mapping.get(key) if isinstance(mapping, dict) else None
