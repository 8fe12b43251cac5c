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
            " SELECT %s, unnest(%s::bigint[]), %s, %s, %s"
            + (_NO_FLUSH_WAIT if connection.get_autocommit() else ""),
            [user.pk, ids, channel, path[:300], timezone.now()],
        )
    return len(ids)


# When the row is its own transaction (the read's request writes nothing else), its
# commit does not wait for the write-ahead log's flush to disk: on a loaded machine that
# wait (up to ~10 ms) was the largest single cost of a screen pop, paid while the caller
# waits. The trade: the row is committed and visible at once, and PostgreSQL's WAL writer
# flushes it within a fraction of a second (3 x wal_writer_delay); only a crash of the
# database server itself inside that fraction can lose it. A clean run never loses a row,
# and a failed INSERT still raises (the read fails, it is never left unlogged). Inside an
# enclosing transaction the setting would also relax that transaction's other writes, so
# there the commit stays synchronous. ``set_config(..., true)`` is SET LOCAL: it lasts
# until this statement's own commit and changes nothing for the connection's next one.
_NO_FLUSH_WAIT = " WHERE set_config('synchronous_commit', 'off', true) = 'off'"
