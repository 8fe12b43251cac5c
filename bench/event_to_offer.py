"""Event to offer: a business event POSTed to /api/v1/events until the offer it
raises arrives on the WebSocket of the agent watching that customer.

    .venv/bin/python bench/event_to_offer.py [--size small] [--agents N] [--rate N] [--seconds N]

Data: its own database (``crm_bench_event_to_offer`` or ``..._small``), with the
policies of bench/policy_decision.py built by its ``build`` (1,000 active
policies, 50 per event type; small: 100 policies, 20 agents, 100 events/s for 10 s), plus
customers for the agents to
watch (marketing consent, platinum). Built once and reused.

Run: a real uvicorn (production settings, two processes as the Procfile runs
it; ``--web-workers`` to change) and a real Celery
worker (prefork, two processes: the deferred pass of every event, which finds
the event already decided on commit and does nothing else). ``--agents`` desks
connect with signed-in sessions and each watches one customer; events of the
non-offer types go to the watched customers round-robin at ``--rate`` per
second through the API (an integration's token). Each customer gets
``EVENTS_PER_CUSTOMER`` events, then its agent moves on to a fresh customer,
as agents do between calls (a customer's contact rules soon stop new offers:
one waiting offer per offer and channel, caps per period).

Measured: from just before the POST leaves until the ``offer.presented`` frame
arrives, for every offer whose event was posted (the presentation rows say
which event raised each offer). ``lost`` counts presentations of watched
customers, made while they were watched, whose frame never came. The channel
daily limits are lifted for the run (POLICIES_*_DAILY_LIMIT): the bench sends
a customer more events in a minute than a day brings.

The last line is one JSON object: p50_ms, p99_ms, events_per_s (the rate the
server kept up with), sent, offers, received, lost, api_p50_ms, api_p99_ms,
policies, agents, peak_rss_mb of the web and of the worker (the largest process of each),
and the channel layer (CHANNEL_LAYER=core|pubsub in the environment chooses it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port, largest_rss_mb, wait_for_port
from bench.event_trace import stages as trace_stages
from bench.policy_decision import EVENT_TYPES, PAYLOADS, build
from bench.policy_decision import SIZES as POLICY_SIZES
from bench.screen_pop import bench_database_url, percentile

# policies per event type, agents, events per second, seconds
SIZES = {
    "default": (POLICY_SIZES["default"][0], 200, 500.0, 60.0),
    "small": (POLICY_SIZES["small"][0], 20, 100.0, 10.0),
}
POSTED_TYPES = [t for t in EVENT_TYPES if not t.startswith("offer.")]
EVENTS_PER_CUSTOMER = 10
SOURCE = "bench-events"
FAMILY = "Watched"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--agents", type=int, default=None, help="200 (small: 20).")
    parser.add_argument("--rate", type=float, default=None, help="Events per second: 500 (small: 100).")
    parser.add_argument(
        "--seconds", type=float, default=None, help="How long events keep coming: 60 (small: 10)."
    )
    parser.add_argument(
        "--web-workers", type=int, default=2,
        help="uvicorn processes: 2, one per core, as the Procfile runs them (--cost: always 1).",
    )  # fmt: skip
    parser.add_argument(
        "--cost", type=int, default=0, metavar="N",
        help="Instead: N events POSTed one after the other (no sockets, no load), and what one\n"
        "costs: the web process's CPU per event over real HTTP, and the SQL statements\n"
        "per event (counted in this process through the same view, its commit and decision).",
    )  # fmt: skip
    parser.add_argument(
        "--trace", action="store_true",
        help="Also time each stage of an offer's way (bench/event_trace.py): the medians and\n"
        "p99s per stage join the JSON line as stages_ms.",
    )  # fmt: skip
    args = parser.parse_args()
    per_type, agents, rate, seconds = SIZES[args.size]
    args.agents = args.agents or agents
    args.rate = args.rate or rate
    seconds = args.seconds or seconds
    database = (
        "crm_bench_event_to_offer" if args.size == "default" else f"crm_bench_event_to_offer_{args.size}"
    )

    os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production-0123456789-abcdefghijkl")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("CRM_EMBEDDED_SERVERS", "true")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1")
    url = bench_database_url(database)
    os.environ["DATABASE_URL"] = url

    import django

    warnings.filterwarnings("ignore", "No directory at", UserWarning)
    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from policies.models import Policy

    call_command("migrate", verbosity=0)
    expected = per_type * len(EVENT_TYPES)
    if Policy.objects.filter(status="active", name__startswith="bench ").count() != expected:
        print(f"building {expected} policies ...", file=sys.stderr, flush=True)
        build(per_type)
    total = int(args.rate * seconds)
    customers_needed = args.agents * -(-total // (args.agents * EVENTS_PER_CUSTOMER))
    customers, cookies, token = _prepare(args.agents, customers_needed)

    run = secrets.token_hex(3)
    port = free_port()
    limits = {f"POLICIES_{c}_DAILY_LIMIT": "100000" for c in ("AGENT_SCREEN", "SELF_SERVICE", "EMAIL",
                                                              "OUTBOUND_CALL")}  # fmt: skip
    # As the Procfile runs the web process: with a pool of database connections.
    env = dict(os.environ, DATABASE_URL=url, REDIS_URL=settings.REDIS_URL, DEBUG="false",
               ALLOWED_HOSTS="127.0.0.1", SECURE_SSL_REDIRECT="false", SESSION_COOKIE_SECURE="false",
               LOG_LEVEL="WARNING", CELERY_TASK_ALWAYS_EAGER="false",
               DATABASE_POOL_MAX_SIZE=os.environ.get("DATABASE_POOL_MAX_SIZE", "10"),
               **limits)  # fmt: skip
    bin_dir = Path(sys.executable).parent
    logs = ROOT / ".local" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    app = ["bench.event_trace:traced_application", "--factory"] if args.trace else ["config.asgi:application"]
    web = subprocess.Popen(
        [str(bin_dir / "uvicorn"), *app, "--host", "127.0.0.1", "--port", str(port),
         "--lifespan", "off", "--log-level", "warning", "--no-access-log",
         "--timeout-graceful-shutdown", "3", "--workers", str(1 if args.cost else args.web_workers)],
        cwd=ROOT, env=env, stdout=open(logs / "event_to_offer_web.log", "wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    worker = subprocess.Popen(
        [str(bin_dir / "celery"), "-A", "config", "worker", "--pool", "prefork", "--concurrency", "2",
         "--hostname", f"bench-e2o-{run}@%h", "--loglevel", "WARNING",
         "--without-mingle", "--without-gossip", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=open(logs / "event_to_offer_worker.log", "wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    peak = {"web": 0.0, "worker": 0.0}
    stop = threading.Event()

    def watch_memory() -> None:
        while not stop.is_set():
            peak["web"] = max(peak["web"], largest_rss_mb(web.pid))  # per process, as the budget is
            peak["worker"] = max(peak["worker"], largest_rss_mb(worker.pid))
            time.sleep(0.5)

    threading.Thread(target=watch_memory, daemon=True).start()
    try:
        wait_for_port(port)
        time.sleep(3)  # the worker's pool
        if args.cost:
            from bench.event_cost import cost

            print(json.dumps(cost(port, web.pid, token, customers, run, args.cost, limits)))
            return 0
        measured = asyncio.run(_run(port, cookies, token, customers, run, total, args))
    finally:
        stop.set()
        for process in (web, worker):
            process.terminate()
        for process in (web, worker):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    result = _score(measured)
    result.update(
        policies=Policy.objects.filter(status="active").count(), agents=args.agents, rate_per_s=args.rate,
        channel_layer=settings.CHANNEL_LAYER, web_workers=args.web_workers,
        seconds=seconds, size=args.size, web_peak_rss_mb=round(peak["web"]),
        worker_peak_rss_mb=round(peak["worker"]), peak_rss_mb=round(max(peak.values())),
    )  # fmt: skip
    print(json.dumps(result))
    return 0


def _prepare(agent_count: int, customer_count: int) -> tuple[list[int], list[str], str]:
    """Agents with signed-in sessions, an integration with a token, customers to watch."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from crm import services
    from crm.models import Customer, SourceSystem, User
    from policies.models import OfferPresentation

    source = SourceSystem.objects.filter(code=SOURCE).first() or services.source_system_create(
        code=SOURCE, name="Bench events", kind="web"
    )
    _, token = services.api_token_create(user=source.api_user, name="bench event_to_offer")
    have = Customer.objects.filter(family_name=FAMILY).count()
    if have < customer_count:
        print(f"creating {customer_count - have} customers ...", file=sys.stderr, flush=True)
    for n in range(have, customer_count):
        services.customer_create(
            given_name=f"W{n}", family_name=FAMILY, tier="platinum", marketing_opt_in=True
        )
    customers = list(Customer.objects.filter(family_name=FAMILY).order_by("pk").values_list("pk", flat=True))
    # Each run starts its customers afresh: an earlier run's offers would still be
    # waiting, and the contact rules would stop this run's.
    OfferPresentation.objects.filter(customer__family_name=FAMILY).delete()
    cookies = []
    for n in range(agent_count):
        user = User.objects.filter(username=f"bench-agent-{n}").first() or services.staff_user_create(
            username=f"bench-agent-{n}", password="bench-password-not-used-1", role="agent"
        )
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        cookies.append(session.session_key or "")
    return customers[:customer_count], cookies, token


