"""Log-ins and API tokens."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from crm.models import ApiToken, Customer, User

TOKEN_PREFIX = "crm_"

logger = logging.getLogger(__name__)


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# --- Users, roles and tokens -------------------------------------------------------------


def staff_user_create(
    *, username: str, password: str, role: str, first_name: str = "", last_name: str = "",
    email: str = "", time_zone: str = "UTC", superuser: bool = False,
) -> User:  # fmt: skip
    group = Group.objects.filter(name=role).first()
    if group is None:
        raise ValidationError({"role": "Use one of: agent, supervisor, administrator."})
    user = User(
        username=username, first_name=first_name, last_name=last_name, email=email,
        time_zone=time_zone, is_staff=role == "administrator",
        is_superuser=superuser and role == "administrator",
    )  # fmt: skip
    user.set_password(password)
    user.full_clean()
    with transaction.atomic():
        user.save()
        user.groups.add(group)
    return user


def customer_login_create(*, customer: Customer, username: str, password: str) -> User:
    """A self-service log-in that sees only ``customer``."""
    user = User(username=username, customer=customer, email=customer.primary_email,
                first_name=customer.given_name, last_name=customer.family_name,
                time_zone=customer.time_zone)  # fmt: skip
    user.set_password(password)
    user.full_clean()
    user.save()
    return user


def api_token_lifetime(*, user: User) -> dt.timedelta | None:
    """The longest a token of ``user`` may live; None for an integration, whose
    token lives until revoked or rotated (or its source system is deactivated)."""
    if user.is_integration:
        return None
    hours = settings.CRM_CUSTOMER_TOKEN_TTL_HOURS if user.is_customer else settings.CRM_STAFF_TOKEN_TTL_HOURS
    return dt.timedelta(hours=hours)


def api_token_create(*, user: User, name: str, ttl: dt.timedelta | None = None) -> tuple[ApiToken, str]:
    """Issue a token; the secret is returned once and only its digest is stored.

    Staff and customer tokens always expire: after ``ttl`` or their kind's lifetime
    (CRM_STAFF_TOKEN_TTL_HOURS, CRM_CUSTOMER_TOKEN_TTL_HOURS), whichever is sooner,
    however they are issued (password grant, command, admin). An integration's
    token expires only when ``ttl`` is given."""
    if ttl is not None and ttl <= dt.timedelta(0):
        raise ValidationError({"ttl": "A token's lifetime must be positive, e.g. timedelta(hours=1)."})
    longest = api_token_lifetime(user=user)
    if longest is not None:
        ttl = longest if ttl is None else min(ttl, longest)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name[:100], prefix=secret[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + 8],
        digest=token_digest(secret), expires_at=timezone.now() + ttl if ttl else None,
    )  # fmt: skip
    return token, secret


def api_token_revoke(*, token_id: int, actor: User) -> None:
    api_tokens_revoke(token_ids=[token_id], actor=actor)


def api_tokens_revoke(*, token_ids: list[int], actor: User) -> int:
    """Revoke these tokens at once (each stops working on its next request);
    revoking one already revoked keeps its first revocation time."""
    revoked = ApiToken.objects.filter(pk__in=token_ids, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if revoked:
        logger.info("%s revoked %d API token(s): %s", actor.get_username(), revoked, sorted(token_ids))
    return revoked


def api_tokens_purge_expired(*, older_than: dt.timedelta = dt.timedelta(days=30)) -> int:
    """Delete tokens that expired or were revoked more than ``older_than`` ago."""
    cutoff = timezone.now() - older_than
    expired = ApiToken.objects.filter(expires_at__lt=cutoff)
    revoked = ApiToken.objects.filter(revoked_at__lt=cutoff)
    deleted = expired.delete()[0] + revoked.delete()[0]
    return deleted
