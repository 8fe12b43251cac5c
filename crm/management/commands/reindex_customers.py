"""Recompute every customer's stored search keys in the background.

Run it after the folding or phonetic rules in ``crm/search_keys.py`` change. The
command only enqueues ``crm.tasks.customers_reindex_search`` in chunks; Celery
workers do the writes, so a million customers never sit in one transaction and
the command returns as soon as the work is queued.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from crm import tasks
from crm.models import Customer

CHUNK_SIZE = 1_000


class Command(BaseCommand):
    help = "Enqueue a search-key reindex of every customer, 1,000 customers per Celery task."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--chunk-size", type=int, default=CHUNK_SIZE, help=f"Customers per task (default {CHUNK_SIZE})."
        )
        parser.add_argument(
            "--queue", default=None, help="Celery queue to send the tasks to (default: the usual routing)."
        )

    def handle(self, *args: Any, chunk_size: int, queue: str | None, **options: Any) -> None:
        if chunk_size < 1:
            raise CommandError("--chunk-size must be at least 1.")
        routing: dict[str, Any] = {"queue": queue} if queue else {}
        total = Customer.objects.count()
        planned = -(-total // chunk_size)  # ceiling division
        sent = chunks = 0
        last_id = 0
        while True:
            # Keyset pagination rather than a server-side cursor: nothing stays
            # open between chunks, and customers created meanwhile are still
            # reached (they are indexed on creation anyway).
            ids = list(
                Customer.objects.filter(pk__gt=last_id)
                .order_by("pk")
                .values_list("pk", flat=True)[:chunk_size]
            )
            if not ids:
                break
            tasks.customers_reindex_search.apply_async(args=(ids,), **routing)
            sent += len(ids)
            chunks += 1
            last_id = ids[-1]
            # Customers created meanwhile can push past the first count.
            total, planned = max(total, sent), max(planned, chunks)
            self.stdout.write(f"Enqueued {sent:,} of {total:,} customers (task {chunks:,} of {planned:,})")
        self.stdout.write(self.style.SUCCESS(f"Done: {sent:,} customers in {chunks:,} tasks."))