async def _run(  # noqa: PLR0917
    port: int, cookies: list[str], token: str, customers: list[int], run: str, total: int, args: Any
) -> dict[str, Any]:
    import websockets

    origin = f"http://127.0.0.1:{port}"
    agents = len(cookies)
    arrived: dict[int, float] = {}  # presentation id -> when its frame came
    traces: dict[int, dict[str, float]] = {}  # presentation id -> the stages' times (--trace)
    acks: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in cookies]
    sockets = []
    for cookie in cookies:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws/desktop/",
            additional_headers={"Cookie": f"{_cookie_name()}={cookie}", "Origin": origin}, max_size=2**20,
        )  # fmt: skip
        await asyncio.wait_for(ws.recv(), 10)  # the presence snapshot
        sockets.append(ws)

    async def listen(n: int, ws: Any) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("event") == "offer.presented":
                arrived.setdefault(int(frame["presentation_id"]), time.perf_counter())
                if "trace" in frame:
                    traces.setdefault(int(frame["presentation_id"]), frame["trace"])
            elif frame.get("event") == "watching":
                acks[n].put_nowait(int(frame["customer_id"]))

    listeners = [asyncio.create_task(listen(n, ws)) for n, ws in enumerate(sockets)]
    watched: list[tuple[int, float, float]] = []  # (customer, from, to) in perf_counter time

    async def watch(n: int, customer: int) -> None:
        await sockets[n].send(json.dumps({"action": "watch", "customer_id": customer}))
        # As long as a POST may take: an overloaded server answers a watch late, not never.
        while await asyncio.wait_for(acks[n].get(), 60) != customer:
            pass

    for n in range(agents):
        await watch(n, customers[n])
    since = [time.perf_counter()] * agents

    pool = ThreadPoolExecutor(max_workers=32)
    loop = asyncio.get_running_loop()

    def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(  # noqa: S310  (loopback, the bench's own server)
            f"{origin}/api/v1/events", data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, json.loads(response.read())

    sent: dict[int, float] = {}  # event id -> when its POST left
    answered: dict[int, float] = {}  # event id -> when its response came
    api_ms: list[float] = []
    failures = 0
    turn: list[asyncio.Lock] = [asyncio.Lock() for _ in cookies]

    async def one_event(n: int) -> None:
        nonlocal failures
        agent, k = n % agents, n // agents
        customer = customers[agent + agents * (k // EVENTS_PER_CUSTOMER)]
        async with turn[agent]:  # one agent's events in order: a move waits for the ones before it
            if k and k % EVENTS_PER_CUSTOMER == 0:
                previous = customers[agent + agents * (k // EVENTS_PER_CUSTOMER - 1)]
                watched.append((previous, since[agent], time.perf_counter()))
                await watch(agent, customer)
                since[agent] = time.perf_counter()
            body = event_body(n, customer, run)
            started = time.perf_counter()
            try:
                status, answer = await loop.run_in_executor(pool, post, body)
            except Exception:  # noqa: BLE001  (an error or a timeout under load: counted, not fatal)
                failures += 1
                return
            answered[int(answer.get("id", 0))] = time.perf_counter()
            api_ms.append((answered[int(answer.get("id", 0))] - started) * 1000)
            if status in (200, 201):
                sent[int(answer["id"])] = started

    tasks = []
    start = time.perf_counter()
    for n in range(total):
        delay = start + n / args.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one_event(n)))
    await asyncio.gather(*tasks)
    posting_s = time.perf_counter() - start
    await asyncio.sleep(2.0)  # the last frames
    ended = time.perf_counter()
    for agent in range(agents):
        k_last = (total - 1 - agent) // agents if total > agent else 0
        watched.append((customers[agent + agents * (k_last // EVENTS_PER_CUSTOMER)], since[agent], ended))
    for task in listeners:
        task.cancel()
    for ws in sockets:
        await ws.close()
    pool.shutdown()
    return {"arrived": arrived, "sent": sent, "api_ms": api_ms, "failures": failures, "posting_s": posting_s,
            "watched": watched, "clock": (time.time(), time.perf_counter()), "total": total,
            "traces": traces, "answered": answered}  # fmt: skip


def event_body(n: int, customer: int, run: str) -> dict[str, Any]:
    """The ``n``-th event of a run: the posted types in turn, each with its payload."""
    event_type = POSTED_TYPES[n % len(POSTED_TYPES)]
    return {"type": event_type, "customer": customer, "idempotency_key": f"e2o-{run}-{n}",
            "occurred_at": _now_iso(), "payload": PAYLOADS[event_type]}  # fmt: skip


def _score(measured: dict[str, Any]) -> dict[str, Any]:
    """Join the frames to the presentation rows: which event raised each offer, and
    which offers of watched customers never reached the screen."""
    import datetime as dt

    from policies.models import OfferPresentation

    wall, perf = measured["clock"]

    def at(moment: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(wall - (perf - moment), tz=dt.UTC)

    sent: dict[int, float] = measured["sent"]
    arrived: dict[int, float] = measured["arrived"]
    latencies, offers, received = [], 0, 0
    for customer, start, end in measured["watched"]:
        rows = OfferPresentation.objects.filter(
            customer_id=customer, presented_at__gte=at(start), presented_at__lte=at(end - 0.5)
        ).values_list("pk", "event_id")
        for pk, event_id in rows:
            offers += 1
            if pk in arrived:
                received += 1
                if event_id in sent:
                    latencies.append((arrived[pk] - sent[event_id]) * 1000)
    api_ms = measured["api_ms"]
    stages = trace_stages(measured, at) if measured.get("traces") else {}
    return {
        **stages,
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 2) if latencies else None,
        "events_per_s": round(len(sent) / measured["posting_s"], 1),
        "sent": measured["total"],
        "accepted_by_api": len(sent),
        "api_failures": measured["failures"],
        "offers": offers,
        "received": received,
        "lost": offers - received,
        "latency_samples": len(latencies),
        "api_p50_ms": round(statistics.median(api_ms), 2) if api_ms else None,
        "api_p99_ms": round(percentile(api_ms, 0.99), 2) if api_ms else None,
    }


def _cookie_name() -> str:
    from django.conf import settings

    return str(settings.SESSION_COOKIE_NAME)


def _now_iso() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat()


if __name__ == "__main__":
    raise SystemExit(main())
