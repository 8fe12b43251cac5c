"""Ingest: touchpoint results POSTed in batches until applied to the customer record.

    .venv/bin/python bench/ingest.py [--size small]

Builds its own database (``crm_bench_ingest`` or ``crm_bench_ingest_small``, on
the server DATABASE_URL names or the embedded one) with ``seed_bulk`` once: N
customers, each known to a "bench-web" source by the key ``C<id>``. Then:

1. starts uvicorn (one process) and a Celery worker as the Procfile runs it
   (prefork, two processes, ``--worker-processes`` to change; every task: the
   apply runs and the events' deferred listeners) on a default queue of its own;
2. POSTs N results (a mix: 60% web visits, 20% profile changes of tier,
   address or phone, 12% purchases, 8% consent changes) in batches of 1,000
   from 4 client threads over real HTTP;
3. waits until no result is pending and every event they raised was dispatched
   (its deferred listeners ran); counts what was applied, lost (accepted but not
   applied) and duplicated (an effect written twice);
4. POSTs the same N results again and counts the rows that changed.

Each run starts from a comparable state: the inbox emptied (TRUNCATE), the tables
a run writes vacuumed and analysed, and a CHECKPOINT taken. What earlier runs
applied stays (contacts, events and the append-only change history grow by a
run's worth each time), but no run inherits the previous one's dead rows,
autovacuum work or share of the next checkpoint's full-page images: PostgreSQL's
CPU per result rose from 0.124 to 0.186 ms between two runs on the same data
without it.

Prints the time split: the API (all POSTs answered), the queue (a result's wait
from its POST's commit to a worker's claim) and the apply step (a claim from
start to commit, and the worker-seconds all claims took), and as its last line
one JSON object: events_per_s, events, lost, duplicated, replay_changed,
peak_rss_mb, api_s, queue_wait_p50_s, apply_p50_s, apply_busy_s, ...

The worker's memory, read twice a second during the run (peaks) and once idle
before the first POST (``worker_idle_*``): ``worker_rss_mb`` sums the resident
memory of its processes (the parent and its pool processes), ``worker_pss_mb``
sums their proportional set sizes. The pool processes are forked from the parent
after it imported the code, and share those pages with it until one writes to
them: the RSS sum counts each shared page once per process (three times with two
pool processes), the PSS sum once in all. The worker's target (under 300 MB,
../shared/BENCHMARKS.md) is judged on ``worker_pss_mb``, the physical memory the
worker takes from the machine, which is what a host has to provide for it;
``worker_rss_mb`` stays as the upper bound it was (what the tree would hold if
nothing were shared), and ``worker_process_rss_mb`` is the largest single process,
the figure ``CELERY_WORKER_MAX_MEMORY_PER_CHILD`` acts on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import secrets
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (
    cpu_seconds,
    embedded_postgres_pids,
    largest_rss_mb,
    load_average,
    recreate_database,
    setup_django,
    start_web,
    start_worker,
    stop,
    tree_pids,
    tree_pss_mb,
    tree_rss_mb,
)

SIZES = {"default": 1_000_000, "small": 100_000}
BATCH = 1000
CLIENTS = 4
SOURCE = "bench-web"
# (record kind, source field, target, transform, transform args)
MAPPINGS: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("customer", "tier", "customer.tier", "map", {"values": {"G": "gold", "S": "silver", "B": "standard"}}),
    ("customer", "street", "address.line1", "text", {}),
    ("customer", "city", "address.city", "text", {}),
    ("customer", "country", "address.country", "upper", {}),
    ("customer", "phone", "customer.phone", "phone_e164", {"region": "US"}),
    ("customer", "no_calls", "customer.do_not_call", "boolean", {}),
    ("customer", "no_mail", "customer.do_not_email", "boolean", {}),
    ("interaction", "channel", "interaction.channel", "map", {"values": {"web": "web", "app": "chat"}}),
    ("interaction", "direction", "interaction.direction", "lower", {}),
    ("interaction", "page", "interaction.subject", "text", {}),
    ("interaction", "seconds", "interaction.duration_seconds", "integer", {}),
    ("purchase", "amount", "purchase.amount", "decimal", {}),
    ("purchase", "currency", "purchase.currency", "upper", {}),
    ("purchase", "sku", "purchase.product", "text", {}),
]


def results(n: int, customers: list[int], seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    base = int(time.time()) - 86_400
    for i in range(n):
        pk = rng.choice(customers)
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + i % 80_000))
        roll = rng.random()
        item: dict[str, Any] = {
            "external_id": f"r{i}",
            "customer_key": f"C{pk}",
            "sequence": i,
            "occurred_at": at,
        }
        if roll < 0.60:
            item.update(record_kind="interaction", payload={
                "channel": rng.choice(("web", "app")), "direction": "Inbound",
                "page": rng.choice(("/cards", "/loans", "/help", "/pricing")),
                "seconds": str(rng.randint(5, 900))})  # fmt: skip
        elif roll < 0.80:
            change = rng.random()
            if change < 0.4:
                payload = {"tier": rng.choice("GSB")}
            elif change < 0.7:
                payload = {"street": f"{rng.randint(1, 999)} Elm St", "city": rng.choice(("Reno", "Austin")),
                           "country": "us"}  # fmt: skip
            else:
                payload = {"phone": f"20255501{rng.randint(0, 99):02d}"}
            item.update(record_kind="customer", payload=payload)
        elif roll < 0.92:
            item.update(record_kind="purchase", payload={
                "amount": f"{rng.randint(100, 50_000) / 100:.2f}", "currency": "usd",
                "sku": "sku-1"})  # fmt: skip
        else:
            item.update(
                record_kind="customer",
                payload={rng.choice(("no_calls", "no_mail")): rng.choice(("yes", "no"))},
            )
        items.append(item)
    return items


def post_all(port: int, token: str, items: list[dict[str, Any]]) -> tuple[float, int]:
    """POST every batch from CLIENTS threads, each on its own keep-alive
    connection; return the seconds it took and how many results were accepted."""
    batches = [json.dumps({"results": items[i : i + BATCH]}).encode() for i in range(0, len(items), BATCH)]
    local = threading.local()
    accepted = 0
    lock = threading.Lock()

    def send(body: bytes) -> None:
        nonlocal accepted
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _attempt in range(5):
            try:
                local.conn.request("POST", f"/api/v1/touchpoints/{SOURCE}/results", body=body,
                                   headers={"Authorization": f"Bearer {token}",
                                            "Content-Type": "application/json"})  # fmt: skip
                response = local.conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError):
                local.conn.close()
                local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                continue
            if response.status == 429:
                time.sleep(float(response.getheader("Retry-After") or 1))
                continue
            if response.status != 202:
                raise SystemExit(f"POST answered {response.status}: {data[:500]!r}")
            with lock:
                accepted += json.loads(data)["accepted"]
            return
        raise SystemExit("POST failed 5 times")

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(send, batches))
    return time.monotonic() - started, accepted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--worker-processes", type=int, default=2, help="Celery prefork pool size.")
    args = parser.parse_args()
    # Stopped with a SIGTERM: still stop the server and worker it started (the
    # finally below), or a stray worker keeps claiming the next run's results.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    size = SIZES[args.size]
    database = "crm_bench_ingest" if args.size == "default" else f"crm_bench_ingest_{args.size}"

    url = setup_django(database)
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count
    from django.utils import timezone

    from crm import services
    from crm.models import (
        BusinessEvent,
        Customer,
        FieldMapping,
        SourceSystem,
        TouchpointBatch,
        TouchpointResult,
        User,
    )

    if Customer.objects.count() != size:
        print(f"Building {database}: {size:,} customers ...", file=sys.stderr)
        connection.close()
        recreate_database(url, database)
        call_command("migrate", verbosity=0)
        call_command("seed_bulk", customers=size, interactions_per_customer=0, accounts_per_customer=0,
                     no_progress=True)  # fmt: skip
    source = SourceSystem.objects.filter(code=SOURCE).first()
    if source is None:
        source = services.source_system_create(code=SOURCE, name="Bench web site", kind="web")
    FieldMapping.objects.filter(source_system=source).delete()
    for position, (kind, field, target, transform, targs) in enumerate(MAPPINGS):
        FieldMapping.objects.create(source_system=source, record_kind=kind, source_field=field, target=target,
                                    transform=transform, transform_args=targs, position=position)  # fmt: skip
    # A fresh inbox; what earlier runs applied stays (the change history is
    # append-only), so this run's results carry ids of their own.
    run = f"{int(time.time())}-"
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE crm_touchpointresult, crm_touchpointbatch")
        cursor.execute(
            "INSERT INTO crm_sourcerecord"
            " (source_system_id, external_key, customer_id, created_at, last_seen_at)"
            " SELECT %s, 'C' || id, id, now(), now() FROM crm_customer"
            " ON CONFLICT (source_system_id, external_key) DO NOTHING",
            [source.pk],
        )
    _comparable_start(connection)
    customers = list(Customer.objects.values_list("pk", flat=True))
    items = results(size, customers, seed=size)
    for item in items:
        item["external_id"] = run + item["external_id"]
    user = User.objects.get(source_system=source)
    _, token = services.api_token_create(user=user, name="bench ingest")
    connection.close()

    # The worker runs as in production: every task on the default queue (the apply
    # runs and the events' deferred listeners both), here a queue of this run's own.
    os.environ.update(CELERY_TASK_DEFAULT_QUEUE=f"bench-ingest-{secrets.token_hex(4)}", CRM_INGEST_QUEUE="",
                      LOG_LEVEL="WARNING", CRM_TOUCHPOINT_THROTTLE="100000/min",
                      CELERY_TASK_ALWAYS_EAGER="false")  # fmt: skip
    worker = start_worker(processes=args.worker_processes, log="worker.log")
    web, port = start_web(log="uvicorn.log")
    peak = {"web": 0.0, "worker": 0.0, "worker_process": 0.0, "worker_pss": 0.0}
    # The CPU seconds each process of the web, the worker and the embedded PostgreSQL
    # used, as last read (twice a second: a process that exits keeps its last reading):
    # on a shared machine the wall-clock figures move with the neighbours' load, the
    # CPU a result costs much less so.
    processes = {"web": lambda: tree_pids(web.pid), "worker": lambda: tree_pids(worker.pid),
                 "postgres": embedded_postgres_pids}  # fmt: skip
    cpu: dict[str, dict[int, float]] = {name: {} for name in processes}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for name, pids in processes.items():
                cpu[name].update(cpu_seconds(pids()))
            peak["web"] = max(peak["web"], tree_rss_mb(web.pid))
            peak["worker"] = max(peak["worker"], tree_rss_mb(worker.pid))
            peak["worker_process"] = max(peak["worker_process"], largest_rss_mb(worker.pid))
            peak["worker_pss"] = max(peak["worker_pss"], tree_pss_mb(worker.pid))
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()
    try:
        time.sleep(2)  # the worker's pool
        idle = {"worker_idle_rss_mb": round(tree_rss_mb(worker.pid)),
                "worker_idle_pss_mb": round(tree_pss_mb(worker.pid))}  # fmt: skip

        def pending() -> bool:
            # Whether any is left, not how many: a count read every pending entry of
            # the inbox five times a second (~80 ms of PostgreSQL's CPU each, a third of
            # what it spent per result), which the bench charged to the ingest.
            return TouchpointResult.objects.filter(status="pending").exists()

        def undispatched(since: dt.datetime) -> bool:
            """Whether an event of this run still waits for its deferred listeners
            (the policy engine's decisions are part of the work a result brings)."""
            return BusinessEvent.objects.filter(
                dispatched_at__isnull=True, recorded_at__gte=since, dispatch_error=""
            ).exists()

        def until_applied(started: float, since: dt.datetime) -> float:
            while pending() or undispatched(since):
                if worker.poll() is not None:
                    raise SystemExit("the worker exited; see .local/bench/worker.log")
                time.sleep(0.2)
                if time.monotonic() - started > 3600:
                    raise SystemExit("not applied within an hour")
            return time.monotonic() - started

        cpu_before = {name: dict(readings) for name, readings in cpu.items()}
        started, since = time.monotonic(), timezone.now()
        api_seconds, accepted = post_all(port, token, items)
        total_seconds = until_applied(started, since)
        time.sleep(0.6)  # one more reading of every process
        cpu_used = {
            name: sum(used - cpu_before[name].get(pid, 0.0) for pid, used in readings.items())
            for name, readings in cpu.items()
        }
        counts = dict(
            TouchpointResult.objects.order_by()
            .values("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
        applied = counts.get("applied", 0)
        split = _time_split(source.pk)
        effects = _effects(source.pk, run)
        expected_effects = _expected_effects(source.pk)
        duplicated = max(0, effects["interactions"] - expected_effects["interactions"]) + max(
            0, effects["purchases"] - expected_effects["purchases"]
        )
        before = _row_counts(source.pk)
        replay_started, since = time.monotonic(), timezone.now()
        _, replay_accepted = post_all(port, token, items)
        until_applied(replay_started, since)
        replay_seconds = time.monotonic() - replay_started
        after = _row_counts(source.pk)
        replay_changed = sum(abs(after[k] - before[k]) for k in before) + replay_accepted
    finally:
        done.set()
        stop(web)
        stop(worker)

    print(f"API: {size:,} results in {api_seconds:.1f} s ({size / api_seconds:,.0f}/s); applied after "
          f"{total_seconds:.1f} s (the apply step trailed the API by {total_seconds - api_seconds:.1f} s); "
          f"replay {replay_seconds:.1f} s; statuses {counts}", file=sys.stderr)  # fmt: skip
    print(f"Split: a result waited in the queue {split['queue_wait_p50_s']:.2f} s (median; at most "
          f"{split['queue_wait_max_s']:.1f} s) from its POST's commit to its claim, then its claim took "
          f"{split['apply_p50_s']:.2f} s (median) to apply; {split['claims']} claims kept the workers "
          f"applying for {split['apply_busy_s']:.1f} s in all "
          f"({split['apply_busy_s'] / max(split['claims'], 1):.2f} s each, "
          f"{applied / max(split['apply_busy_s'], 0.001):,.0f} results per worker-second)",
          file=sys.stderr)  # fmt: skip
    print(json.dumps({
        "events_per_s": round(applied / total_seconds), "events": size, "accepted": accepted,
        "applied": applied, "lost": accepted - applied, "duplicated": duplicated,
        "replay_changed": replay_changed, "peak_rss_mb": round(max(peak["web"], peak["worker_process"])),
        "web_rss_mb": round(peak["web"]), "worker_rss_mb": round(peak["worker"]),
        "worker_process_rss_mb": round(peak["worker_process"]), "worker_pss_mb": round(peak["worker_pss"]),
        **idle, "api_s": round(api_seconds, 1),
        "total_s": round(total_seconds, 1), "size": args.size, "worker_processes": args.worker_processes,
        "batches": TouchpointBatch.objects.count(),
        "worker_cpu_ms_per_result": round(cpu_used["worker"] / size * 1000, 3),
        "web_cpu_ms_per_result": round(cpu_used["web"] / size * 1000, 3),
        # The embedded server's backends of the web and the worker both (0 on another server).
        "postgres_cpu_ms_per_result": round(cpu_used["postgres"] / size * 1000, 3),
        "load_average": load_average(), **split,
    }))  # fmt: skip
    return 0


# What a run writes to: vacuumed before each run, so none starts with the dead rows
# and the autovacuum debt the previous one left.
_HOT_TABLES = (
    "crm_touchpointresult", "crm_touchpointbatch", "crm_businessevent", "crm_interaction",
    "crm_customerchange", "crm_customer", "crm_sourcerecord",
)  # fmt: skip


def _comparable_start(connection: Any) -> None:
    """Start each run from a comparable state: the tables it writes vacuumed and
    analysed, and a checkpoint taken (so every run pays the same full-page images
    after it, not whatever share the previous run's WAL left to the next checkpoint).
    On a server where the bench may not CHECKPOINT, the vacuum alone."""
    from django.db import DatabaseError

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) " + ", ".join(_HOT_TABLES))
        try:
            cursor.execute("CHECKPOINT")
        except DatabaseError:
            print("CHECKPOINT refused (not a superuser): runs start unequal in WAL", file=sys.stderr)


def _effects(source_id: int, run: str) -> dict[str, int]:
    """Contacts and purchases this run wrote (an effect written twice would show here)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM crm_interaction WHERE source_system_id = %(s)s"
            " AND external_id LIKE %(run)s), (SELECT count(*) FROM crm_businessevent"
            " WHERE source_system_id = %(s)s AND type = 'transaction.purchase'"
            " AND idempotency_key LIKE %(run)s)",
            {"s": source_id, "run": run + "%"},
        )
        interactions, purchases = cursor.fetchone()
    return {"interactions": interactions, "purchases": purchases}


def _expected_effects(source_id: int) -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE record_kind = 'interaction' AND status = 'applied'),"
            " count(*) FILTER (WHERE record_kind = 'purchase' AND status = 'applied')"
            " FROM crm_touchpointresult WHERE source_system_id = %s",
            [source_id],
        )
        interactions, purchases = cursor.fetchone()
    return {"interactions": interactions, "purchases": purchases}


def _time_split(source_id: int) -> dict[str, Any]:
    """Where a result's time went, read from the inbox: queued (received → claimed)
    and applying (claimed → applied, the time of its whole claim); and the
    worker-seconds spent applying (each claim from its start to its commit)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "WITH r AS (SELECT extract(epoch FROM claimed_at - received_at) AS queued,"
            " extract(epoch FROM applied_at - claimed_at) AS applying FROM crm_touchpointresult"
            " WHERE source_system_id = %(s)s AND status = 'applied'),"
            " c AS (SELECT extract(epoch FROM max(applied_at) - min(claimed_at)) AS busy"
            " FROM crm_touchpointresult WHERE source_system_id = %(s)s AND status = 'applied'"
            " GROUP BY claimed_by)"
            " SELECT (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY queued) FROM r),"
            " (SELECT max(queued) FROM r),"
            " (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY applying) FROM r),"
            " (SELECT coalesce(sum(busy), 0) FROM c), (SELECT count(*) FROM c)",
            {"s": source_id},
        )
        wait_p50, wait_max, apply_p50, busy, claims = cursor.fetchone()
    return {
        "queue_wait_p50_s": round(float(wait_p50 or 0), 2),
        "queue_wait_max_s": round(float(wait_max or 0), 1),
        "apply_p50_s": round(float(apply_p50 or 0), 2), "apply_busy_s": round(float(busy), 1),
        "claims": claims,
    }  # fmt: skip


def _row_counts(source_id: int) -> dict[str, int]:
    """Rows a replay must not add or change (a change bumps a customer's version)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM crm_interaction), (SELECT count(*) FROM crm_businessevent),"
            " (SELECT count(*) FROM crm_customerchange), (SELECT count(*) FROM crm_customer),"
            " (SELECT coalesce(sum(version), 0) FROM crm_customer),"
            " (SELECT count(*) FROM crm_touchpointresult)"
        )
        row = cursor.fetchone()
    return dict(
        zip(("interactions", "events", "changes", "customers", "versions", "results"), row, strict=True)
    )


if __name__ == "__main__":
    raise SystemExit(main())
