"""Authentication backend: Django's ModelBackend with failed log-ins counted
and locked (crm.services.logins), and permissions resolved without extra
queries on every request.

Every password log-in (API token endpoint, staff page, admin) calls
``authenticate()`` and so comes through ``RoleBackend.authenticate``: guarding
it here means no entry point, present or future, can skip the guard.

ModelBackend reads a user, then their own and their groups' permissions in two
more queries (over a millisecond together, most of it planning). The user of a
signed-in session is read on every request: one hand-written statement, built
once per process, sent with server-side binding (prepared after a few runs). Here the user
row (or the API token's row, crm.authentication) carries two small arrays: the
user's group ids and directly granted permission ids. Ids become names through
a per-process catalog of every group's permissions, reloaded every
``CATALOG_TTL`` seconds: a change of group membership or of a direct grant
applies at once, a change to what a role's group may do within that time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.contrib.postgres.expressions import ArraySubquery
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.db.models import OuterRef
from django.http import HttpRequest

from crm import services
from crm.models import User
from crm.services.events import server_bound_cursor

CATALOG_TTL = 30.0


@dataclass(frozen=True)
class Catalog:
    loaded_at: float
    permission_names: dict[int, str]  # permission id -> "app.codename"
    group_names: dict[int, str]  # group id -> role name
    group_permissions: dict[int, frozenset[int]]  # group id -> permission ids


_lock = threading.Lock()
_catalog: Catalog | None = None


def _load_catalog(*, max_age: float = CATALOG_TTL) -> Catalog:
    global _catalog  # noqa: PLW0603  (a process-wide cache by design)
    current = _catalog
    if current is not None and time.monotonic() - current.loaded_at < max_age:
        return current
    with _lock:
        names = {
            pk: f"{app}.{codename}"
            for pk, app, codename in Permission.objects.values_list(
                "pk", "content_type__app_label", "codename"
            )
        }
        by_group: dict[int, set[int]] = {}
        for group_id, permission_id in Group.permissions.through.objects.values_list(
            "group_id", "permission_id"
        ):
            by_group.setdefault(group_id, set()).add(permission_id)
        _catalog = Catalog(
            loaded_at=time.monotonic(),
            permission_names=names,
            group_names=dict(Group.objects.values_list("pk", "name")),
            group_permissions={g: frozenset(p) for g, p in by_group.items()},
        )
        return _catalog


def forget_catalog() -> None:
    """Drop the cached catalog (tests and management commands that change roles)."""
    global _catalog  # noqa: PLW0603
    _catalog = None


def group_ids(user_ref: str = "pk") -> ArraySubquery:
    return ArraySubquery(
        User.groups.through._default_manager.filter(user_id=OuterRef(user_ref)).values("group_id")
    )


def direct_permission_ids(user_ref: str = "pk") -> ArraySubquery:
    return ArraySubquery(
        User.user_permissions.through._default_manager.filter(user_id=OuterRef(user_ref)).values(
            "permission_id"
        )
    )


def with_access(queryset: Any, user_ref: str = "pk") -> Any:
    """Annotate a queryset of users (or rows pointing at a user) with what
    ``remember_permissions`` needs."""
    return queryset.annotate(
        access_group_ids=group_ids(user_ref), access_permission_ids=direct_permission_ids(user_ref)
    )


def remember_permissions(user: User, group_ids: list[int], permission_ids: list[int]) -> User:
    catalog = _load_catalog()
    if any(g not in catalog.group_names for g in group_ids) or any(
        p not in catalog.permission_names for p in permission_ids
    ):
        # A group or permission newer than the catalog: reload, at most once a second.
        catalog = _load_catalog(max_age=1.0)
    # The roles come along: User.roles reads this instead of querying the groups.
    user._roles_cache = frozenset(catalog.group_names[g] for g in group_ids if g in catalog.group_names)
    if user.is_superuser:
        return user
    wanted = set(permission_ids)
    for group_id in group_ids:
        wanted |= catalog.group_permissions.get(group_id, frozenset())
    user._perm_cache = {  # type: ignore[attr-defined]
        catalog.permission_names[p] for p in wanted if p in catalog.permission_names
    }
    return user


_user_sql: str | None = None


def _user_lookup_sql() -> str:
    """SELECT user.* (in the model's field order, for ``Model.from_db``), the
    user's group ids and direct permission ids: what ``with_access`` asks the ORM
    for, whose compilation was most of the user's read."""
    global _user_sql  # noqa: PLW0603  (built once per process from the model)
    if _user_sql is None:
        quote = connection.ops.quote_name
        columns = ", ".join(f"u.{quote(f.column)}" for f in User._meta.concrete_fields)
        groups = User.groups.through._meta
        permissions = User.user_permissions.through._meta
        _user_sql = (
            f"SELECT {columns}, "
            f"ARRAY(SELECT g.{quote('group_id')} FROM {quote(groups.db_table)} g "
            f"WHERE g.{quote('user_id')} = u.{quote('id')}), "
            f"ARRAY(SELECT p.{quote('permission_id')} FROM {quote(permissions.db_table)} p "
            f"WHERE p.{quote('user_id')} = u.{quote('id')}) "
            f"FROM {quote(User._meta.db_table)} u WHERE u.{quote('id')} = %s"
        )
    return _user_sql


def user_with_access(user_id: Any) -> tuple[User, list[int], list[int]] | None:
    """The user ``user_id`` names (None: no such user, or not an id) with their
    group and direct permission ids, in one statement. Read afresh each time: a
    deactivated user or a changed password must end the session on the next request."""
    try:
        pk = User._meta.pk.to_python(user_id)  # type: ignore[union-attr]
    except ValidationError:
        return None
    with server_bound_cursor() as cursor:  # the same statement on every request: prepared
        cursor.execute(_user_lookup_sql(), [pk])
        row: Sequence[Any] | None = cursor.fetchone()
    if row is None:
        return None
    attnames = [f.attname for f in User._meta.concrete_fields]
    user = User.from_db(connection.alias, attnames, row[: len(attnames)])
    return user, list(row[len(attnames)] or []), list(row[len(attnames) + 1] or [])


class RoleBackend(ModelBackend):
    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None,
        **kwargs: Any,
    ) -> User | None:  # fmt: skip
        """A locked account or address is refused before its password is looked at.

        A refusal for a lock raises PermissionDenied, which makes ``authenticate()``
        stop at once (no other backend gets to try) and answer None; the lock-out
        is left on the request for the view to explain."""
        if username is None:
            username = kwargs.get(User.USERNAME_FIELD)
        if username is None or password is None:
            return None
        address = services.client_address(request) if request is not None else ""
        lockout = services.login_lockout_find(username=username, address=address)
        if lockout is None:
            user = super().authenticate(request, username=username, password=password, **kwargs)
            if user is not None:
                services.login_success_record(username=username)
                return user
            lockout = services.login_failure_record(
                username=username, address=address, entry_point=services.login_entry_point(request)
            )
            if lockout is None:
                return None
        if request is not None:
            services.login_lockout_remember(request, lockout)
        raise PermissionDenied(lockout.message)

    def get_user(self, user_id: Any) -> User | None:
        found = user_with_access(user_id)
        if found is None or not self.user_can_authenticate(found[0]):
            return None
        user, group_ids, permission_ids = found
        return remember_permissions(user, group_ids, permission_ids)

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            if user_obj.is_superuser:
                user_obj._perm_cache = set(_load_catalog().permission_names.values())
            else:
                row = with_access(User.objects.filter(pk=user_obj.pk)).values_list(
                    "access_group_ids", "access_permission_ids"
                )
                groups, direct = row.first() or ([], [])
                remember_permissions(user_obj, groups, direct)
        return user_obj._perm_cache  # type: ignore[no-any-return]
