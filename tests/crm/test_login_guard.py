"""Failed log-ins lock the account and the client address, whatever header the client sends."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.db import connection
from django.test import Client, RequestFactory
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from crm import services
from crm.models import LockoutScope, LoginEntryPoint, LoginLockout, User
from crm.services import logins
from tests.config.test_settings import environment, manage
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("login_limits")]

TOKEN_URL = "/api/v1/auth/token/"


def log_in(username: str, password: str, **headers: Any) -> tuple[int, dict[str, object], str | None]:
    response = APIClient().post(TOKEN_URL, {"username": username, "password": password}, **headers)
    return response.status_code, response.data, response.headers.get("Retry-After")


def wrong_passwords(username: str, times: int, **headers: Any) -> list[int]:
    return [log_in(username, f"guess-{i}", **headers)[0] for i in range(times)]


# --- The account ------------------------------------------------------------------------


def test_thirty_wrong_passwords_with_a_new_forwarded_for_each_are_stopped_after_four(alice):
    statuses = [log_in("alice", f"guess-{i}", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}")[0] for i in range(30)]
    # The fifth failure locks the account, and says so instead of "wrong password".
    assert statuses.index(429) == 4
    assert statuses == [401] * 4 + [429] * 26


def test_a_locked_account_is_told_why_for_how_long_and_when_to_retry(alice):
    wrong_passwords("alice", 5)
    status, body, retry_after = log_in("alice", "guess-again")
    assert status == 429
    assert body == {"detail": "Too many failed log-ins for this account: try again in 15 minutes."}
    assert retry_after is not None and 14 * 60 < int(retry_after) <= 15 * 60


def test_the_lock_refuses_the_right_password_too(alice):
    wrong_passwords("alice", 5)
    status, body, _ = log_in("alice", PASSWORD)
    assert status == 429 and "try again in 15 minutes" in str(body["detail"])


def test_a_different_address_cannot_unlock_the_account(alice):
    wrong_passwords("alice", 5, REMOTE_ADDR="203.0.113.10")
    assert log_in("alice", PASSWORD, REMOTE_ADDR="192.0.2.77")[0] == 429


def test_usernames_are_counted_whatever_their_case(alice):
    for name in ("alice", "Alice", "ALICE", " alice", "aLiCe"):
        log_in(name, "guess")
    assert log_in("alice", PASSWORD)[0] == 429


def test_a_successful_log_in_forgives_the_accounts_earlier_failures(alice):
    assert wrong_passwords("alice", 4) == [401] * 4
    assert log_in("alice", PASSWORD)[0] == 201
    assert wrong_passwords("alice", 5) == [401] * 4 + [429]


def test_an_unknown_username_is_locked_like_a_real_one(db):
    # Otherwise whether a lock comes would tell which usernames exist.
    assert wrong_passwords("nobody-here", 6) == [401] * 4 + [429] * 2


def test_the_lock_ends_when_its_time_is_up(alice, monkeypatch):
    wrong_passwords("alice", 5)
    assert log_in("alice", PASSWORD)[0] == 429
    later = timezone.now() + dt.timedelta(minutes=15, seconds=1)
    monkeypatch.setattr(logins, "_now", lambda: later)
    assert log_in("alice", PASSWORD)[0] == 201


def test_after_the_lock_ends_the_count_starts_afresh(alice, monkeypatch):
    wrong_passwords("alice", 5)
    later = timezone.now() + dt.timedelta(minutes=16)
    monkeypatch.setattr(logins, "_now", lambda: later)
    assert wrong_passwords("alice", 5) == [401] * 4 + [429]


# --- The address --------------------------------------------------------------------------


def test_many_usernames_from_one_address_lock_that_address(alice):
    statuses = [log_in(f"user{i}", "guess", REMOTE_ADDR="203.0.113.5")[0] for i in range(25)]
    assert statuses == [401] * 19 + [429] * 6
    status, body, _ = log_in("alice", PASSWORD, REMOTE_ADDR="203.0.113.5")
    assert status == 429
    assert body["detail"] == "Too many failed log-ins from your network address: try again in 15 minutes."
    # Alice herself is not locked: from anywhere else she gets in.
    assert log_in("alice", PASSWORD, REMOTE_ADDR="192.0.2.1")[0] == 201


def test_a_success_does_not_reset_the_address_count(alice):
    for i in range(19):
        log_in(f"user{i}", "guess", REMOTE_ADDR="203.0.113.5")
    assert log_in("alice", PASSWORD, REMOTE_ADDR="203.0.113.5")[0] == 201
    assert log_in("user-last", "guess", REMOTE_ADDR="203.0.113.5")[0] == 429


def test_addresses_in_one_ipv6_64_share_a_count(db):
    for i in range(20):
        services.login_failure_record(
            username=f"user{i}", address=f"2001:db8:1:2::{i + 1:x}", entry_point=LoginEntryPoint.API
        )
    lockout = services.login_lockout_find(username="someone", address="2001:db8:1:2:ffff::9")
    assert lockout is not None and lockout.scope == LockoutScope.ADDRESS
    assert services.login_lockout_find(username="someone", address="2001:db8:1:3::1") is None


# --- Which address: NUM_PROXIES ----------------------------------------------------------------


def test_without_trusted_proxies_the_forwarded_header_is_ignored(settings):
    settings.NUM_PROXIES = 0
    request = RequestFactory().post(TOKEN_URL, REMOTE_ADDR="192.0.2.9", HTTP_X_FORWARDED_FOR="10.1.1.1")
    assert services.client_address(request) == "192.0.2.9"


def test_with_one_proxy_the_address_is_the_right_most_forwarded_entry(settings):
    settings.NUM_PROXIES = 1
    request = RequestFactory().post(
        TOKEN_URL, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.7"
    )
    assert services.client_address(request) == "203.0.113.7"


def test_with_two_proxies_the_address_is_the_second_from_the_right(settings):
    settings.NUM_PROXIES = 2
    request = RequestFactory().post(
        TOKEN_URL, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.7, 10.0.0.1"
    )
    assert services.client_address(request) == "203.0.113.7"


def test_a_forwarded_entry_that_is_no_address_falls_back_to_the_connection(settings):
    settings.NUM_PROXIES = 1
    request = RequestFactory().post(TOKEN_URL, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="nonsense")
    assert services.client_address(request) == "10.0.0.2"


def test_with_one_proxy_a_spoofed_left_most_entry_does_not_escape_the_address_lock(alice, settings):
    settings.NUM_PROXIES = 1
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    statuses = [
        log_in(f"user{i}", "guess", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}, 203.0.113.7", **proxy)[0]
        for i in range(21)
    ]
    assert statuses == [401] * 19 + [429] * 2
    spoofed = log_in("alice", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.200, 203.0.113.7", **proxy)
    assert spoofed[0] == 429
    # Another client behind the same proxy is someone else, not locked with them.
    assert log_in("alice", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.8", **proxy)[0] == 201
    assert set(LoginLockout.objects.values_list("client_address", flat=True)) == {"203.0.113.7"}


def test_the_api_throttle_reads_the_same_address_as_the_guard(settings):
    assert settings.REST_FRAMEWORK["NUM_PROXIES"] == settings.NUM_PROXIES == 0
    request = RequestFactory().post(TOKEN_URL, REMOTE_ADDR="192.0.2.9", HTTP_X_FORWARDED_FOR="10.9.9.9")
    assert ScopedRateThrottle().get_ident(Request(request)) == services.client_address(request) == "192.0.2.9"


def test_a_negative_number_of_proxies_stops_start_up_naming_the_variable():
    result = manage("check", env=environment(NUM_PROXIES="-1"))
    assert result.returncode == 1
    assert "NUM_PROXIES" in result.stderr and "at least 0" in result.stderr


# --- The audit row ---------------------------------------------------------------------


def test_one_audit_row_is_written_per_lock_out_not_per_attempt(alice):
    wrong_passwords("alice", 30, REMOTE_ADDR="203.0.113.20")
    row = LoginLockout.objects.get()
    assert (row.username, row.client_address, row.scope, row.attempts, row.entry_point) == (
        "alice", "203.0.113.20", LockoutScope.ACCOUNT, 5, LoginEntryPoint.API,
    )  # fmt: skip
    assert dt.timedelta(minutes=14) < row.locked_until - row.at <= dt.timedelta(minutes=15)


def test_a_second_lock_out_writes_a_second_row(alice, monkeypatch):
    wrong_passwords("alice", 5)
    later = timezone.now() + dt.timedelta(minutes=16)
    monkeypatch.setattr(logins, "_now", lambda: later)
    wrong_passwords("alice", 5)
    assert LoginLockout.objects.filter(username="alice", scope=LockoutScope.ACCOUNT).count() == 2


def test_an_address_lock_out_is_recorded_with_its_address(db):
    for i in range(20):
        log_in(f"user{i}", "guess", REMOTE_ADDR="203.0.113.5")
    row = LoginLockout.objects.get(scope=LockoutScope.ADDRESS)
    assert (row.client_address, row.username, row.attempts) == ("203.0.113.5", "user19", 20)


@pytest.mark.django_db(transaction=True)
def test_failures_racing_past_the_limit_lock_once_and_write_one_row():
    start = threading.Barrier(8)
    lockouts: list[object] = []

    def fail(i: int) -> None:
        start.wait()
        try:
            lockouts.append(
                services.login_failure_record(
                    username="zed", address=f"192.0.2.{i + 1}", entry_point=LoginEntryPoint.API
                )
            )
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=fail, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # Eight failures against a limit of five: however they interleave, one lock and one row.
    assert len(lockouts) == 8 and any(lockout is not None for lockout in lockouts)
    assert LoginLockout.objects.filter(username="zed").count() == 1
    assert LoginLockout.objects.get(username="zed").attempts >= 5
    assert services.login_lockout_find(username="zed", address="") is not None


# --- The admin log-in ------------------------------------------------------------------


def test_the_admin_log_in_is_locked_and_says_so(carol):
    client = Client()
    for i in range(5):
        response = client.post("/admin/login/", {"username": "carol", "password": f"guess-{i}"})
    html = response.content.decode()
    assert "Too many failed log-ins for this account: try again in 15 minutes." in html
    response = client.post("/admin/login/", {"username": "carol", "password": PASSWORD})
    assert response.status_code == 200 and "try again in 15 minutes" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert LoginLockout.objects.get().entry_point == LoginEntryPoint.ADMIN


def test_an_administrator_reads_lock_outs_in_the_admin_and_cannot_change_them(carol, alice):
    wrong_passwords("alice", 5)
    row = LoginLockout.objects.get()
    client = Client()
    client.force_login(carol)
    listing = client.get("/admin/crm/loginlockout/")
    assert listing.status_code == 200 and "alice" in listing.content.decode()
    assert client.get(f"/admin/crm/loginlockout/{row.pk}/change/").status_code == 200  # read-only view
    assert client.post(f"/admin/crm/loginlockout/{row.pk}/change/", {"attempts": 1}).status_code == 403
    assert client.get("/admin/crm/loginlockout/add/").status_code == 403
    assert client.post(f"/admin/crm/loginlockout/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert LoginLockout.objects.get().attempts == 5


def test_an_agent_cannot_read_the_lock_outs(alice):
    client = Client()
    client.force_login(alice)
    assert client.get("/admin/crm/loginlockout/").status_code == 302


def test_a_log_in_without_a_request_still_counts_against_the_account(alice):
    # Management commands and scripts call authenticate() with no request.
    for i in range(5):
        assert authenticate(None, username="alice", password=f"guess-{i}") is None
    assert authenticate(None, username="alice", password=PASSWORD) is None
    assert User.objects.get(username="alice").is_active  # locked, not disabled
