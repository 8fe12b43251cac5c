"""What day it is, always in a zone someone chose.

``timezone.localdate()`` answers in whatever zone the current request happened
to activate (an agent's in Chicago, a customer's in Tokyo), so the same call
would give two dates for one instant. Every "today" in the product comes from
here instead, naming the zone it is read in.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from django.utils import timezone

# The easternmost civil zone (Line Islands, UTC+14): the first place a date begins.
_FIRST_TO_START_A_DAY = dt.timezone(dt.timedelta(hours=14))


def today_utc() -> dt.date:
    """Today's date in UTC: for facts that belong to no one's wall clock."""
    return timezone.now().astimezone(dt.UTC).date()


def today_in(zone: str | None) -> dt.date:
    """Today's date on the wall clocks of ``zone`` (an IANA name); UTC when it is
    empty or unknown, so a bad zone on a record never stops a write."""
    if not zone:
        return today_utc()
    try:
        tz = zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return today_utc()
    return timezone.now().astimezone(tz).date()


def latest_date_anywhere() -> dt.date:
    """The latest date that has begun somewhere on Earth: a date after it is in
    the future for everyone (a birth date entered in Kiribati included)."""
    return timezone.now().astimezone(_FIRST_TO_START_A_DAY).date()
