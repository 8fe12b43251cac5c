"""Bearer-token authentication for integrations and self-service customers."""

from __future__ import annotations

import datetime as dt
import hashlib

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from crm.backends import remember_permissions, with_access
from crm.models import ApiToken, User

TOKEN_PREFIX = "crm_"


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer crm_...``. Only the token's digest is stored."""

    keywords = ("bearer", "token")

    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace").lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: send 'Authorization: Bearer <token>'."
            )
        secret = header[1].decode(errors="replace")
        # The caller's permissions come with the token: one query for both.
        token = (
            with_access(ApiToken.objects.select_related("user"), "user_id")
            .filter(digest=token_digest(secret))
            .first()
        )
        now = timezone.now()
        if token is None or not token.is_usable(now):
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("This token's user is disabled.")
        # Record use at most once a minute: a busy integration must not write on every call.
        if token.last_used_at is None or now - token.last_used_at > dt.timedelta(minutes=1):
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        user = remember_permissions(token.user, token.access_group_ids, token.access_permission_ids)
        return user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
