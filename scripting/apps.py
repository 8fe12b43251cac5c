from __future__ import annotations

from django.apps import AppConfig


class ScriptingConfig(AppConfig):
    name = "scripting"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from crm import events  # noqa: PLC0415  (apps are loaded by now)
        from scripting.actions import SCRIPT_ANSWERED  # noqa: PLC0415

        # Scripts raise it (the raise_event action) so a policy can react to an answer.
        if SCRIPT_ANSWERED.name not in events.CATALOG:
            events.register(SCRIPT_ANSWERED)
