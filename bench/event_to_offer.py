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
        help="Also time each stage of an offer's way (see traced_application): the medians and\n"
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
    app = (
        ["bench.event_to_offer:traced_application", "--factory"]
        if args.trace
        else ["config.asgi:application"]
    )
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
            print(json.dumps(_cost(port, web.pid, token, customers, run, args.cost, limits)))
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
        event_type = POSTED_TYPES[n % len(POSTED_TYPES)]
        async with turn[agent]:  # one agent's events in order: a move waits for the ones before it
            if k and k % EVENTS_PER_CUSTOMER == 0:
                previous = customers[agent + agents * (k // EVENTS_PER_CUSTOMER - 1)]
                watched.append((previous, since[agent], time.perf_counter()))
                await watch(agent, customer)
                since[agent] = time.perf_counter()
            body = {"type": event_type, "customer": customer, "idempotency_key": f"e2o-{run}-{n}",
                    "occurred_at": _now_iso(), "payload": PAYLOADS[event_type]}  # fmt: skip
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


def _event_body(n: int, customers: list[int], run: str, agents: int = 1) -> dict[str, Any]:
    customer = customers[(n // EVENTS_PER_CUSTOMER) % len(customers)]
    event_type = POSTED_TYPES[n % len(POSTED_TYPES)]
    return {"type": event_type, "customer": customer, "idempotency_key": f"e2o-{run}-{n}",
            "occurred_at": _now_iso(), "payload": PAYLOADS[event_type]}  # fmt: skip


def _cost(  # noqa: PLR0917
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
        """For ``_cost``: the CPU the Celery worker (all its processes) and PostgreSQL
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
        body = json.dumps(_event_body(n, customers, run)).encode()
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
                    "/api/v1/events", data=_event_body(n, customers, run), content_type="application/json",
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
    stages = _stages(measured, at) if measured.get("traces") else {}
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


# The stages of an offer's way, in order: (name, from, to) over the trace's stamps.
# "sent", "answered" and "arrived" are the client's; "recorded" is the event row's
# recorded_at; the others are stamped in the web process by traced_application.
STAGES = (
    ("request_in", "sent", "in"),  # the POST on the wire, uvicorn, until the app is called
    ("view_to_insert", "in", "recorded"),  # Django, token auth, DRF parsing and validation
    ("insert_to_commit", "recorded", "committed"),  # the event insert, the rest of the view, the commit
    ("commit_to_decide", "committed", "decide"),  # the on-commit hooks before the decision
    ("decision", "decide", "decision_committed"),  # facts, evaluation, claim, presentations, commit
    ("dispatch", "decision_committed", "dispatched"),  # the offer.presented events' hook (a task queued)
    ("to_handover", "dispatched", "handover"),  # the rest of the decision's on-commit hooks
    ("loop_wait", "handover", "sending"),  # the frames wait for the server's event loop and its sender
    (
        "who_listens",
        "sending",
        "group_send",
    ),  # the sender's look-up of the groups with members (the core layer)
    ("layer", "group_send", "consumer"),  # the channel layer's send, Redis, the consumer's receive loop
    ("socket", "consumer", "arrived"),  # the consumer's send_json, the socket write, the client's read
)


def traced_application() -> Any:
    """The web process's application (``uvicorn --factory``) with each stage of an
    offer's way stamped into its frame (``trace``: wall-clock seconds, one clock on
    one machine): the request's arrival, the commit of its transaction, the
    decision's start, the frames' hand-over to the event loop, the sender taking
    them, the channel layer's group_send and the consumer receiving the message.
    Wrappers around the product's functions, in this process only: nothing the
    product sends changes unless it runs under this factory."""
    import contextvars

    from config.asgi import application  # sets Django up: the imports below need the models

    # isort: split
    from agents.consumers import DesktopConsumer
    from crm import realtime
    from crm.services import event_dispatch
    from policies import engine

    stamps: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("trace", default=None)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            stamps.set({"in": time.time()})  # the view's thread runs in a copy of this context
        await application(scope, receive, send)

    committed = event_dispatch._DispatchOnCommit.__call__

    def on_commit(self: Any) -> None:
        trace = stamps.get()
        if trace is None:
            committed(self)
        elif "committed" not in trace:
            trace["committed"] = time.time()  # the request's commit
            committed(self)
        else:  # the decision's commit: its offer.presented events handed to their listeners
            trace["decision_committed"] = time.time()
            committed(self)
            trace["dispatched"] = time.time()

    event_dispatch._DispatchOnCommit.__call__ = on_commit  # type: ignore[method-assign]

    decide = engine.decide

    def traced_decide(event: Any, **kwargs: Any) -> Any:
        trace = stamps.get()
        if trace is not None:
            trace.setdefault("decide", time.time())
        return decide(event, **kwargs)

    engine.decide = traced_decide  # type: ignore[assignment]

    send_many_now = realtime.send_many_now

    def traced_send_many_now(messages: list[tuple[str, dict[str, Any]]]) -> None:
        trace = {**(stamps.get() or {}), "handover": time.time()}
        for _, message in messages:
            if message.get("event") == "offer.presented":
                message["trace"] = dict(trace)
        send_many_now(messages)

    realtime.send_many_now = traced_send_many_now  # type: ignore[assignment]

    send_all = realtime._send_all

    async def traced_send_all(layer: Any, messages: list[tuple[str, dict[str, Any]]], **kwargs: Any) -> None:
        now = time.time()
        for _, message in messages:
            message.get("trace", {}).setdefault("sending", now)
        if kwargs.get("pipelined") and hasattr(layer, "_get_layer"):
            # The web process's pub/sub pipeline publishes at once (no look-up first, no
            # group_send): stamped here, before the messages are serialized.
            for _, message in messages:
                message.get("trace", {})["group_send"] = now
            await send_all(layer, messages, **kwargs)
            return
        group_send = layer.group_send

        async def traced_group_send(group: str, message: dict[str, Any]) -> None:
            message.get("trace", {})["group_send"] = time.time()
            await group_send(group, message)

        layer.group_send = traced_group_send
        try:
            await send_all(layer, messages, **kwargs)
        finally:
            del layer.group_send

    realtime._send_all = traced_send_all  # type: ignore[assignment]

    crm_event = DesktopConsumer.crm_event

    async def traced_crm_event(self: Any, message: dict[str, Any]) -> None:
        if "trace" in message:
            message["trace"]["consumer"] = time.time()
        await crm_event(self, message)

    DesktopConsumer.crm_event = traced_crm_event  # type: ignore[method-assign]
    return app


def _stages(measured: dict[str, Any], at: Any) -> dict[str, Any]:
    """p50 and p99 per stage (ms) over the offers whose frames carried a trace."""
    from crm.models import BusinessEvent
    from policies.models import OfferPresentation

    wall, perf = measured["clock"]
    traces: dict[int, dict[str, float]] = measured["traces"]
    events = dict(OfferPresentation.objects.filter(pk__in=list(traces)).values_list("pk", "event_id"))
    recorded = dict(
        BusinessEvent.objects.filter(pk__in=set(events.values())).values_list("pk", "recorded_at")
    )
    by_stage: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    by_stage["api_response"] = []
    for pk, trace in traces.items():
        event_id = events.get(pk)
        if event_id is None or event_id not in measured["sent"]:
            continue
        moments = dict(trace)
        moments["sent"] = wall - (perf - measured["sent"][event_id])
        moments["answered"] = wall - (perf - measured["answered"][event_id])
        moments["arrived"] = wall - (perf - measured["arrived"][pk])
        moments["recorded"] = recorded[event_id].timestamp()
        for name, start, end in (*STAGES, ("api_response", "sent", "answered")):
            if start in moments and end in moments:
                by_stage[name].append((moments[end] - moments[start]) * 1000)
    return {
        "stages_ms": {
            name: [round(statistics.median(values), 2), round(percentile(values, 0.99), 2)]
            for name, values in by_stage.items()
            if values
        },
        "traced": len(by_stage["api_response"]),
    }


def _cookie_name() -> str:
    from django.conf import settings

    return str(settings.SESSION_COOKIE_NAME)


def _now_iso() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat()


if __name__ == "__main__":
    raise SystemExit(main())
