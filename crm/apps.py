from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = "Customer record"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from crm import listeners  # noqa: F401, PLC0415  (registers the check of CRM_EVENT_LISTENERS)
        from crm.roles import on_post_migrate  # noqa: PLC0415  (models must be loaded first)

        # Like Django's own permissions: reference rows are (re)created after every
        # migrate and every test-database flush. Connected for every app: roles may
        # name any app's permissions, which exist only after that app's post_migrate.
        post_migrate.connect(on_post_migrate, dispatch_uid="crm.sync_reference_rows")
