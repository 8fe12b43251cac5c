"""Who reacts to business events, declared in one place.

``crm`` imports no other app, so the apps that react to events (policies, the
campaigns' response attribution) are named in settings as dotted paths,
``CRM_EVENT_LISTENERS = {"realtime": [...], "deferred": [...]}``:

- real-time listeners run in the process that recorded the events, right after
  its transaction commits: cheap work that must not wait for a worker (a
  screen's next offer). They never fail the request: an error is logged.
- deferred listeners run in a Celery worker (crm.services.event_dispatch),
  each event marked dispatched only once all of them have run for it, so each
  must be idempotent per event.

A listener is ``listener(events: Sequence[BusinessEvent]) -> None``, given the
events of one transaction (or one dispatch batch) at a time. Nothing is called
by a name that is not in the setting, and every name there is checked when the
project starts (``manage.py check``, run by every command and server start).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings
from django.core.checks import Error, register
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from crm.models import BusinessEvent

Kind = Literal["realtime", "deferred"]
KINDS: tuple[Kind, ...] = ("realtime", "deferred")
Listener = Callable[[Sequence["BusinessEvent"]], None]


def _paths(kind: Kind) -> list[str]:
    configured: dict[str, list[str]] = getattr(settings, "CRM_EVENT_LISTENERS", {})
    return list(configured.get(kind, []))


@cache
def listeners(kind: Kind) -> tuple[Listener, ...]:
    """The listeners of ``kind``, imported once per process, in the order listed."""
    return tuple(import_string(path) for path in _paths(kind))


def forget() -> None:
    """Read the setting again (tests that change it)."""
    listeners.cache_clear()


@register()
def check_listeners(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    configured = getattr(settings, "CRM_EVENT_LISTENERS", {})
    unknown = sorted(set(configured) - set(KINDS))
    if unknown:
        errors.append(
            Error(
                f"CRM_EVENT_LISTENERS has {', '.join(unknown)}: the kinds are realtime and deferred.",
                id="crm.E101",
            )
        )
    for kind in KINDS:
        for path in _paths(kind):
            try:
                listener = import_string(path)
            except ImportError as exc:
                errors.append(
                    Error(
                        f"CRM_EVENT_LISTENERS[{kind!r}] names {path!r}, which cannot be imported: {exc}.",
                        hint="Fix the dotted path or remove it from the list.",
                        id="crm.E102",
                    )
                )
                continue
            if not callable(listener):
                errors.append(
                    Error(
                        f"CRM_EVENT_LISTENERS[{kind!r}] names {path!r}, which is not callable.",
                        hint="A listener is a function taking the list of events.",
                        id="crm.E103",
                    )
                )
    return errors
