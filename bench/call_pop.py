"""Call pop: from the telephony system's POST /api/v1/calls/ to the pop frame on
the chosen agent's WebSocket, with a floor of agents connected.

    .venv/bin/python bench/call_pop.py [--size small] [--agents 200] [--rate 50] [--seconds 20]

Uses the screen_pop bench database of the same size (built by bench/screen_pop.py
when missing: the caller's number is looked up among its customers), which runs
this measurement too (``measure_pop``). Starts a real uvicorn on the loopback
(``--web-workers`` processes: two, as the Procfile runs it) with the production settings, connects the agents'
desks (session cookies, as browsers do) through channels-redis, makes them all
available in one queue, then sends calls from customers' numbers at the given
rate through the API, as a phone system would. Each call rings the longest-idle
agent; the time is taken from just before the POST leaves to the moment the
``call.offered`` frame arrives on that agent's socket. The bench then hangs the
call up (a caller giving up while it rings), which frees the agent.

The last line is one JSON object: pop_ws_p50_ms, pop_ws_p99_ms, calls, popped,
lost, agents, rate_per_s, api_p50_ms, api_p99_ms, web_workers, peak_rss_mb of
the largest web process, load (the machine's one-minute load average).

    .venv/bin/python bench/call_pop.py --size small --cpu [--rounds 3]

measures instead what one call costs, whatever the machine's load: the same desks
connected, calls sent one after another (no queueing), each round ringing every
agent once then hanging every call up; the web process's CPU per arrival and per
hang-up (from /proc, over all rounds), and the SQL statements of each, counted in
process through the same views (Django's test client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (
    cpu_seconds,
    load_average,
    peak_rss_mb,
    percentile,
    setup_django,
    start_web,
    stop,
    tree_pids,
)
from bench.screen_pop import SIZES, database_for

QUEUE = "bench-pop"
SOURCE = "bench-pbx"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    add_pop_arguments(parser)
    args = parser.parse_args()
    database = database_for(args.size)
    setup_django(database)
    from crm.models import Customer

    if not Customer.objects.exists():
        raise SystemExit(
            f"{database} is empty: run bench/screen_pop.py --size {args.size} first to build it."
        )
    result = measure_cpu(args) if args.cpu else measure_pop(args)
    result.update(size=args.size, database=database)
    print(json.dumps(result))
    return 0


def add_pop_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", type=int, default=200, help="Agents' desks connected.")
    parser.add_argument("--rate", type=float, default=50.0, help="Calls per second.")
    parser.add_argument("--seconds", type=float, default=20.0, help="How long calls keep arriving.")
    parser.add_argument(
        "--web-workers",
        type=int,
        default=2,
        help="uvicorn processes (its --workers): 2, as the Procfile runs it.",
    )
    parser.add_argument("--cpu", action="store_true", help="CPU and statements per call.")
    parser.add_argument("--rounds", type=int, default=3, help="With --cpu: rounds of one call per agent.")


def measure_pop(args: argparse.Namespace) -> dict[str, Any]:
    """Inbound POST to pop frame, over real HTTP and WebSockets (Django set up first)."""
    numbers, cookies, token = _prepare(args.agents)
    web, port = start_web(workers=args.web_workers)
    try:
        result = asyncio.run(_run(port, cookies, token, numbers, args))
        result["peak_rss_mb"] = peak_rss_mb(web.pid)
    finally:
        stop(web)
    result.update(agents=args.agents, rate_per_s=args.rate, web_workers=args.web_workers, load=load_average())
    return result


def measure_cpu(args: argparse.Namespace) -> dict[str, Any]:
    """Web CPU per arrival and per hang-up over real HTTP, and statements of each."""
    numbers, cookies, token = _prepare(args.agents)
    statements = _count_statements(token, numbers)
    numbers, cookies, token = _prepare(args.agents)  # every agent available again
    web, port = start_web(workers=1)
    try:
        result = asyncio.run(_run_cpu(port, web.pid, cookies, token, numbers, args=args))
    finally:
        stop(web)
    result.update(statements, agents=args.agents, rounds=args.rounds, load=load_average())
    return result


def _count_statements(token: str, numbers: list[str]) -> dict[str, Any]:
    """SQL statements of one arrival and one hang-up (the ringing caller gives up), in process."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")
    counts: dict[str, list[int]] = {"arrive": [], "hangup": []}
    for n in range(6):
        call_id = f"count-{time.time_ns()}-{n}"
        with CaptureQueriesContext(connection) as arrival:
            response = client.post(
                "/api/v1/calls/", {"call_id": call_id, "ani": numbers[n], "queue": QUEUE}, format="json"
            )
        assert response.status_code == 201 and response.json()["agent"], response.content
        with CaptureQueriesContext(connection) as hangup:
            response = client.post(
                f"/api/v1/calls/{call_id}/events/", {"event_id": "bye", "kind": "ended"}, format="json"
            )
        assert response.status_code == 200, response.content
        if n:  # the first loads the process's permission catalog and writes the token's last use
            counts["arrive"].append(len(arrival))
            counts["hangup"].append(len(hangup))
    return {"arrive_statements": max(counts["arrive"]), "hangup_statements": max(counts["hangup"])}


