"""Failed password log-ins, counted so that guessing stops early.

Every password log-in (the API token endpoint, the staff log-in page, the admin
log-in) goes through ``authenticate()`` and so through crm.backends.RoleBackend,
which calls these functions:

1. before the password is checked, ``login_lockout_find``: a locked account or
   client address is refused whatever the password, so a lock cannot be
   sidestepped by guessing right;
2. after a wrong password, ``login_failure_record`` counts it against the
   account (the username, case-insensitively, whether or not it exists) and the
   client address; reaching a limit within the window locks that account or
   address for CRM_LOGIN_LOCKOUT_MINUTES and writes one ``LoginLockout`` row;
3. after the right one, ``login_success_record`` clears the account's count.
   The address's count stays: logging in to one's own account must not buy
   more guesses at everyone else's.

Counters and locks live in the shared Redis cache, so every web process agrees,
and are counted with INCR, so concurrent failures are never lost. A counter's
window starts at its first failure. The address is ``client_address``, which
trusts X-Forwarded-For only as far as NUM_PROXIES says: a header the client
writes itself never picks the counter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import math
import unicodedata
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from crm.models import LockoutScope, LoginEntryPoint, LoginLockout

logger = logging.getLogger(__name__)

# Every key of the guard starts with this (tests clear them between cases).
KEY_PREFIX = "login-guard:"
# Where the backend leaves a lock-out for the view that renders the refusal.
_REQUEST_ATTRIBUTE = "crm_login_lockout"


@dataclass(frozen=True)
class Lockout:
    """Password log-in refused for an account or a client address until ``locked_until``."""

    scope: LockoutScope
    locked_until: dt.datetime

    def seconds_left(self) -> int:
        return max(1, math.ceil((self.locked_until - _now()).total_seconds()))

    @property
    def message(self) -> str:
        minutes = math.ceil(self.seconds_left() / 60)
        wait = "1 minute" if minutes == 1 else f"{minutes} minutes"
        if self.scope == LockoutScope.ACCOUNT:
            return f"Too many failed log-ins for this account: try again in {wait}."
        return f"Too many failed log-ins from your network address: try again in {wait}."


def _now() -> dt.datetime:
    return timezone.now()


# --- The client's address -----------------------------------------------------------------


def client_address(request: HttpRequest) -> str:
    """The address of the client that sent ``request``, as far as it can be
    trusted, or "" when the request carries none.

    With NUM_PROXIES = 0 it is the connection's own address (REMOTE_ADDR) and
    X-Forwarded-For is ignored: anyone can send that header. With N proxies it is
    the Nth entry from the right of X-Forwarded-For, the one the outermost of our
    own proxies wrote, exactly as Django REST framework's throttles read it with
    the same setting; entries further left were written by the client.
    """
    remote = request.META.get("REMOTE_ADDR") or ""
    candidate = remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if settings.NUM_PROXIES and forwarded:
        entries = forwarded.split(",")
        candidate = entries[-min(settings.NUM_PROXIES, len(entries))].strip()
    # Not an address at all (a misconfigured proxy): the connection's is the best known.
    return _normalised_ip(candidate) or _normalised_ip(remote)


def _normalised_ip(value: str) -> str:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _address_id(address: str) -> str:
    # One IPv6 host usually holds a whole /64: counting single addresses there
    # would give an attacker 2**64 fresh counters.
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _account_id(username: str) -> str:
    # Case- and width-insensitive, like people type; hashed so any input makes a short, safe key.
    folded = unicodedata.normalize("NFKC", username).strip().casefold()
    return hashlib.sha256(folded.encode()).hexdigest()[:32]


def _key(kind: str, scope: LockoutScope, ident: str) -> str:
    return f"{KEY_PREFIX}{kind}:{scope.value}:{ident}"


# --- Where the attempt came from -------------------------------------------------------


def login_entry_point(request: HttpRequest | None) -> LoginEntryPoint:
    match = getattr(request, "resolver_match", None)
    if match is not None and "admin" in match.namespaces:
        return LoginEntryPoint.ADMIN
    view_class = getattr(getattr(match, "func", None), "view_class", None)
    # Imported here: crm.services is loaded by every worker, which never serves a
    # request, and DRF's views bring requests, urllib3 and the schema generator (~6 MB).
    from rest_framework.views import APIView  # noqa: PLC0415

    if isinstance(view_class, type) and issubclass(view_class, APIView):
        return LoginEntryPoint.API
    return LoginEntryPoint.PAGE


def login_lockout_remember(request: HttpRequest, lockout: Lockout) -> None:
    """Leave ``lockout`` on the request: ``authenticate()`` can only answer None, and
    the view must still tell the person why and for how long."""
    request.__dict__[_REQUEST_ATTRIBUTE] = lockout


def login_lockout_of(request: HttpRequest) -> Lockout | None:
    """The lock-out that refused this request's log-in, if that was the reason."""
    lockout: Lockout | None = request.__dict__.get(_REQUEST_ATTRIBUTE)
    return lockout


