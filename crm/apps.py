from __future__ import annotations

from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = "Customer record"
    default_auto_field = "django.db.models.BigAutoField"
