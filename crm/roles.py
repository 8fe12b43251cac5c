"""Staff roles and the reference rows the code relies on.

Roles are Django groups whose permissions are declared here, in code, so that
what an agent may do is reviewed like any other change. ``sync_reference_rows``
runs after every ``migrate`` (and after each test flush, like Django's own
permissions), creating what is missing and adding what a later release grants;
it never removes a permission an administrator granted by hand.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps as global_apps
from django.db import DEFAULT_DB_ALIAS

from crm.backends import forget_catalog

AGENT = [
    "crm.view_customer", "crm.add_customer", "crm.change_customer",
    "crm.view_household", "crm.add_household", "crm.change_household",
    "crm.view_account", "crm.view_product",
    "crm.view_interaction", "crm.add_interaction",
    "crm.view_businessevent",
    "crm.view_task", "crm.add_task", "crm.change_task",
    "crm.view_sourcerecord",
    # Interaction policies (named as strings: crm imports no other app).
    "policies.view_offer", "policies.view_offerpresentation",
    # Call scripts: agents run them, never edit them.
    "scripting.view_run", "scripting.add_run", "scripting.change_run",
]  # fmt: skip
SUPERVISOR = [
    *AGENT,
    "crm.add_account", "crm.change_account",
    "crm.delete_task",
    "crm.view_sourcesystem", "crm.view_fieldmapping",
    "crm.view_accesslogentry",
    "crm.change_customer_standing",  # tier, lifetime value, status (crm.field_access)
    "crm.view_customerchange",
    "policies.add_policy", "policies.change_policy", "policies.view_policy",
    "policies.add_offer", "policies.change_offer", "policies.view_decision",
    # The floor (agents app): watch it, set an idle agent offline, run queues and outcomes.
    "agents.view_floor", "agents.manage_floor", "agents.view_agent", "agents.change_agent",
    "agents.view_queue", "agents.add_queue", "agents.change_queue",
    "agents.view_disposition", "agents.add_disposition", "agents.change_disposition",
    "agents.view_call", "agents.view_agentstatechange",
    # Call scripts: author, publish, assign, read the analytics.
    "scripting.view_script", "scripting.add_script", "scripting.change_script",
    "scripting.view_scriptversion", "scripting.change_scriptversion",
    "scripting.view_assignment", "scripting.add_assignment", "scripting.change_assignment",
    "scripting.delete_assignment", "scripting.view_script_analytics",
]  # fmt: skip
# Administrators hold every permission of these apps, except writing the audit trails.
ADMINISTRATOR_APPS = ["crm", "auth", "agents", "policies", "scripting"]
NEVER_GRANTED = [
    "crm.add_accesslogentry", "crm.change_accesslogentry", "crm.delete_accesslogentry",
    "crm.add_customerchange", "crm.change_customerchange", "crm.delete_customerchange",
    "crm.add_loginlockout", "crm.change_loginlockout", "crm.delete_loginlockout",
]  # fmt: skip

ROLE_PERMISSIONS: dict[str, list[str]] = {"agent": AGENT, "supervisor": SUPERVISOR}


class RoleDeclarationError(RuntimeError):
    """crm/roles.py names a permission that no installed model has."""


CRM_SOURCE = {"code": "crm", "name": "CRM (agents and self-service)", "kind": "crm"}


def sync_reference_rows(using: str = DEFAULT_DB_ALIAS, apps: Any = global_apps, **_: Any) -> None:
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    SourceSystem = apps.get_model("crm", "SourceSystem")

    def perms(role: str, names: list[str]) -> list[Any]:
        wanted = {tuple(n.split(".", 1)) for n in names}
        rows = Permission.objects.using(using).filter(
            content_type__app_label__in={app for app, _ in wanted}, codename__in={c for _, c in wanted}
        )
        found = [
            p for p in rows.select_related("content_type") if (p.content_type.app_label, p.codename) in wanted
        ]
        missing = wanted - {(p.content_type.app_label, p.codename) for p in found}
        if missing:
            # A misspelt or removed permission would otherwise just vanish from the
            # role, and agents would lose (or never get) a right without anyone noticing.
            raise RoleDeclarationError(
                f"The {role} role names permissions that do not exist: "
                f"{', '.join(sorted('.'.join(m) for m in missing))}. "
                "Fix crm/roles.py (app_label.codename) or add the model they belong to."
            )
        return found

    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.using(using).get_or_create(name=role)
        group.permissions.add(*perms(role, names))
    administrator, _ = Group.objects.using(using).get_or_create(name="administrator")
    never = {tuple(n.split(".", 1)) for n in NEVER_GRANTED}
    administrator.permissions.add(
        *[
            p
            for p in Permission.objects.using(using)
            .filter(content_type__app_label__in=ADMINISTRATOR_APPS)
            .select_related("content_type")
            if (p.content_type.app_label, p.codename) not in never
        ]
    )
    forget_catalog()
    SourceSystem.objects.using(using).get_or_create(
        code=CRM_SOURCE["code"], defaults={"name": CRM_SOURCE["name"], "kind": CRM_SOURCE["kind"]}
    )


def on_post_migrate(
    sender: Any, using: str = DEFAULT_DB_ALIAS, apps: Any = global_apps, **kwargs: Any
) -> None:
    # Run once, after the last app's post_migrate: every app's permissions exist by then.
    last = [config for config in global_apps.get_app_configs() if config.models_module is not None][-1]
    if sender.label != last.label:
        return
    try:
        apps.get_model("crm", "SourceSystem")
    except LookupError:  # migrating backwards past crm's first migration
        return
    sync_reference_rows(using=using, apps=apps)
