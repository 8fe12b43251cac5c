"""Create the access log's monthly partitions ahead of its rows.

``manage.py access_log_partitions [--months-ahead 3] [--since 2023-01]``

Idempotent: months that exist are left alone. Celery beat runs the same every
day (``crm.tasks.access_log_partitions_ensure``); run it by hand before loading
older rows (``--since``). Rows found in the DEFAULT partition (written when
their month had no partition) are moved into the month made for them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from crm import services
from crm.services.access_partitions import DEFAULT_PARTITION, MONTHS_AHEAD


def _month(text: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(text, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError:
        raise CommandError(f"--since {text!r} is not a month: write it as YYYY-MM, e.g. 2023-01.") from None


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


class Command(BaseCommand):
    help = "Create the access log's monthly partitions for this month and the next few (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--months-ahead", type=int, default=MONTHS_AHEAD,
            help=f"Months after the current one to create (default {MONTHS_AHEAD}).",
        )  # fmt: skip
        parser.add_argument(
            "--since", help="Also create every month from this one (YYYY-MM), to load older rows."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        since = _month(options["since"]) if options["since"] else None
        try:
            created = services.access_log_partitions_ensure(months_ahead=options["months_ahead"], since=since)
        except ValidationError as exc:
            raise CommandError(" ".join(f"--months-ahead: {m}" for m in exc.messages)) from None
        for partition in created:
            moved = f", moved {_rows(partition.rows_moved)} into it from {DEFAULT_PARTITION}"
            self.stdout.write(f"Created {partition.name}{moved if partition.rows_moved else ''}.")
        if not created:
            self.stdout.write("Nothing to create: every month asked for has its partition.")
