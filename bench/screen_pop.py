"""Screen pop: from an inbound caller's number to the customer screen the agent's
browser loads, and from the phone system's POST to the pop on the agent's desk.

    .venv/bin/python bench/screen_pop.py [--size small] [--no-pop] [--agents 200] [--rate 50]

Builds its own database (``crm_bench`` or ``crm_bench_small``, next to the one
DATABASE_URL names, or on the embedded server) with ``seed_bulk`` once, and
reuses it while it holds exactly the data of that size. Then:

1. in process, for random customers, a number as the switch sends it (E.164, or
   as dialled: "(202) 555-0143"): the phone lookup
   (``selectors.customers_by_phone``), then the whole customer screen as the
   agent's browser loads it (GET /customer/<id>/ through Django's middleware and
   templates, signed in as an agent: profile, household, accounts, open tasks,
   the last 50 contacts, offers, the script panel's place), timed together;
   queries are counted on other pops (counting costs time of its own);
2. over real HTTP and WebSockets (bench/call_pop.py's ``measure_pop``): with
   200 agents' desks connected and calls arriving at 50 a second, the time from
   each ``POST /api/v1/calls/`` to the pop frame on the chosen agent's socket.

Where the time goes (cProfile over 500 screens in process, --size small, 10 contacts a
customer; December 2026): ~7 ms of CPU a screen (~11 ms before, back to back), about
2/5 template rendering, 1/4 the customer_screen selector, the rest the session, the
access log, the offers and the script panel. Only the customer's own row (whose
visibility depends on the viewer) is still built by the ORM: the accounts, the last 50
contacts and the household are statements written once per process and sent together
in one round trip (psycopg's pipeline mode); the session's user and the panel's run are
one prepared statement each. The history rows are made in Python
(agents.views.customer.history_rows_html: ~1.9 ms for 50 rows, ~8 ms through the
template). The access-log INSERT's commit does not wait for the WAL flush, and the
session is read from the cache (no SQL). Back to back on a loaded two-core machine:
p50 13.5 -> 8.8 ms, p99 22.7 -> 14.6 ms, 9 statements either way.
The pop (POST /api/v1/calls/ then the hang-up) cost ~7.5 + ~12 ms of web-process CPU
per call; its hot reads are now SQL built once per process and the desk gets one frame
per arrival (``call_pop.py --cpu`` measures it: about a third less, 4 and 9
statements). At 50 calls a second one uvicorn process (one core, by the GIL) is
still nearly saturated, and frames then wait behind it; two processes keep up.

The last line is one JSON object: p50_ms, p99_ms, queries, html_bytes (and the
stages' medians), pop_ws_p50_ms, pop_ws_p99_ms (with the pop run's own figures
under "pop"), customers, interactions, load (the one-minute load average).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The other benches import these from here.
from bench.common import bench_database_url, load_average, percentile, recreate_database, setup_django

_recreate_database = recreate_database
__all__ = ["SIZES", "bench_database_url", "database_for", "percentile"]

# (customers, interactions per customer, timed samples, seconds of calls for the pop)
SIZES = {"default": (1_000_000, 10, 2_000, 20.0), "small": (100_000, 10, 500, 10.0)}
WARM_UP = 200
COUNTED_POPS = 50  # pops run again under CaptureQueriesContext, which adds its own overhead


def database_for(size: str) -> str:
    return "crm_bench" if size == "default" else f"crm_bench_{size}"


def as_dialled(e164: str) -> str:
    """+12025550143 -> (202) 555-0143, as a US caller's number often arrives."""
    national = e164[2:]
    return f"({national[:3]}) {national[3:6]}-{national[6:]}"


