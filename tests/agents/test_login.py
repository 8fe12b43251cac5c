"""The staff log-in page under failed log-ins: locked, and saying so in the form."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from crm.models import LockoutScope, LoginEntryPoint, LoginLockout, User
from crm.services import logins
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("login_limits")]


def sign_in(client: Client, username: str, password: str, **extra: Any) -> Any:
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def test_the_log_in_page_says_try_again_in_n_minutes_once_the_account_locks(alice: User) -> None:
    client = Client()
    for i in range(4):
        response = sign_in(client, "alice", f"guess-{i}")
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()
    response = sign_in(client, "alice", "guess-4")
    html = response.content.decode()
    assert response.status_code == 429
    assert 'class="alert alert-error"' in html  # in the form, not a bare error page
    assert "Too many failed log-ins for this account: try again in 15 minutes." in html
    assert 'id="id_password"' in html and 'value="alice"' in html


def test_the_right_password_is_refused_on_the_page_while_locked(alice: User) -> None:
    client = Client()
    for i in range(5):
        sign_in(client, "alice", f"guess-{i}")
    response = sign_in(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 14 * 60
    assert "try again in 15 minutes" in response.content.decode()
    assert client.get(reverse("home")).status_code == 302  # still signed out


def test_the_page_counts_with_the_api_against_one_account(alice: User) -> None:
    client = Client()
    for i in range(3):
        sign_in(client, "alice", f"guess-{i}")
    for i in range(2):
        Client().post("/api/v1/auth/token/", {"username": "alice", "password": f"api-{i}"},
                      content_type="application/json")  # fmt: skip
    assert "try again in" in sign_in(client, "alice", PASSWORD).content.decode()
    row = LoginLockout.objects.get()
    assert (row.scope, row.entry_point) == (LockoutScope.ACCOUNT, LoginEntryPoint.API)


def test_the_page_records_its_own_lock_outs(alice: User) -> None:
    client = Client()
    for i in range(5):
        sign_in(client, "Alice", f"guess-{i}", REMOTE_ADDR="192.0.2.44")
    row = LoginLockout.objects.get()
    assert (row.username, row.client_address) == ("Alice", "192.0.2.44")
    assert row.entry_point == LoginEntryPoint.PAGE


def test_once_the_lock_ends_the_agent_signs_in(alice: User, monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client()
    for i in range(5):
        sign_in(client, "alice", f"guess-{i}")
    later = timezone.now() + dt.timedelta(minutes=15, seconds=1)
    monkeypatch.setattr(logins, "_now", lambda: later)
    response = sign_in(client, "alice", PASSWORD)
    assert response.status_code == 302 and response["Location"] == reverse("home")


def test_one_minute_left_is_said_in_the_singular(alice: User, monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client()
    for i in range(5):
        sign_in(client, "alice", f"guess-{i}")
    later = timezone.now() + dt.timedelta(minutes=14, seconds=30)
    monkeypatch.setattr(logins, "_now", lambda: later)
    assert "try again in 1 minute." in sign_in(client, "alice", PASSWORD).content.decode()


# --- Sessions (read from the cache, written through to the database) -----------------------


def test_a_session_read_from_the_cache_ends_at_logout_and_at_deactivation(
    alice: User, django_assert_max_num_queries: Any
) -> None:
    from django.conf import settings

    browser = Client()
    assert sign_in(browser, "alice", PASSWORD).status_code == 302
    cookie = browser.cookies[settings.SESSION_COOKIE_NAME].value
    assert browser.get(reverse("home")).status_code == 200
    # The session comes from the cache: the home page reads no session row.
    with django_assert_max_num_queries(20) as queries:
        browser.get(reverse("home"))
    assert not [q for q in queries.captured_queries if "django_session" in q["sql"]]
    # A copy of the cookie kept from before the logout opens nothing after it.
    copy = Client()
    copy.cookies[settings.SESSION_COOKIE_NAME] = cookie
    assert copy.get(reverse("home")).status_code == 200
    browser.post(reverse("logout"))
    assert copy.get(reverse("home")).status_code == 302
    # Deactivated while signed in: the next request is refused.
    again = Client()
    assert sign_in(again, "alice", PASSWORD).status_code == 302
    User.objects.filter(pk=alice.pk).update(is_active=False)
    assert again.get(reverse("home")).status_code == 302


def test_a_password_changed_elsewhere_ends_the_session_on_its_next_request(alice: User) -> None:
    browser = Client()
    assert sign_in(browser, "alice", PASSWORD).status_code == 302
    assert browser.get(reverse("home")).status_code == 200
    changed = User.objects.get(pk=alice.pk)
    changed.set_password("another-long-passphrase-42")
    changed.save(update_fields=["password"])
    assert browser.get(reverse("home")).status_code == 302


def test_the_sessions_user_comes_with_its_roles_in_one_statement_read_afresh(
    alice: User, django_assert_num_queries: Any
) -> None:
    from django.contrib.auth.models import Group

    from crm.backends import RoleBackend

    backend = RoleBackend()
    backend.get_user(alice.pk)  # loads the per-process catalog of the roles' permissions
    with django_assert_num_queries(1):
        user = backend.get_user(str(alice.pk))
        assert user is not None and user.pk == alice.pk
        assert user.has_perm("crm.view_customer") and "agent" in user.roles
    # A role taken away applies on the very next read, not after a cache expires.
    alice.groups.remove(Group.objects.get(name="agent"))
    user = backend.get_user(alice.pk)
    assert user is not None and "agent" not in user.roles and not user.has_perm("crm.view_customer")
    # Not an id, or no such user: nobody.
    assert backend.get_user("not-a-number") is None
    assert backend.get_user(alice.pk + 10_000) is None
