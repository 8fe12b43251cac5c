from __future__ import annotations

from django.apps import AppConfig


class ScriptingConfig(AppConfig):
    name = "scripting"
    default_auto_field = "django.db.models.BigAutoField"