async def _run_cpu(
    port: int, pid: int, cookies: list[str], token: str, numbers: list[str], *, args: Any
) -> dict[str, Any]:
    import websockets

    origin = f"http://127.0.0.1:{port}"
    sockets = []
    for cookie in cookies:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws/desktop/",
            additional_headers={"Cookie": f"sessionid={cookie}", "Origin": origin},
        )
        await asyncio.wait_for(ws.recv(), 10)
        sockets.append(ws)
    offered: set[int] = set()

    async def listen(ws: Any) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("event") == "call.offered":
                offered.add(int(frame["call_id"]))

    listeners = [asyncio.create_task(listen(ws)) for ws in sockets]
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1)

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310  (loopback, the bench's own server)
            f"{origin}{path}", data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def web_cpu() -> float:
        return sum(cpu_seconds(tree_pids(pid)).values())

    async def settle() -> None:
        # Frames of the last requests leave the web process's loop after the response.
        await asyncio.sleep(0.5)

    rng = random.Random(5)
    run_id = f"cpu-{int(time.time())}"
    arrive_cpu = hangup_cpu = 0.0
    calls = 0
    for round_ in range(args.rounds):
        ids = [f"{run_id}-{round_}-{n}" for n in range(len(cookies))]
        await settle()
        before = web_cpu()
        for call_id in ids:
            body = await loop.run_in_executor(
                pool, post, "/api/v1/calls/", {"call_id": call_id, "ani": rng.choice(numbers), "queue": QUEUE}
            )
            assert body.get("agent"), body
        await settle()
        arrive_cpu += web_cpu() - before
        before = web_cpu()
        for call_id in ids:
            await loop.run_in_executor(
                pool, post, f"/api/v1/calls/{call_id}/events/", {"event_id": "bye", "kind": "ended"}
            )
        await settle()
        hangup_cpu += web_cpu() - before
        calls += len(ids)
    for task in listeners:
        task.cancel()
    for ws in sockets:
        await ws.close()
    return {
        "arrive_cpu_ms": round(arrive_cpu / calls * 1000, 2),
        "hangup_cpu_ms": round(hangup_cpu / calls * 1000, 2),
        "calls": calls,
        "popped": len(offered),
    }


def _prepare(agent_count: int) -> tuple[list[str], list[str], str]:
    """Agents available in one queue, each with a signed-in session; a phone
    system's integration with a token; numbers of real customers to call from."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from agents import services as agents_services
    from agents.models import Agent, AgentState, Call, Queue
    from crm import services
    from crm.models import Customer, SourceSystem, User

    queue, _ = Queue.objects.update_or_create(code=QUEUE, defaults={"name": "Bench pop", "ring_seconds": 60})
    Call.objects.filter(queue=queue).exclude(state="ended").update(state="ended", end_reason="bench reset")
    source = SourceSystem.objects.filter(code=SOURCE).first() or services.source_system_create(
        code=SOURCE, name="Bench phone system", kind="ivr"
    )
    _, token = services.api_token_create(user=source.api_user, name="bench call_pop")
    cookies = []
    for n in range(agent_count):
        user = User.objects.filter(username=f"bench-agent-{n}").first() or services.staff_user_create(
            username=f"bench-agent-{n}",
            password="bench-password-not-used-1",
            role="agent",
            first_name=f"Agent {n}",
        )
        agent = agents_services.agent_for(user=user)
        agent.queues.set([queue])
        Agent.objects.filter(pk=agent.pk).update(state=AgentState.OFFLINE, call=None)
        agents_services.agent_set_state(user=user, state=AgentState.AVAILABLE)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        cookies.append(session.session_key or "")
    rng = random.Random(7)
    rows = Customer.objects.exclude(phones=[]).values_list("phone_keys", flat=True)[:5000]
    numbers = [rng.choice(keys) for keys in rows if keys]
    return numbers, cookies, token


async def _run(port: int, cookies: list[str], token: str, numbers: list[str], args: Any) -> dict[str, Any]:
    import websockets

    origin = f"http://127.0.0.1:{port}"
    arrived: dict[int, float] = {}
    sockets = []
    for cookie in cookies:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws/desktop/",
            additional_headers={"Cookie": f"sessionid={cookie}", "Origin": origin},
            max_size=2**20,
        )
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if first.get("event") != "presence":
            raise SystemExit(f"the desk socket answered {first}")
        sockets.append(ws)

    async def listen(ws: Any) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("event") == "call.offered":
                arrived.setdefault(int(frame["call_id"]), time.perf_counter())

    listeners = [asyncio.create_task(listen(ws)) for ws in sockets]
    pool = ThreadPoolExecutor(max_workers=16)
    loop = asyncio.get_running_loop()

    def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(  # noqa: S310  (loopback, the bench's own server)
            f"{origin}{path}", data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())

    sent: dict[int, float] = {}
    api_ms: list[float] = []
    rng = random.Random(11)
    run_id = f"{int(time.time())}"
    total = int(args.rate * args.seconds)

    async def one_call(n: int) -> None:
        t0 = time.perf_counter()
        status, body = await loop.run_in_executor(
            pool,
            post,
            "/api/v1/calls/",
            {"call_id": f"pop-{run_id}-{n}", "ani": rng.choice(numbers), "queue": QUEUE},
        )
        api_ms.append((time.perf_counter() - t0) * 1000)
        if status == 201 and body.get("agent"):
            sent[int(body["id"])] = t0
            # Wait for the pop, then the caller hangs up while it rings: the agent is free again.
            for _ in range(200):
                if int(body["id"]) in arrived:
                    break
                await asyncio.sleep(0.01)
            await loop.run_in_executor(
                pool, post, f"/api/v1/calls/pop-{run_id}-{n}/events/", {"event_id": "bye", "kind": "ended"}
            )

    tasks = []
    start = time.perf_counter()
    for n in range(total):
        target = start + n / args.rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one_call(n)))
    await asyncio.gather(*tasks)
    await asyncio.sleep(1.0)
    for task in listeners:
        task.cancel()
    for ws in sockets:
        await ws.close()
    latencies = [(arrived[pk] - t0) * 1000 for pk, t0 in sent.items() if pk in arrived]
    return {
        "pop_ws_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "pop_ws_p99_ms": round(percentile(latencies, 0.99), 2) if latencies else None,
        "calls": total,
        "popped": len(latencies),
        "lost": len(sent) - len(latencies),
        "api_p50_ms": round(statistics.median(api_ms), 2) if api_ms else None,
        "api_p99_ms": round(percentile(api_ms, 0.99), 2) if api_ms else None,
    }


if __name__ == "__main__":
    raise SystemExit(main())
