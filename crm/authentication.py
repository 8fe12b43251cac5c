"""Bearer-token authentication for integrations, staff and self-service customers.

Every API request comes through here, so the token's look-up is one hand-written
SQL statement, built once per process from the models' columns: the token, its
user, the user's source system and the user's group and permission ids. The ORM
spent about half of a simple request building and compiling the equivalent
annotated query. Nothing is cached between requests: a revoked or expired token,
a disabled user or a deactivated source system is refused on its very next
request (a cache would have to be told of each of those, in every process).
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from django.db import connection
from django.db.models import Model
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from crm.backends import remember_permissions
from crm.models import ApiToken, SourceSystem, User
from crm.services.events import server_bound_cursor
from crm.services.tokens import TOKEN_PREFIX, token_digest

__all__ = ["TOKEN_PREFIX", "ApiTokenAuthentication", "token_digest"]

_ROW_MODELS: tuple[type[Model], ...] = (ApiToken, User, SourceSystem)
_sql: str | None = None
_sql_lock = threading.Lock()


def _columns(model: type[Model]) -> list[str]:
    return [field.column for field in model._meta.concrete_fields]


def _lookup_sql() -> str:
    """SELECT token.*, user.*, source.*, the user's group ids, their permission ids
    (in the models' field order, so that ``Model.from_db`` reads them directly)."""
    global _sql  # noqa: PLW0603  (built once per process from the models)
    if _sql is not None:
        return _sql
    with _sql_lock:
        quote = connection.ops.quote_name
        selected = [
            f"{alias}.{quote(column)}"
            for alias, model in zip(("t", "u", "s"), _ROW_MODELS, strict=True)
            for column in _columns(model)
        ]
        groups = User.groups.through._meta
        permissions = User.user_permissions.through._meta
        _sql = (
            f"SELECT {', '.join(selected)}, "
            f"ARRAY(SELECT g.{quote('group_id')} FROM {quote(groups.db_table)} g "
            f"WHERE g.{quote('user_id')} = u.{quote('id')}), "
            f"ARRAY(SELECT p.{quote('permission_id')} FROM {quote(permissions.db_table)} p "
            f"WHERE p.{quote('user_id')} = u.{quote('id')}) "
            f"FROM {quote(ApiToken._meta.db_table)} t "
            f"JOIN {quote(User._meta.db_table)} u ON u.{quote('id')} = t.{quote('user_id')} "
            f"LEFT JOIN {quote(SourceSystem._meta.db_table)} s "
            f"ON s.{quote('id')} = u.{quote('source_system_id')} "
            f"WHERE t.{quote('digest')} = %s"
        )
        return _sql


def token_lookup(secret: str) -> tuple[ApiToken, list[int], list[int]] | None:
    """The token whose digest matches ``secret``, with its user (and the user's
    source system) attached, and the user's group and direct permission ids."""
    with server_bound_cursor() as cursor:  # the same statement on every request: prepared
        cursor.execute(_lookup_sql(), [token_digest(secret)])
        row = cursor.fetchone()
    if row is None:
        return None
    instances: list[Any] = []
    start = 0
    for model in _ROW_MODELS:
        attnames = [field.attname for field in model._meta.concrete_fields]
        values = row[start : start + len(attnames)]
        start += len(attnames)
        instances.append(None if values[0] is None else model.from_db(connection.alias, attnames, values))
    token, user, source = instances
    User.source_system.field.set_cached_value(user, source)
    ApiToken.user.field.set_cached_value(token, user)
    return token, list(row[start] or []), list(row[start + 1] or [])


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
        found = token_lookup(header[1].decode(errors="replace"))
        now = timezone.now()
        if found is None or not found[0].is_usable(now):
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        token, group_ids, permission_ids = found
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
        user = remember_permissions(token.user, group_ids, permission_ids)
        return user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
