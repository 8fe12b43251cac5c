from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission

from crm.roles import sync_reference_rows

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
