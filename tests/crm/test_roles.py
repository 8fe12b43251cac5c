from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission

from crm import roles
from crm.roles import RoleDeclarationError, sync_reference_rows

pytestmark = pytest.mark.django_db


def test_agents_read_and_edit_customers_but_not_accounts_or_the_access_log(alice):
    assert alice.has_perm("crm.change_customer") and alice.has_perm("crm.add_interaction")
    assert not alice.has_perm("crm.change_account")
    assert not alice.has_perm("crm.view_accesslogentry")
    assert not alice.has_perm("crm.change_product")


def test_nobody_is_granted_rewriting_the_access_log(carol):
    assert (
        carol.has_perm("crm.change_product")
        and carol.has_perm("crm.change_user")
        and carol.has_perm("auth.change_group")
    )
    assert not carol.has_perm("crm.change_accesslogentry")
    assert not carol.has_perm("crm.delete_accesslogentry")


def test_sync_restores_missing_grants_and_keeps_extra_ones():
    agent = Group.objects.get(name="agent")
    extra = Permission.objects.get(codename="view_sourcesystem")
    agent.permissions.remove(Permission.objects.get(codename="view_customer"))
    agent.permissions.add(extra)
    sync_reference_rows()
    codenames = set(agent.permissions.values_list("codename", flat=True))
    assert {"view_customer", "view_sourcesystem"} <= codenames


def test_a_role_naming_a_permission_that_does_not_exist_stops_the_sync_loudly(monkeypatch):
    monkeypatch.setitem(
        roles.ROLE_PERMISSIONS, "agent", [*roles.AGENT, "crm.view_nothing", "crm.veiw_customer"]
    )

    with pytest.raises(RoleDeclarationError) as error:
        sync_reference_rows()

    assert "agent role names permissions that do not exist: crm.veiw_customer, crm.view_nothing" in str(
        error.value
    )


def test_every_declared_role_permission_exists():
    # What a fresh migrate relies on: the declared lists sync without an error.
    sync_reference_rows()
    for role, names in roles.ROLE_PERMISSIONS.items():
        granted = {
            f"{app}.{codename}"
            for app, codename in Group.objects.get(name=role).permissions.values_list(
                "content_type__app_label", "codename"
            )
        }
        assert set(names) <= granted
