"""Every staff and customer token expires; an integration's lives until revoked,
rotated or its source system is deactivated."""

from __future__ import annotations

import datetime as dt
import importlib
from io import StringIO

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client, RequestFactory
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework.test import APIClient

from crm import services
from crm.authentication import ApiTokenAuthentication
from crm.models import ApiToken, SourceSystem, User
from tests.conftest import PASSWORD, api_as

pytestmark = pytest.mark.django_db


def close_to(moment: dt.datetime | None, expected: dt.datetime) -> bool:
    return moment is not None and abs(moment - expected) < dt.timedelta(minutes=1)


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


# --- Lifetimes ----------------------------------------------------------------------------


def test_a_staff_token_from_the_password_grant_expires_after_the_staff_lifetime(alice):
    issued = APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": PASSWORD})
    assert issued.status_code == 201
    expires_at = dt.datetime.fromisoformat(issued.json()["expires_at"])
    assert close_to(expires_at, timezone.now() + dt.timedelta(hours=12))


def test_the_staff_lifetime_comes_from_settings(alice, settings):
    settings.CRM_STAFF_TOKEN_TTL_HOURS = 2
    token, _ = services.api_token_create(user=alice, name="laptop")
    assert close_to(token.expires_at, timezone.now() + dt.timedelta(hours=2))


def test_a_customer_token_expires_after_the_customer_lifetime(dave):
    token, _ = services.api_token_create(user=dave, name="app")
    assert close_to(token.expires_at, timezone.now() + dt.timedelta(hours=720))


def test_a_staff_token_cannot_be_asked_to_outlive_the_staff_lifetime(alice):
    token, _ = services.api_token_create(user=alice, name="forever please", ttl=dt.timedelta(days=365))
    assert close_to(token.expires_at, timezone.now() + dt.timedelta(hours=12))
    shorter, _ = services.api_token_create(user=alice, name="an hour", ttl=dt.timedelta(hours=1))
    assert close_to(shorter.expires_at, timezone.now() + dt.timedelta(hours=1))


def test_an_integration_token_has_no_expiry_unless_asked(frank):
    token, _ = services.api_token_create(user=frank, name="ivr")
    assert token.expires_at is None
    brief, _ = services.api_token_create(user=frank, name="ivr trial", ttl=dt.timedelta(days=7))
    assert close_to(brief.expires_at, timezone.now() + dt.timedelta(days=7))


def test_a_lifetime_that_is_not_positive_is_refused_naming_it(alice):
    with pytest.raises(ValidationError) as refused:
        services.api_token_create(user=alice, name="x", ttl=dt.timedelta(0))
    assert "ttl" in refused.value.message_dict


def test_the_command_gives_a_staff_token_the_staff_lifetime_and_an_integration_none(alice, frank):
    call_command("issue_api_token", "--user", "alice", stdout=StringIO())
    call_command("issue_api_token", "--source-system", "ivr", stdout=StringIO())
    assert close_to(ApiToken.objects.get(user=alice).expires_at, timezone.now() + dt.timedelta(hours=12))
    assert ApiToken.objects.get(user=frank).expires_at is None


def test_the_admin_action_issues_an_integration_token_without_expiry(carol, frank, ivr):
    client = Client()
    client.force_login(carol)
    response = client.post(
        "/admin/crm/sourcesystem/", {"action": "issue_token", "_selected_action": [ivr.pk]}, follow=True
    )
    assert response.status_code == 200 and "copy it now" in response.content.decode()
    assert ApiToken.objects.get(user=frank).expires_at is None


def test_the_schema_documents_expires_at_as_always_set(alice):
    client = APIClient()
    client.force_login(alice)
    schema = client.get("/api/schema/", {"format": "json"}).json()
    issued = schema["components"]["schemas"]["TokenResponse"]
    assert "expires_at" in issued["required"]
    assert not issued["properties"]["expires_at"].get("nullable", False)
    assert "429" in schema["paths"]["/api/v1/auth/token/"]["post"]["responses"]


# --- Refusals -------------------------------------------------------------------------------


def test_an_expired_token_is_refused(alice):
    token, secret = services.api_token_create(user=alice, name="old")
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    response = bearer(secret).get("/api/v1/me/")
    assert response.status_code == 401 and "expired" in response.data["detail"]


