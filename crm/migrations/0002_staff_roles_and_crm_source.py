"""Staff roles as groups with their permissions, and the CRM's own source system.

The first version of the roles. From here on ``crm.roles`` is the living
definition: it runs after every migrate, so later apps grant their permissions
(e.g. supervisors authoring scripts) by adding them there.
"""

from __future__ import annotations

from django.contrib.auth.management import create_permissions
from django.db import migrations

AGENT = [
    "view_customer", "add_customer", "change_customer",
    "view_household", "add_household", "change_household",
    "view_account", "view_product",
    "view_interaction", "add_interaction",
    "view_businessevent",
    "view_task", "add_task", "change_task",
    "view_sourcerecord",
]  # fmt: skip
SUPERVISOR = AGENT + [
    "add_account", "change_account",
    "delete_task",
    "view_sourcesystem", "view_fieldmapping",
    "view_accesslogentry",
]  # fmt: skip


def create_roles(apps, schema_editor):  # type: ignore[no-untyped-def]
    crm = apps.get_app_config("crm")
    crm.models_module = True
    create_permissions(crm, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    crm_perms = Permission.objects.filter(content_type__app_label="crm")
    roles = {
        "agent": crm_perms.filter(codename__in=AGENT),
        "supervisor": crm_perms.filter(codename__in=SUPERVISOR),
        # Administrators hold every crm permission except rewriting the access log.
        "administrator": crm_perms.exclude(
            codename__in=["change_accesslogentry", "delete_accesslogentry", "add_accesslogentry"]
        ),
    }
    for name, perms in roles.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*perms)

    SourceSystem = apps.get_model("crm", "SourceSystem")
    SourceSystem.objects.get_or_create(
        code="crm", defaults={"name": "CRM (agents and self-service)", "kind": "crm"}
    )


def remove_roles(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("auth", "Group").objects.filter(name__in=["agent", "supervisor", "administrator"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0001_customer_record_schema"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_roles, remove_roles)]
