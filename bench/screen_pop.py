"""Screen pop: from an inbound caller's number to everything the agent's screen shows.

    .venv/bin/python bench/screen_pop.py [--size small]

Builds its own database (``crm_bench`` or ``crm_bench_small``, next to the one
DATABASE_URL names, or on the embedded server) with ``seed_bulk`` once, and
reuses it while it holds exactly the data of that size. Then, for random
customers, it takes a number as the switch sends it (E.164, or as dialled:
"(202) 555-0143") and times, in process:

1. the phone lookup (``selectors.customers_by_phone``);
2. the unified screen's reads (``selectors.customer_screen``: profile,
   household, accounts, last 50 interactions, open tasks);
3. the customer detail API (GET /api/v1/customers/<id>/ through DRF, as an
   agent with a bearer token).

Prints p50/p99 of the whole pop, per-stage medians and the SQL queries per pop;
the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (customers, interactions per customer, timed samples)
SIZES = {"default": (1_000_000, 10, 2_000), "small": (100_000, 10, 500)}
WARM_UP = 200
COUNTED_POPS = 50  # pops run again under CaptureQueriesContext, which adds its own overhead


def bench_database_url(database: str) -> str:
    """The URL of ``database`` on the server DATABASE_URL points at (or the
    embedded one), creating the database if needed."""
    base = os.environ.get("DATABASE_URL")
    if not base:
        from config import embedded

        base = embedded.postgres_url(database)
    # Also on the embedded server: it creates a database only once per data directory,
    # so one dropped since would not come back.
    _create_database(base, database)
    return _with_database(base, database)


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _create_database(any_url: str, database: str) -> None:
    import psycopg

    with psycopg.connect(_with_database(any_url, "postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{database}"')


def _recreate_database(url: str, database: str) -> None:
    import psycopg

    with psycopg.connect(_with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def as_dialled(e164: str) -> str:
    """+12025550143 -> (202) 555-0143, as a US caller's number often arrives."""
    national = e164[2:]
    return f"({national[:3]}) {national[3:6]}-{national[6:]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--samples", type=int, default=None, help="Timed screen pops (default by size).")
    args = parser.parse_args()
    customers, per_customer, samples = SIZES[args.size]
    samples = args.samples or samples
    database = "crm_bench" if args.size == "default" else f"crm_bench_{args.size}"

    # Production settings, as a web process runs them; the test client's host must be allowed.
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production-0123456789-abcdefghijkl")
    os.environ["SECURE_SSL_REDIRECT"] = "false"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("CRM_EMBEDDED_SERVERS", "true")
    url = bench_database_url(database)
    os.environ["DATABASE_URL"] = url

    import django

    # WhiteNoise warns that collectstatic never ran; static files play no part here.
    warnings.filterwarnings("ignore", "No directory at", UserWarning)
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    built = _counts()
    seed_seconds = None
    if built != (customers, customers * per_customer):
        if built != (0, 0):
            print(f"{database} holds {built[0]:,} customers / {built[1]:,} interactions, not the "
                  f"{customers:,} / {customers * per_customer:,} of this size: rebuilding it.")  # fmt: skip
            connection.close()
            _recreate_database(url, database)
            call_command("migrate", verbosity=0)
        print(f"Building {database}: {customers:,} customers, {customers * per_customer:,} interactions ...")
        started = time.monotonic()
        call_command("seed_bulk", customers=customers, interactions_per_customer=per_customer)
        seed_seconds = round(time.monotonic() - started, 1)
    else:
        print(f"Reusing {database}: {customers:,} customers, {customers * per_customer:,} interactions.")

    result = measure(samples)
    result.update(
        customers=customers, interactions=customers * per_customer, size=args.size, samples=samples,
        database=database,
    )  # fmt: skip
    if seed_seconds is not None:
        result["seed_seconds"] = seed_seconds
    print(json.dumps(result))
    return 0


