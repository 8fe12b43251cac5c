"""Script step: one step of a call script rendered with its merge fields and its
branch evaluated (CEL), in process.

    .venv/bin/python bench/script_step.py [--size small]

Builds its own database (``crm_bench_scripts`` or ``crm_bench_scripts_small``,
next to the one DATABASE_URL names, or on the embedded server) once, and reuses
it while it holds the bench script: 40 steps (a chain with side steps), 10 of
them branching on a CEL condition over answers and customer fields, 10 on an
answer match, every step's text carrying merge fields with fallbacks; saved and
published through ``scripting.services`` so the validator accepted it as it
would a supervisor's. A customer with a household and an account is the caller.

The run's rows (the version, the customer, the accounts, the answers so far) are
read before the clock starts, as the panel has them in hand: what is timed is
``rendering.merge_values`` + ``rendering.render`` of a random step's text and
``services.next_step`` (branches in order, CEL compiled once per condition and
cached) with the answers of a random run.

The last line printed is one JSON object: p50_us, p99_us (wall clock), steps,
cel_branches, and the thread's CPU time percentiles (cpu_p50_us, cpu_p99_us).
"""

from __future__ import annotations

import argparse
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

# timed samples (the script is 40 steps whatever the size: it is the target's shape)
SIZES = {"default": 20_000, "small": 2_000}
WARM_UP = 500
STEPS = 40
CEL_BRANCHES = 10
CODE = "bench-script"
TEXT = (
    'Hello {{ customer.first_name | "there" }}, this is about your {{ account.product | "account" }} '
    '({{ account.number }}). You are calling {{ call.queue | "us" }} from {{ call.caller_number }}; '
    'household {{ household.name | "none" }}. Step {n}: {{ offer.name | "no offer today" }}.'
)


def bench_graph() -> dict[str, Any]:
    """Steps s0..s38 in a chain to the end step s39; every fourth step asks a
    number and branches by CEL (10 of them), every fourth + 2 a yes/no matched
    (10); branches skip ahead so every path still ends."""
    steps: list[dict[str, Any]] = []
    cel = 0
    for n in range(STEPS):
        key = f"s{n}"
        step: dict[str, Any] = {"key": key, "title": f"Step {n}", "text": TEXT.replace("{n}", str(n)),
                                "end": n == STEPS - 1, "next": "" if n == STEPS - 1 else f"s{n + 1}",
                                "questions": [], "branches": [], "actions": []}  # fmt: skip
        if n < STEPS - 3 and n % 4 == 0 and cel < CEL_BRANCHES:
            step["questions"] = [{"key": f"amount_{n}", "label": f"Amount {n}", "type": "number", "min": 0}]
            moving = n + 2 if n + 2 < STEPS - 3 else 2
            step["branches"] = [{
                "kind": "cel", "to": f"s{n + 3}", "label": "large, valued customer",
                "condition": f'answers.amount_{n} > 5000.0 && customer.tier != "standard" '
                             f"&& customer.lifetime_value > 1000.0 && answers.moving_{moving}",
            }]  # fmt: skip
            cel += 1
        elif n < STEPS - 3 and n % 4 == 2:
            step["questions"] = [{"key": f"moving_{n}", "label": f"Moving {n}?", "type": "yes_no"}]
            step["branches"] = [
                {"kind": "match", "question": f"moving_{n}", "value": True, "to": f"s{n + 2}"}
            ]
        steps.append(step)
    return {"start": "s0", "steps": steps}


def build() -> None:
    from django.db import transaction

    from crm import services as crm_services
    from crm.models import Customer, Product
    from scripting import services
    from scripting.models import Script

    with transaction.atomic():
        script = Script.objects.filter(code=CODE).first() or services.script_create(
            code=CODE, name="Bench script"
        )
        services.draft_save(script_id=script.pk, graph=bench_graph())
        services.version_publish(script_id=script.pk, actor=None)
        if not Customer.objects.filter(family_name="ScriptBench").exists():
            household = crm_services.household_create(name="The Bench household")
            customer = crm_services.customer_create(given_name="Dana", family_name="ScriptBench", tier="gold",
                                                    lifetime_value=Decimal("250000"))  # fmt: skip
            crm_services.household_add_member(household_id=household.pk, customer_id=customer.pk, role="head")
            product, _ = Product.objects.get_or_create(
                code="bench-checking", defaults={"name": "Everyday Checking", "category": "checking"}
            )
            crm_services.account_open(
                customer_id=customer.pk, product_code=product.code, account_number="CHK-1"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--samples", type=int, default=None)
    args = parser.parse_args()
    samples = args.samples or SIZES[args.size]
    database = "crm_bench_scripts" if args.size == "default" else f"crm_bench_scripts_{args.size}"

    os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production-0123456789-abcdefghijkl")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("CRM_EMBEDDED_SERVERS", "true")
    os.environ["DATABASE_URL"] = bench_database_url(database)

    import django

    warnings.filterwarnings("ignore", "No directory at", UserWarning)
    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from crm.models import Customer
    from policies.engine import customer_map
    from scripting import rendering, services, validation
    from scripting.models import ScriptVersion

    call_command("migrate", verbosity=0)
    version = ScriptVersion.objects.filter(script__code=CODE, status="published").order_by("-number").first()
    if version is None or version.graph != bench_graph():
        print("building the bench script ...", flush=True)
        build()
        version = (
            ScriptVersion.objects.filter(script__code=CODE, status="published").order_by("-number").first()
        )
    assert version is not None
    graph = version.graph
    assert not validation.publish_problems(graph)
    steps = graph["steps"]
    customer = Customer.objects.select_related("household").get(family_name="ScriptBench")
    accounts = list(customer.accounts.select_related("product"))
    call = {"queue": "Customer service", "caller_number": "+1 202-555-0143", "direction": "inbound"}
    questions = validation.question_index(graph)
    rng = random.Random(11)
    # Answers of 50 runs in progress: numbers and yes/no, some left unanswered.
    runs = [
        {key: (rng.uniform(0, 10_000) if q["type"] == "number" else rng.random() < 0.5)
         for key, q in questions.items() if rng.random() < 0.8}
        for _ in range(50)
    ]  # fmt: skip
    today = timezone.localdate()
    timings: list[float] = []
    cpu_timings: list[float] = []
    branched = 0
    for i in range(WARM_UP + samples):
        step = rng.choice(steps[:-1])
        answers = rng.choice(runs)
        cpu_started = time.thread_time_ns()
        started = time.perf_counter_ns()
        values = rendering.merge_values(customer=customer, accounts=accounts, call=call)
        html = rendering.render(step["text"], values)
        target = services.next_step(graph, step, answers, customer_map(customer, today))
        elapsed = time.perf_counter_ns() - started
        cpu = time.thread_time_ns() - cpu_started
        if i >= WARM_UP:
            timings.append(elapsed / 1000)
            cpu_timings.append(cpu / 1000)
            branched += target != step["next"]
    assert "Dana" in html
    result = {
        "bench": "script_step",
        "size": args.size,
        "p50_us": round(statistics.median(timings), 1),
        "p99_us": round(percentile(timings, 0.99), 1),
        "cpu_p50_us": round(statistics.median(cpu_timings), 1),
        "cpu_p99_us": round(percentile(cpu_timings, 0.99), 1),
        "steps": len(steps),
        "cel_branches": sum(1 for s in steps for b in s["branches"] if b["kind"] == "cel"),
        "branch_taken_share": round(branched / len(timings), 3),
        "samples": len(timings),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
