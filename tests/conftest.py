"""Named personas and helpers shared by every test.

- alice: agent; bob: supervisor; carol: administrator;
- dave: a self-service customer (his own record is ``dave_customer``);
- erin_customer: another customer dave must never see;
- frank: an integration user for the "ivr" source system.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connections
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from crm import services
from crm.backends import forget_catalog
from crm.models import Customer, Product, SourceSystem, User
from crm.selectors import forget_source_systems
from crm.services import touchpoint_claims
from crm.services.logins import KEY_PREFIX as LOGIN_GUARD_PREFIX

PASSWORD = "correct-horse-battery-9"


@pytest.fixture(autouse=True)
def _fresh_permission_catalog() -> None:
    """Each test's roles and source systems may differ (a flush recreates them):
    start from the database."""
    forget_catalog()
    forget_source_systems()


@pytest.fixture(autouse=True)
def _empty_query_logs() -> None:
    """A connection's query log keeps at most 9,000 entries and is never emptied
    between tests; once full, ``CaptureQueriesContext`` (and every query-count
    assertion built on it) slices its window by position and loses the first
    queries of a test. Each test starts with empty logs."""
    for connection in connections.all(initialized_only=True):
        connection.queries_log.clear()


@pytest.fixture(scope="session")
def _redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _no_failed_log_ins_carried_over(_redis: redis.Redis) -> None:
    """Failed log-ins are counted in the shared Redis, which outlives a test:
    each test starts with no counts and no locks."""
    keys = list(_redis.scan_iter(match=cache.make_key(LOGIN_GUARD_PREFIX + "*"), count=1000))
    if keys:
        _redis.delete(*keys)


@pytest.fixture(autouse=True)
def _claims_start_at_the_head(_redis: redis.Redis) -> None:
    """The position the touchpoint claims read up to lives in the shared Redis and
    outlives a test (whose rows are gone): each test's claims start from the head."""
    _redis.delete(f"crm:ingest:claimed-to:{connections['default'].settings_dict['NAME']}")
    touchpoint_claims._claims_since_head = 0  # type: ignore[attr-defined]


@pytest.fixture
def login_limits(settings: Any) -> None:
    """The log-in guard's production defaults, whatever the shell sets, with a fast
    password hasher: each wrong password costs a full hash, and tests of the
    guard count dozens of them."""
    settings.NUM_PROXIES = 0
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 0}
    settings.CRM_LOGIN_ACCOUNT_FAILURES = 5
    settings.CRM_LOGIN_ADDRESS_FAILURES = 20
    settings.CRM_LOGIN_FAILURE_WINDOW_MINUTES = 15
    settings.CRM_LOGIN_LOCKOUT_MINUTES = 15
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice(db: None) -> User:
    return services.staff_user_create(username="alice", password=PASSWORD, role="agent",
                                      first_name="Alice", time_zone="America/Chicago")  # fmt: skip


@pytest.fixture
def bob(db: None) -> User:
    return services.staff_user_create(username="bob", password=PASSWORD, role="supervisor", first_name="Bob")


@pytest.fixture
def carol(db: None) -> User:
    return services.staff_user_create(
        username="carol", password=PASSWORD, role="administrator", first_name="Carol"
    )


def make_customer(**overrides: Any) -> Customer:
    fields: dict[str, Any] = {
        "given_name": "Dave",
        "family_name": "Miller",
        "phones": [{"number": "+12025550143", "kind": "mobile", "primary": True}],
        "emails": [{"address": "dave@example.com", "kind": "personal", "primary": True}],
        "time_zone": "America/New_York",
        "date_of_birth": dt.date(1980, 5, 17),
    }
    fields.update(overrides)
    return services.customer_create(**fields)


@pytest.fixture
def dave_customer(db: None) -> Customer:
    return make_customer()


@pytest.fixture
def erin_customer(db: None) -> Customer:
    return make_customer(
        given_name="Erin",
        family_name="Okafor",
        phones=[{"number": "+442079460958", "kind": "home", "primary": True}],
        emails=[{"address": "erin@example.org", "kind": "personal", "primary": True}],
        tier="platinum",
    )


@pytest.fixture
def dave(dave_customer: Customer) -> User:
    return services.customer_login_create(customer=dave_customer, username="dave", password=PASSWORD)


@pytest.fixture
def ivr(db: None) -> SourceSystem:
    return services.source_system_create(code="ivr", name="IVR", kind="ivr")


@pytest.fixture
def frank(ivr: SourceSystem) -> User:
    return User.objects.get(source_system=ivr)


@pytest.fixture
def checking(db: None) -> Product:
    return Product.objects.create(code="everyday-checking", name="Everyday Checking", category="checking")


def api_as(user: User) -> APIClient:
    """An API client carrying a real bearer token of ``user``."""
    _, secret = services.api_token_create(user=user, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def signed_in(user: User) -> Client:
    """A page client with ``user``'s session, as after the log-in form."""
    client = Client()
    client.force_login(user)
    return client


def minutes_ago(n: int) -> dt.datetime:
    return timezone.now() - dt.timedelta(minutes=n)