def _counts() -> tuple[int, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT (SELECT count(*) FROM crm_customer), (SELECT count(*) FROM crm_interaction)")
        customers, interactions = cursor.fetchone()
    return int(customers), int(interactions)


def measure(samples: int) -> dict[str, object]:
    from django.db import connection
    from django.db.models import Max, Min
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    from crm import selectors, services
    from crm.models import Customer, User

    agent = User.objects.filter(groups__name="agent", is_active=True).order_by("pk").first()
    if agent is None:
        raise SystemExit("No agent in the bench database: seed_bulk creates some; rebuild it.")
    _, secret = services.api_token_create(user=agent, name="bench screen_pop")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")

    rng = random.Random(20_240_601)
    bounds = Customer.objects.aggregate(low=Min("pk"), high=Max("pk"))
    wanted = [rng.randint(bounds["low"], bounds["high"]) for _ in range(WARM_UP + samples)]
    numbers = dict(Customer.objects.filter(pk__in=wanted).values_list("pk", "phone_keys"))
    calls = [
        (pk, number if rng.random() < 0.5 else as_dialled(number))
        for pk in wanted
        if pk in numbers
        for number in [rng.choice(numbers[pk])]
    ]

    probe = client.get(f"/api/v1/customers/{calls[0][0]}/")
    api_ok = probe.status_code == 200
    if not api_ok:
        print(f"GET /api/v1/customers/<id>/ answered {probe.status_code}: timing the pop without it.",
              file=sys.stderr)  # fmt: skip

    def lookup(pk: int, number: str) -> None:
        # Read whole, as a screen pop must (several people may share a household line).
        # No LIMIT: with one customer per number the planner has no element statistics,
        # guesses 0.5% of the table, and for LIMIT 2 prefers a sequential scan (1.3 s at 1M).
        found = list(selectors.customers_by_phone(number))
        if len(found) != 1 or found[0].pk != pk:
            raise SystemExit(f"{number} should find customer {pk}, found {[c.pk for c in found]}")

    def screen(pk: int) -> None:
        selectors.customer_screen(customer_id=pk)

    def api(pk: int) -> None:
        if api_ok:
            response = client.get(f"/api/v1/customers/{pk}/")
            if response.status_code != 200:
                raise SystemExit(f"GET /api/v1/customers/{pk}/ answered {response.status_code}")

    def pop(pk: int, number: str) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        lookup(pk, number)
        t1 = time.perf_counter()
        screen(pk)
        t2 = time.perf_counter()
        api(pk)
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2

    def count(pk: int, number: str) -> list[int]:
        counts = []
        for stage in (lambda: lookup(pk, number), lambda: screen(pk), lambda: api(pk)):
            with CaptureQueriesContext(connection) as captured:
                stage()
            counts.append(len(captured))
        return counts

    for pk, number in calls[:WARM_UP]:
        pop(pk, number)
    timed = [pop(pk, number) for pk, number in calls[WARM_UP:]]
    # Counted apart from the timed pops: capturing queries costs time of its own.
    counted = [count(pk, number) for pk, number in calls[WARM_UP : WARM_UP + COUNTED_POPS]]
    per_stage = [max(stage) for stage in zip(*counted, strict=True)]

    ms = 1000.0
    totals = [sum(t) * ms for t in timed]
    stage_p50 = [round(statistics.median(t[i] * ms for t in timed), 2) for i in range(3)]
    result: dict[str, object] = {
        "p50_ms": round(statistics.median(totals), 2),
        "p99_ms": round(percentile(totals, 0.99), 2),
        "queries": sum(per_stage),
        "lookup_queries": per_stage[0],
        "screen_queries": per_stage[1],
        "api_queries": per_stage[2],
        "lookup_p50_ms": stage_p50[0],
        "screen_p50_ms": stage_p50[1],
        "api_p50_ms": stage_p50[2] if api_ok else None,
        "api_status": probe.status_code,
    }
    print(
        f"{len(timed)} screen pops: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; "
        f"lookup {result['lookup_p50_ms']} ms, screen {result['screen_p50_ms']} ms, "
        f"API {result['api_p50_ms']} ms (p50 each); {result['queries']} SQL queries per pop "
        f"({' + '.join(map(str, per_stage))}, BEGIN/COMMIT included)"
    )
    return result


if __name__ == "__main__":
    raise SystemExit(main())
