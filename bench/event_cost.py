"""What one event costs, for ``bench/event_to_offer.py --cost N``: N events POSTed
one after the other (no sockets, no load) to a real uvicorn, and the CPU each
process spends on them (the web's, the Celery worker's, PostgreSQL's by kind of
backend), the WAL written, and the SQL statements of one event."""

from __future__ import annotations

import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.event_to_offer import EVENTS_PER_CUSTOMER, event_body


def _nth(n: int, customers: list[int], run: str) -> dict[str, Any]:
    """The ``n``-th event: each customer gets EVENTS_PER_CUSTOMER in a row, as in a run."""
    return event_body(n, customers[(n // EVENTS_PER_CUSTOMER) % len(customers)], run)


def cost(  # noqa: PLR0917
    port: int, web_pid: int, token: str, customers: list[int], run: str, count: int, limits: dict[str, str]
) -> dict[str, Any]:
    """What one event costs, with nothing else going on: the web process's CPU
    seconds over ``count`` sequential POSTs (real HTTP, keep-alive off as most
    integrations send), and the SQL statements of one event, counted here through
    the same view, commit and on-commit decision with the Django test client."""
    import psutil
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, override_settings
    from django.utils import timezone

    from policies.models import OfferPresentation

    class _BackCpu:
        """For ``cost``: the CPU the Celery worker (all its processes) and PostgreSQL
        (every backend, by kind) spend on the events, and the WAL they write. A
        process that exited meanwhile is counted through its parent's reaped
        children's times (the worker's pool and the postmaster wait for theirs)."""

        def __init__(self, web_pid: int) -> None:
            import psutil

            children = psutil.Process().children()
            self.worker = next(p for p in children if p.pid != web_pid and "celery" in " ".join(p.cmdline()))
            with connection.cursor() as cursor:
                cursor.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
                data_directory = cursor.fetchone()[0]
            self.since = timezone.now()  # earlier runs' leftovers are the sweep's
            self.postmaster = psutil.Process(
                int(Path(data_directory, "postmaster.pid").read_text().split()[0])
            )

        @staticmethod
        def _tree(parent: Any) -> dict[str, float]:
            import psutil

            own = parent.cpu_times()
            kinds = {"reaped": own.children_user + own.children_system, "main": own.user + own.system}
            for child in parent.children():
                try:
                    times, title = child.cpu_times(), " ".join(child.cmdline())
                except psutil.Error:
                    continue  # exited meanwhile: in "reaped" next time
                kind = "pool"
                if title.startswith("postgres:"):
                    words = title.split()
                    kind = "client" if "[local]" in title else " ".join(words[1:3])
                kinds[kind] = kinds.get(kind, 0.0) + times.user + times.system
            return kinds

        def snapshot(self) -> dict[str, Any]:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
                wal = int(cursor.fetchone()[0])
            return {"worker": self._tree(self.worker), "pg": self._tree(self.postmaster), "wal": wal}

        def drained(self, timeout: float = 120.0) -> None:
            """Wait until the worker has dispatched every event (and the events those
            made), then for its CPU to settle."""
            from django.conf import settings

            from crm.models import BusinessEvent

            deadline = time.monotonic() + timeout
            while (
                time.monotonic() < deadline
                and BusinessEvent.objects.filter(
                    recorded_at__gte=self.since,
                    dispatched_at__isnull=True,
                    dispatch_attempts__lt=settings.CRM_EVENT_DISPATCH_MAX_ATTEMPTS,
                ).exists()
            ):
                time.sleep(0.2)
            time.sleep(1.0)

        @staticmethod
        def per_event(before: dict[str, Any], after: dict[str, Any], count: int) -> dict[str, Any]:
            def ms(side: str) -> dict[str, float]:
                kinds = set(before[side]) | set(after[side])
                return {k: (after[side].get(k, 0.0) - before[side].get(k, 0.0)) * 1000 / count for k in kinds}

            worker, pg = ms("worker"), ms("pg")
            return {
                "worker_cpu_ms_per_event": round(sum(worker.values()), 2),
                "pg_cpu_ms_per_event": round(sum(pg.values()), 2),
                "pg_cpu_ms_per_event_by_kind": {
                    k: round(v, 3) for k, v in sorted(pg.items()) if abs(v) >= 0.005
                },
                "wal_bytes_per_event": round((after["wal"] - before["wal"]) / count),
            }

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(n: int) -> None:
        body = json.dumps(_nth(n, customers, run)).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/events", data=body, method="POST", headers=headers
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            response.read()

    web = psutil.Process(web_pid)
    back_cpu = _BackCpu(web_pid)
    for n in range(50):  # warm-up: the index, the pool, compiled statements
        post(n)
    back_cpu.drained()
    back_before = back_cpu.snapshot()
    before = web.cpu_times()
    wall = time.perf_counter()
    for n in range(50, 50 + count):
        post(n)
    wall = time.perf_counter() - wall
    after = web.cpu_times()
    cpu = (after.user + after.system) - (before.user + before.system)
    back_cpu.drained()
    back = back_cpu.per_event(back_before, back_cpu.snapshot(), count)
    offers = OfferPresentation.objects.filter(event__idempotency_key__startswith=f"e2o-{run}-").count()

    client = Client()
    per_event: list[int] = []
    channels = ("agent_screen", "self_service", "email", "outbound_call")
    limit_settings = {"POLICIES_CHANNEL_DAILY_LIMITS": dict.fromkeys(channels, 100000)}
    with override_settings(**limit_settings):
        for n in range(50 + count, 50 + count + 50):
            with CaptureQueriesContext(connection) as queries:
                response = client.post(
                    "/api/v1/events", data=_nth(n, customers, run), content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {token}", secure=True,
                )  # fmt: skip
            assert response.status_code == 201, response.content
            per_event.append(len(queries))
    return {
        "bench": "event_cost", "events": count, "web_cpu_ms_per_event": round(cpu * 1000 / count, 2),
        "wall_ms_per_event": round(wall * 1000 / count, 2),
        "offers_per_event": round(offers / (count + 50), 2),
        "sql_per_event_p50": statistics.median(per_event), "sql_per_event_max": max(per_event),
        **back,
    }  # fmt: skip
