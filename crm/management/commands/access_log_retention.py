"""Drop the access log's months older than the retention period.

``manage.py access_log_retention --keep-months 24 [--dry-run] [--force]``

Whole monthly partitions go (DETACH PARTITION, then DROP TABLE); no row is ever
deleted. Every row is kept at least ``--keep-months`` whole months: with 24 in
November 2026, the months up to October 2024 are dropped. Fewer than 12 months
needs ``--force``. Rows waiting in the DEFAULT partition are first moved into
monthly partitions, so expired ones go with their month. Each drop is logged
(logger ``crm.access_log``) and printed.

Run it as the role that owns the tables (the application's role does not, so it
can neither truncate nor drop the log); it takes a brief lock on the log per
month dropped and gives up after 5 s if a long read holds it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import OperationalError

from crm import services
from crm.services.access_partitions import DEFAULT_PARTITION, MIN_KEEP_MONTHS


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


class Command(BaseCommand):
    help = "Drop whole months of the access log older than --keep-months (never single rows)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--keep-months", type=int, required=True,
            help="Months to keep before the current one, e.g. 24.",
        )  # fmt: skip
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be dropped; change nothing."
        )
        parser.add_argument(
            "--force", action="store_true", help=f"Allow keeping fewer than {MIN_KEEP_MONTHS} months."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        try:
            outcome = services.access_log_retention_apply(
                keep_months=options["keep_months"], dry_run=dry_run, force=options["force"]
            )
        except ValidationError as exc:
            raise CommandError(" ".join(f"--keep-months: {m}" for m in exc.messages)) from None
        except OperationalError as exc:
            if isinstance(exc.__cause__, psycopg.errors.LockNotAvailable):
                raise CommandError(
                    "The access log stayed locked by another session for 5 s; nothing more was "
                    "dropped. Run the command again (months dropped so far stay dropped)."
                ) from None
            raise
        cutoff = outcome.cutoff.date().isoformat()
        for made in outcome.moved:
            self.stdout.write(f"Moved {_rows(made.rows_moved)} out of {DEFAULT_PARTITION} into {made.name}.")
        if outcome.expired_in_default:
            self.stdout.write(
                f"In {DEFAULT_PARTITION}: {_rows(outcome.expired_in_default)} from before {cutoff}; "
                "a real run moves them into monthly partitions first and drops those too."
            )
        verb = "Would drop" if dry_run else "Dropped"
        for partition in outcome.dropped:
            self.stdout.write(f"{verb} {partition.label}.")
        if not outcome.dropped:
            self.stdout.write(f"Nothing to drop: no month ends before {cutoff}.")
        if outcome.kept:
            first, last = outcome.kept[0].month, outcome.kept[-1].month
            self.stdout.write(
                f"Kept {len(outcome.kept)} months, {first:%Y-%m} to {last:%Y-%m} (rows from {cutoff} on)."
            )