def test_a_revoked_token_is_refused(frank):
    token, secret = services.api_token_create(user=frank, name="ivr")
    services.api_token_revoke(token_id=token.pk, actor=frank)
    assert bearer(secret).get("/api/v1/me/").status_code == 401


def test_a_disabled_users_token_is_refused(alice):
    client = api_as(alice)
    User.objects.filter(pk=alice.pk).update(is_active=False)
    response = client.get("/api/v1/me/")
    assert response.status_code == 401 and "disabled" in response.data["detail"]


def test_an_integration_token_stops_at_once_when_its_source_system_is_deactivated(frank, ivr):
    client = api_as(frank)
    assert client.get("/api/v1/me/").status_code == 200
    SourceSystem.objects.filter(pk=ivr.pk).update(active=False)
    response = client.get("/api/v1/me/")
    assert response.status_code == 401
    assert response.data["detail"].startswith("The source system “ivr” is deactivated")
    SourceSystem.objects.filter(pk=ivr.pk).update(active=True)
    assert client.get("/api/v1/me/").status_code == 200


def test_checking_the_source_system_costs_no_extra_query(frank, django_assert_num_queries):
    _, secret = services.api_token_create(user=frank, name="ivr")
    auth = ApiTokenAuthentication()
    request = Request(RequestFactory().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {secret}"))
    auth.authenticate(request)  # the first use records last_used_at
    with django_assert_num_queries(1):
        authenticated = auth.authenticate(request)
        assert authenticated is not None and authenticated[0].source_system is not None
        assert authenticated[0].source_system.code == "ivr"


def test_an_inactive_source_system_is_refused_in_the_same_single_query(frank, ivr, django_assert_num_queries):
    _, secret = services.api_token_create(user=frank, name="ivr")
    SourceSystem.objects.filter(pk=ivr.pk).update(active=False)
    request = Request(RequestFactory().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {secret}"))
    with django_assert_num_queries(1), pytest.raises(AuthenticationFailed):
        ApiTokenAuthentication().authenticate(request)


def test_revoking_a_token_in_use_refuses_its_very_next_request(frank):
    token, secret = services.api_token_create(user=frank, name="ivr")
    client = bearer(secret)
    assert client.get("/api/v1/me/").status_code == 200
    services.api_token_revoke(token_id=token.pk, actor=frank)
    assert client.get("/api/v1/me/").status_code == 401


def test_a_token_that_expires_while_in_use_is_refused_from_then_on(alice):
    token, secret = services.api_token_create(user=alice, name="laptop")
    client = bearer(secret)
    assert client.get("/api/v1/me/").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - dt.timedelta(milliseconds=1))
    assert client.get("/api/v1/me/").status_code == 401


def test_the_single_query_brings_the_users_roles_and_permissions(alice, django_assert_num_queries):
    _, secret = services.api_token_create(user=alice, name="laptop")
    auth = ApiTokenAuthentication()
    request = Request(RequestFactory().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {secret}"))
    auth.authenticate(request)  # the first use records last_used_at (and loads the role catalog)
    expected_roles = set(alice.groups.values_list("name", flat=True))
    expected_perms = User.objects.get(pk=alice.pk).get_all_permissions()
    with django_assert_num_queries(1):
        authenticated = auth.authenticate(request)
        assert authenticated is not None
        user, token = authenticated
        assert user.pk == alice.pk and token.user is user and user.source_system is None
        assert set(user.roles) == expected_roles and expected_roles
        assert user.get_all_permissions() == expected_perms and expected_perms


# --- Tokens issued before every token expired ----------------------------------------------


def test_the_migration_ends_open_ended_staff_and_customer_tokens_but_not_integrations(alice, dave, frank):
    created = timezone.now() - dt.timedelta(days=3)
    staff, staff_secret = services.api_token_create(user=alice, name="old staff")
    customer, _ = services.api_token_create(user=dave, name="old customer")
    integration, _ = services.api_token_create(user=frank, name="ivr")
    ApiToken.objects.update(expires_at=None, created_at=created)

    migration = importlib.import_module("crm.migrations.0005_login_lockouts")
    migration.end_open_ended_tokens(apps, None)

    assert ApiToken.objects.get(pk=staff.pk).expires_at == created + dt.timedelta(hours=12)
    assert ApiToken.objects.get(pk=customer.pk).expires_at == created + dt.timedelta(hours=720)
    assert ApiToken.objects.get(pk=integration.pk).expires_at is None
    assert bearer(staff_secret).get("/api/v1/me/").status_code == 401
