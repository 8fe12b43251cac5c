"""The access log: who read which customer record."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection
from django.utils import timezone

from crm.models import User
from crm.models.choices import AccessChannel

# --- Access log ---------------------------------------------------------------------------


def access_log_record(
    *, user: User, customer_ids: Iterable[int], channel: str = AccessChannel.API, path: str = ""
) -> int:
    """Append one row per customer read by a staff member or an integration.

    A customer reading their own record is not logged: the log is about who
    else looked."""
    if user.is_customer:
        return 0
    ids = list(dict.fromkeys(customer_ids))
    if not ids:
        return 0
    if channel not in AccessChannel.values:
        raise ValueError(f"unknown access channel {channel!r}")
    # One statement for any number of rows and no transaction of its own: this
    # runs on every screen pop and every API read.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO crm_accesslogentry (user_id, customer_id, channel, path, at)"
            " SELECT %s, unnest(%s::bigint[]), %s, %s, %s",
            [user.pk, ids, channel, path[:300], timezone.now()],
        )
    return len(ids)