def main() -> int:
    from bench.call_pop import add_pop_arguments, measure_pop

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--samples", type=int, default=None, help="Timed screen pops (default by size).")
    parser.add_argument("--no-pop", action="store_true", help="Skip the POST-to-WebSocket measurement.")
    add_pop_arguments(parser)
    parser.set_defaults(seconds=None)
    args = parser.parse_args()
    customers, per_customer, samples, pop_seconds = SIZES[args.size]
    samples = args.samples or samples
    args.seconds = args.seconds or pop_seconds
    database = database_for(args.size)
    url = setup_django(database)
    from django.core.management import call_command
    from django.db import connection

    built = _counts()
    seed_seconds = None
    if built != (customers, customers * per_customer):
        if built != (0, 0):
            print(f"{database} holds {built[0]:,} customers / {built[1]:,} interactions, not the "
                  f"{customers:,} / {customers * per_customer:,} of this size: rebuilding it.")  # fmt: skip
            connection.close()
            recreate_database(url, database)
            call_command("migrate", verbosity=0)
        print(f"Building {database}: {customers:,} customers, {customers * per_customer:,} interactions ...")
        started = time.monotonic()
        call_command("seed_bulk", customers=customers, interactions_per_customer=per_customer)
        seed_seconds = round(time.monotonic() - started, 1)
    else:
        print(f"Reusing {database}: {customers:,} customers, {customers * per_customer:,} interactions.")

    result = measure(samples)
    if not args.no_pop:
        pop = measure_pop(args)
        print(f"pop on the agent's socket: p50 {pop['pop_ws_p50_ms']} ms, p99 {pop['pop_ws_p99_ms']} ms "
              f"({pop['popped']} of {pop['calls']} calls, {args.agents} agents, {args.rate}/s)")  # fmt: skip
        result.update(pop_ws_p50_ms=pop["pop_ws_p50_ms"], pop_ws_p99_ms=pop["pop_ws_p99_ms"], pop=pop)
    result.update(
        customers=customers, interactions=customers * per_customer, size=args.size, samples=samples,
        database=database, load=load_average(),
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
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from crm import selectors
    from crm.models import Customer, User

    agent = User.objects.filter(groups__name="agent", is_active=True).order_by("pk").first()
    if agent is None:
        raise SystemExit("No agent in the bench database: seed_bulk creates some; rebuild it.")
    browser = Client()
    browser.force_login(agent)

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
    html_bytes: list[int] = []

    def lookup(pk: int, number: str) -> None:
        # Read whole, as a screen pop must (several people may share a household line).
        # No LIMIT: with one customer per number the planner has no element statistics,
        # guesses 0.5% of the table, and for LIMIT 2 prefers a sequential scan (1.3 s at 1M).
        found = list(selectors.customers_by_phone(number))
        if len(found) != 1 or found[0].pk != pk:
            raise SystemExit(f"{number} should find customer {pk}, found {[c.pk for c in found]}")

    def screen(pk: int) -> None:
        response = browser.get(f"/customer/{pk}/")
        if response.status_code != 200 or b'id="screen"' not in response.content:
            raise SystemExit(f"GET /customer/{pk}/ answered {response.status_code} without the screen")
        html_bytes.append(len(response.content))

    def pop(pk: int, number: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        lookup(pk, number)
        t1 = time.perf_counter()
        screen(pk)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    def count(pk: int, number: str) -> list[int]:
        counts = []
        for stage in (lambda: lookup(pk, number), lambda: screen(pk)):
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
    stage_p50 = [round(statistics.median(t[i] * ms for t in timed), 2) for i in range(2)]
    result: dict[str, object] = {
        "p50_ms": round(statistics.median(totals), 2),
        "p99_ms": round(percentile(totals, 0.99), 2),
        "queries": sum(per_stage),
        "lookup_queries": per_stage[0],
        "screen_queries": per_stage[1],
        "lookup_p50_ms": stage_p50[0],
        "screen_p50_ms": stage_p50[1],
        "html_bytes": int(statistics.median(html_bytes)),
    }
    print(
        f"{len(timed)} screen pops: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; "
        f"lookup {result['lookup_p50_ms']} ms, rendered screen {result['screen_p50_ms']} ms (p50 each); "
        f"{result['queries']} SQL queries per pop ({' + '.join(map(str, per_stage))}, the user, "
        f"access log and BEGIN/COMMIT included, the session from the cache); "
        f"{result['html_bytes']:,} bytes of HTML"
    )
    return result


if __name__ == "__main__":
    raise SystemExit(main())
