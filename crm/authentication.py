"""Bearer-token authentication for integrations, staff and self-service customers."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from crm.backends import remember_permissions, with_access
from crm.models import ApiToken, User
from crm.services.tokens import TOKEN_PREFIX, token_digest

__all__ = ["TOKEN_PREFIX", "ApiTokenAuthentication", "token_digest"]


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
        # The caller's permissions, and an integration's source system, come with
        # the token: one query for all of them.
        token = (
            with_access(ApiToken.objects.select_related("user__source_system"), "user_id")
            .filter(digest=token_digest(secret))
            .first()
        )
        now = timezone.now()
        if token is None or not token.is_usable(now):
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("This token's user is disabled.")
        source = token.user.source_system
        if source is not None and not source.active:
            # Deactivating a source system cuts its integration off at once,
            # without hunting down each of its tokens.
            raise exceptions.AuthenticationFailed(
                f"The source system “{source.code}” is deactivated: an administrator can "
                "reactivate it in the admin."
            )
        # Record use at most once a minute: a busy integration must not write on every call.
        if token.last_used_at is None or now - token.last_used_at > dt.timedelta(minutes=1):
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        user = remember_permissions(token.user, token.access_group_ids, token.access_permission_ids)
        return user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