# --- Counting --------------------------------------------------------------------------


def login_lockout_find(*, username: str, address: str) -> Lockout | None:
    """The lock that refuses a log-in as ``username`` from ``address`` now, if any
    (the account's first). One round trip to the cache."""
    keys = {LockoutScope.ACCOUNT: _key("lock", LockoutScope.ACCOUNT, _account_id(username))}
    if address:
        keys[LockoutScope.ADDRESS] = _key("lock", LockoutScope.ADDRESS, _address_id(address))
    stored = cache.get_many(list(keys.values()))
    now = _now().timestamp()
    for scope, key in keys.items():
        until = stored.get(key)
        if until is not None and until > now:
            return Lockout(scope=scope, locked_until=dt.datetime.fromtimestamp(until, tz=dt.UTC))
    return None


def login_failure_record(*, username: str, address: str, entry_point: LoginEntryPoint) -> Lockout | None:
    """Count a wrong password; the lock it started, if it reached a limit."""
    window = settings.CRM_LOGIN_FAILURE_WINDOW_MINUTES * 60
    counted = [(LockoutScope.ACCOUNT, _account_id(username), settings.CRM_LOGIN_ACCOUNT_FAILURES)]
    if address:
        counted.append((LockoutScope.ADDRESS, _address_id(address), settings.CRM_LOGIN_ADDRESS_FAILURES))
    started: Lockout | None = None
    for scope, ident, limit in counted:
        failures = _count(_key("failures", scope, ident), window)
        if failures >= limit:
            lockout = _lock(scope=scope, ident=ident, username=username, address=address,
                            failures=failures, entry_point=entry_point)  # fmt: skip
            started = started or lockout
    return started


def login_success_record(*, username: str) -> None:
    """The right password: this account's earlier failures are forgiven."""
    cache.delete(_key("failures", LockoutScope.ACCOUNT, _account_id(username)))


def _count(key: str, window: int) -> int:
    cache.add(key, 0, timeout=window)
    try:
        failures = cache.incr(key)
    except ValueError:  # the count expired between the two calls: start a new one
        cache.add(key, 0, timeout=window)
        failures = cache.incr(key)
    if failures == 1:
        # Django checks that the key exists before INCR; had it expired in
        # between, INCR made a new count without an expiry. A new count always gets one.
        cache.touch(key, window)
    return int(failures)


def _lock(
    *, scope: LockoutScope, ident: str, username: str, address: str, failures: int,
    entry_point: LoginEntryPoint,
) -> Lockout:  # fmt: skip
    """1. store the lock, unless a concurrent failure just did (one lock, one row);
    2. start the count afresh, so the lock's end does not leave a full count behind;
    3. write the audit row."""
    seconds = settings.CRM_LOGIN_LOCKOUT_MINUTES * 60
    locked_until = _now() + dt.timedelta(seconds=seconds)
    lock_key = _key("lock", scope, ident)
    if not cache.add(lock_key, locked_until.timestamp(), timeout=seconds):
        current = cache.get(lock_key)
        if current is not None and current > _now().timestamp():
            return Lockout(scope=scope, locked_until=dt.datetime.fromtimestamp(current, tz=dt.UTC))
        # Only a lock whose time is up and whose key has not yet expired gets here.
        cache.set(lock_key, locked_until.timestamp(), timeout=seconds)
    cache.delete(_key("failures", scope, ident))
    with transaction.atomic():
        LoginLockout.objects.create(
            username=username[:150], client_address=address or None, scope=scope, attempts=failures,
            locked_until=locked_until, entry_point=entry_point,
        )  # fmt: skip
    logger.warning(
        "Password log-in locked for this %s until %s after %d failures (username %r from %s via %s)",
        scope.label.lower(), locked_until.isoformat(), failures, username,
        address or "an unknown address", entry_point.value,
    )  # fmt: skip
    return Lockout(scope=scope, locked_until=locked_until)
