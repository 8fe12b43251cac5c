from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from crm.models import ApiToken, SourceSystem, User

pytestmark = pytest.mark.django_db


def test_an_administrator_adds_a_source_system_with_its_integration_user(carol):
    client = Client()
    client.force_login(carol)
    response = client.post(
        "/admin/crm/sourcesystem/add/",
        {"code": "pos", "name": "Point of sale", "kind": "pos", "active": "on", "time_zone": "UTC",
         "mappings-TOTAL_FORMS": "0", "mappings-INITIAL_FORMS": "0"},
    )  # fmt: skip
    assert response.status_code == 302, response.content[:2000]
    source = SourceSystem.objects.get(code="pos")
    assert User.objects.get(source_system=source).has_usable_password() is False


def test_an_agent_cannot_open_the_admin(alice):
    client = Client()
    client.force_login(alice)
    assert client.get("/admin/").status_code == 302


def test_issue_api_token_prints_the_secret_once_and_can_rotate(frank, ivr):
    first = StringIO()
    call_command("issue_api_token", "--source-system", "ivr", stdout=first)
    call_command("issue_api_token", "--source-system", "ivr", "--rotate", stdout=StringIO())
    tokens = ApiToken.objects.filter(user=frank)
    assert tokens.count() == 2 and tokens.filter(revoked_at__isnull=True).count() == 1
    secret = first.getvalue().strip().splitlines()[-1]
    assert secret.startswith("crm_") and not tokens.filter(digest=secret).exists()


def test_issue_api_token_names_the_unknown_source(ivr):
    with pytest.raises(CommandError, match=r"No source system “nope”\. Known: .*ivr"):
        call_command("issue_api_token", "--source-system", "nope")


def test_a_bad_field_mapping_is_refused_in_the_admin_with_the_reason(carol, ivr):
    client = Client()
    client.force_login(carol)
    form = {
        "code": "ivr", "name": "IVR", "kind": "ivr", "active": "on", "time_zone": "UTC",
        "mappings-TOTAL_FORMS": "1", "mappings-INITIAL_FORMS": "0",
        "mappings-0-record_kind": "customer", "mappings-0-position": "0", "mappings-0-source_field": "CALLER",
        "mappings-0-target": "customer.shoe_size", "mappings-0-transform": "text",
        "mappings-0-transform_args": "{}",
    }  # fmt: skip
    response = client.post(f"/admin/crm/sourcesystem/{ivr.pk}/change/", form)
    assert response.status_code == 200  # the form again, with the error
    assert "is not a known target" in response.content.decode()
    assert not ivr.mappings.exists()
    form["mappings-0-target"] = "customer.phone"
    form["mappings-0-transform"] = "phone_e164"
    assert client.post(f"/admin/crm/sourcesystem/{ivr.pk}/change/", form).status_code == 302
    assert list(ivr.mappings.values_list("target", flat=True)) == ["customer.phone"]


def test_an_administrator_revokes_selected_tokens_and_an_already_revoked_one_keeps_its_time(carol, frank):
    from crm import services

    first, _ = services.api_token_create(user=frank, name="first")
    second, _ = services.api_token_create(user=frank, name="second")
    services.api_token_revoke(token_id=second.pk, actor=carol)
    second.refresh_from_db()
    revoked_before = second.revoked_at
    client = Client()
    client.force_login(carol)

    response = client.post(
        "/admin/crm/apitoken/",
        {"action": "revoke", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )

    assert "Revoked 1 token(s)." in response.content.decode()
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.revoked_at is not None
    assert second.revoked_at == revoked_before
