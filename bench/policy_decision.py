"""Policy decision: one event through candidate lookup, CEL conditions, contact
rules and arbitration, in process, excluding I/O.

    .venv/bin/python bench/policy_decision.py [--size small]

Builds its own database (``crm_bench_policies`` or ``crm_bench_policies_small``,
next to the one DATABASE_URL names, or on the embedded server) once, and reuses
it while it holds exactly the policies of that size: 1,000 active policies, 50
per event type over 20 event types (small: 100, 5 per type), saved through
``policies.services.policy_save`` so each condition was checked as a
supervisor's would be; 20 offers; a few customers with a year of offer
presentations for the contact rules to read.

The facts of each event (the customer, their history, their presentations) are
read before the clock starts: what is timed is ``policy_index().candidates``
plus ``engine.evaluate`` (conditions, holdouts, contact rules, arbitration), the
work the engine does per event between its reads and its writes.

The last line printed is one JSON object: p50_us, p99_us (wall clock), policies,
the same percentiles of the thread's CPU time (cpu_p50_us, cpu_p99_us: on a
shared machine the wall-clock tail is mostly waiting for a core), and the mean
candidates and matches per event.

    .venv/bin/python bench/policy_decision.py --batch

The worker's pass over one batch instead (``engine.decide_events``, I/O
included), on the 1,000 latest events of ``bench/ingest.py --size small``'s
database (run that first): as the ingest leaves them (no policy listens), then
inside a transaction rolled back at the end with one policy per event type of
the batch (a condition no customer meets), once with every event already
claimed (the on-commit pass decided them) and once with none claimed (each
event decided). Prints per case the median wall and CPU milliseconds of a
call and its SQL statements.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import time
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.screen_pop import bench_database_url, percentile

# (policies per event type, timed events)
SIZES = {"default": (50, 20_000), "small": (5, 5_000)}
WARM_UP = 500
CUSTOMERS = 20
PAST_PRESENTATIONS = 40  # per customer, over the last year

# 20 trigger types; those with an amount get amount conditions too.
EVENT_TYPES = (
    "transaction.withdrawal",
    "transaction.deposit",
    "transaction.purchase",
    "account.withdrawal",
    "account.deposit",
    "web.page_view",
    "email.opened",
    "email.clicked",
    "call.ended",
    "call.disposition",
    "offer.accepted",
    "offer.declined",
    "offer.expired",
    "offer.presented",
    "consent.changed",
    "customer.address_changed",
    "customer.profile_changed",
    "interaction.recorded",
    "complaint.resolved",
    "account.opened",
)
PAYLOADS: dict[str, dict[str, Any]] = {
    "transaction.withdrawal": {"amount": 15000, "account_number": "A-1", "channel": "atm"},
    "transaction.deposit": {"amount": 15000, "account_number": "A-1", "channel": "branch"},
    "transaction.purchase": {"amount": 900, "channel": "pos", "merchant_category": "travel"},
    "account.withdrawal": {"amount": 15000, "account_number": "A-1"},
    "account.deposit": {"amount": 15000, "account_number": "A-1"},
    "web.page_view": {"url": "/mortgages", "page_category": "mortgage"},
    "email.opened": {"message_id": "m1"},
    "email.clicked": {"url": "/cards"},
    "call.ended": {"call_id": "c1", "direction": "inbound", "duration_seconds": 300},
    "call.disposition": {"disposition": "sale"},
    "offer.accepted": {"offer": "x", "channel": "agent_screen", "presentation_id": 1},
    "offer.declined": {"offer": "x", "channel": "agent_screen", "presentation_id": 1},
    "offer.expired": {"offer": "x", "channel": "agent_screen", "presentation_id": 1},
    "offer.presented": {"offer": "x", "channel": "agent_screen", "presentation_id": 1},
    "consent.changed": {"consent": "marketing_opt_in", "value": True},
    "customer.address_changed": {"city": "Denver"},
    "customer.profile_changed": {"fields": "emails"},
    "interaction.recorded": {"channel": "phone", "direction": "inbound"},
    "complaint.resolved": {},
    "account.opened": {"account_number": "A-1", "product": "everyday-checking"},
}
CONDITIONS = (
    'customer.tier == "{tier}" && customer.lifetime_value > {n}.0',
    'history.count("offer.declined", 30) == 0 && customer.marketing_opt_in',
    'customer.age >= {age} && customer.language == "en"',
    'history.days_since("offer.accepted") > {days} || customer.do_not_call == false',
    'customer.tier != "standard" && history.count("interaction.recorded", 90) < {n}',
)
AMOUNT_CONDITION = 'event.amount > {n}.0 && customer.tier != "standard"'
CHANNELS = ("agent_screen", "self_service", "email", "outbound_call")
TIERS = ("platinum", "gold", "silver")


def build(per_type: int) -> None:
    from django.db import transaction

    from crm import services as crm_services
    from crm.models import Customer
    from policies import services
    from policies.models import Offer, OfferPresentation, Policy

    rng = random.Random(7)
    with transaction.atomic():
        OfferPresentation.objects.all().delete()
        Policy.objects.all().delete()
        Offer.objects.all().delete()
        offers = [
            services.offer_save(
                code=f"bench-offer-{i}",
                name=f"Bench offer {i}",
                channels=list(CHANNELS),
                value=Decimal(rng.randint(10, 5000)),
                status="active",
                max_presentations=rng.randint(2, 6),
                period_days=rng.choice((7, 30, 90)),
                cooling_off_days=rng.choice((7, 30)),
                marketing=i % 5 != 0,
            )
            for i in range(20)
        ]
        for event_type in EVENT_TYPES:
            for n in range(per_type):
                template = rng.choice(CONDITIONS)
                if "amount" in PAYLOADS[event_type] and n % 3 == 0:
                    template = AMOUNT_CONDITION
                condition = template.format(
                    tier=rng.choice(TIERS),
                    n=rng.randint(1, 20_000),
                    age=rng.randint(18, 70),
                    days=rng.randint(1, 60),
                )
                offer = rng.choice(offers)
                channels = rng.sample(CHANNELS, rng.randint(1, 2))
                actions = [
                    {"action": "present_offer", "settings": {"offer": offer.code, "channels": channels}}
                ]
                if n % 10 == 0:
                    actions.append({"action": "tag_customer", "settings": {"tag": f"bench-{n}"}})
                services.policy_save(
                    actor=None,
                    name=f"bench {event_type} {n}",
                    trigger_types=[event_type],
                    condition=condition,
                    actions=actions,
                    priority=rng.randint(1, 100),
                    status="active",
                    holdout_percent=rng.choice((0, 0, 0, 10)),
                )
        customers = list(Customer.objects.filter(family_name="Bench").order_by("pk"))
        for i in range(len(customers), CUSTOMERS):
            customers.append(
                crm_services.customer_create(
                    given_name=f"Bench{i}",
                    family_name="Bench",
                    date_of_birth=dt.date(1970 + i, 3, 1),
                )
            )
        Customer.objects.filter(family_name="Bench").update(
            tier="platinum", lifetime_value=Decimal("250000"), marketing_opt_in=True
        )
        now = dt.datetime.now(dt.UTC)
        rows = []
        for customer in customers:
            for sequence in range(1, PAST_PRESENTATIONS + 1):
                at = now - dt.timedelta(days=rng.uniform(0, 360))
                status = rng.choice(("accepted", "declined", "expired"))
                rows.append(
                    OfferPresentation(
                        offer=rng.choice(offers),
                        customer=customer,
                        channel=rng.choice(CHANNELS),
                        sequence=sequence,
                        status=status,
                        presented_at=at,
                        expires_at=at + dt.timedelta(hours=72),
                        responded_at=at + dt.timedelta(hours=1),
                    )
                )
        OfferPresentation.objects.bulk_create(rows)


BATCH = 1_000


def batch_main(rounds: int) -> int:
    from bench.common import setup_django

    setup_django("crm_bench_ingest_small")
    from django.db import connection, transaction
    from django.utils import timezone

    from crm.models import BusinessEvent
    from policies import engine
    from policies import services as policy_services
    from policies.models import EventEvaluation

    events = list(BusinessEvent.objects.order_by("-id")[:BATCH])
    if len(events) < BATCH:
        raise SystemExit("run bench/ingest.py --size small first: its database holds the events")
    for event in events:  # as the worker holds them: decided now, whenever they were recorded
        event.occurred_at = timezone.now()

    def timed(name: str, before: Any = None) -> dict[str, Any]:
        walls, cpus, statements = [], [], [0]

        def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            statements[0] += 1
            return execute(sql, params, many, context)

        for _ in range(rounds):
            if before is not None:
                before()
            with transaction.atomic():
                sid = transaction.savepoint()
                statements[0] = 0
                with connection.execute_wrapper(count):
                    cpu, wall = time.process_time(), time.perf_counter()
                    engine.decide_events(events)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                transaction.savepoint_rollback(sid)
            walls.append(wall * 1000)
            cpus.append(cpu * 1000)
        return {"case": name, "wall_ms": round(statistics.median(walls), 2),
                "cpu_ms": round(statistics.median(cpus), 2), "statements": statements[0]}  # fmt: skip

    engine.index_forget()
    results = [timed("no policy listens")]
    with transaction.atomic():
        for event_type in sorted({e.type for e in events}):
            policy_services.policy_save(
                actor=None, name=f"bench batch {event_type}", trigger_types=[event_type],
                condition='customer.tier == "nobody"', status="active",
                actions=[{"action": "tag_customer", "settings": {"tag": "bench"}}],
            )  # fmt: skip
        engine.policy_index()
        EventEvaluation.objects.bulk_create(
            EventEvaluation(event_id=e.pk, evaluated_at=timezone.now(), candidates=1, matched=0)
            for e in events
        )
        results.append(timed("all claimed"))
        EventEvaluation.objects.filter(event_id__in=[e.pk for e in events]).delete()
        results.append(timed("none claimed"))
        transaction.set_rollback(True)
    engine.index_forget()
    for result in results:
        print(json.dumps({"bench": "policy_decision_batch", "events": BATCH, **result}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--batch", action="store_true", help="the worker's pass over a batch (see above)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.batch:
        return batch_main(args.rounds)
    per_type, samples = SIZES[args.size]
    samples = args.samples or samples
    database = "crm_bench_policies" if args.size == "default" else f"crm_bench_policies_{args.size}"

    os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production-0123456789-abcdefghijkl")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("CRM_EMBEDDED_SERVERS", "true")
    os.environ["DATABASE_URL"] = bench_database_url(database)

    import django

    warnings.filterwarnings("ignore", "No directory at", UserWarning)
    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from crm import services as crm_services
    from crm.models import BusinessEvent, Customer
    from policies import engine
    from policies.models import Policy

    call_command("migrate", verbosity=0)
    expected = per_type * len(EVENT_TYPES)
    if Policy.objects.filter(status="active", name__startswith="bench ").count() != expected:
        started = time.monotonic()
        print(f"building {expected} policies ...", flush=True)
        build(per_type)
        print(f"built in {time.monotonic() - started:.1f} s", flush=True)

    engine.index_forget()
    index = engine.policy_index()
    source = crm_services.crm_source()
    now = timezone.now()
    customers = list(Customer.objects.filter(family_name="Bench").only(*engine.CUSTOMER_COLUMNS))
    # The I/O, done before the clock starts: one event and its facts per (customer, type).
    cases = []
    for customer in customers:
        for event_type in EVENT_TYPES:
            event = BusinessEvent(
                pk=0,
                type=event_type,
                customer_id=customer.pk,
                occurred_at=now,
                payload=PAYLOADS[event_type],
                source_system_id=source.pk,
                idempotency_key="bench",
            )
            cases.append((event, engine.facts_load(event, customer, now)[1]))
    rng = random.Random(11)
    timings: list[float] = []
    cpu_timings: list[float] = []
    candidates_seen: list[int] = []
    matched: list[int] = []
    for i in range(WARM_UP + samples):
        event, facts = rng.choice(cases)
        cpu_started = time.thread_time_ns()
        started = time.perf_counter_ns()
        candidates = index.candidates(event.type, now)
        plan = engine.evaluate(candidates, facts, now)
        elapsed = time.perf_counter_ns() - started
        cpu = time.thread_time_ns() - cpu_started
        if i >= WARM_UP:
            timings.append(elapsed / 1000)
            cpu_timings.append(cpu / 1000)
            candidates_seen.append(len(candidates))
            matched.append(len(plan.verdicts))
    result = {
        "bench": "policy_decision",
        "size": args.size,
        "p50_us": round(statistics.median(timings), 1),
        "p99_us": round(percentile(timings, 0.99), 1),
        # The CPU this thread spent: on a shared machine the wall-clock tail is mostly
        # time the process waited for a core, not time the decision took.
        "cpu_p50_us": round(statistics.median(cpu_timings), 1),
        "cpu_p99_us": round(percentile(cpu_timings, 0.99), 1),
        "p90_us": round(percentile(timings, 0.90), 1),
        "policies": Policy.objects.filter(status="active").count(),
        "candidates_per_event": round(statistics.mean(candidates_seen), 1),
        "matched_per_event": round(statistics.mean(matched), 1),
        "presentations_read_per_event": PAST_PRESENTATIONS,
        "samples": len(timings),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
