from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "policies"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save  # noqa: PLC0415

        from policies.models import Offer, Policy  # noqa: PLC0415

        # Whatever saves or deletes a policy or an offer (a service, the admin, a
        # shell) tells every process's index, on commit; the services say so too.
        for model in (Policy, Offer):
            uid = f"policy-index-{model.__name__}"
            post_save.connect(_index_changed, sender=model, dispatch_uid=f"{uid}-save")
            post_delete.connect(_index_changed, sender=model, dispatch_uid=f"{uid}-delete")


def _index_changed(**kwargs: Any) -> None:
    from policies import engine  # noqa: PLC0415  (the engine imports the models)

    engine.index_changed_on_commit()
