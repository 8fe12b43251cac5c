"""What the benches share: their databases, the production settings they run
with, the web server they start and the figures they report.

Each bench builds its data at a fixed size in a database of its own (next to the
one DATABASE_URL names, or on the embedded server), runs the product with the
settings a web process runs with (DEBUG off), and prints its last line as one
JSON object.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
WEB_POOL_SIZE = "10"  # the Procfile's default
# Whether the bench runs on the embedded PostgreSQL (whose processes it can watch).
_embedded_postgres: list[bool] = []
BENCH_SECRET_KEY = "bench-secret-key-not-for-production-0123456789-abcdefghijkl"


def bench_database_url(database: str) -> str:
    """The URL of ``database`` on the server DATABASE_URL points at (or the
    embedded one), creating the database if needed."""
    base = os.environ.get("DATABASE_URL")
    if not base:
        _embedded_postgres.append(True)
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


def recreate_database(url: str, database: str) -> None:
    import psycopg

    with psycopg.connect(_with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')


def setup_django(database: str) -> str:
    """Point Django at the bench's ``database`` with production settings (DEBUG off,
    no HTTPS redirect, the test client's and the loopback's host names allowed),
    set it up and migrate; returns the database URL."""
    os.environ.setdefault("SECRET_KEY", BENCH_SECRET_KEY)
    os.environ["DEBUG"] = "false"
    os.environ["SECURE_SSL_REDIRECT"] = "false"
    os.environ["SESSION_COOKIE_SECURE"] = "false"
    os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("CRM_EMBEDDED_SERVERS", "true")
    url = bench_database_url(database)
    os.environ["DATABASE_URL"] = url
    import django

    # WhiteNoise warns that collectstatic never ran; static files play no part here.
    warnings.filterwarnings("ignore", "No directory at", UserWarning)
    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if not (Path(settings.STATIC_ROOT) / "staticfiles.json").exists():
        # Pages render hashed static file names from the manifest, as in production.
        call_command("collectstatic", interactive=False, verbosity=0)
    # The web process started next must use the same Redis as this one.
    os.environ["REDIS_URL"] = settings.REDIS_URL
    return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log(name: str | None) -> Any:
    """Where a started server writes: ``.local/bench/<name>`` when named, else this process's output."""
    if name is None:
        return None
    logs = ROOT / ".local" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    return open(logs / name, "wb")  # the child process keeps it open


def start_web(*, workers: int = 1, log: str | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """uvicorn on a free loopback port with this process's environment (call
    ``setup_django`` first), once it accepts connections; ``log`` names a file
    under .local/bench for its output."""
    port = free_port()
    env = dict(os.environ)
    # As the Procfile runs it: a web process borrows database connections from a pool.
    # Without one, each request opened its own (a PostgreSQL backend started and
    # authenticated: ~8 ms on a loaded machine, more than the request's own work).
    env.setdefault("DATABASE_POOL_MAX_SIZE", WEB_POOL_SIZE)
    web = subprocess.Popen(
        [str(Path(sys.executable).parent / "uvicorn"), "config.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--lifespan", "off", "--log-level", "warning", "--no-access-log",
         "--workers", str(workers)],
        cwd=ROOT, env=env, stdout=_log(log), stderr=subprocess.STDOUT if log else None,
    )  # fmt: skip
    try:
        wait_for_port(port)
    except SystemExit:
        web.terminate()
        raise
    return web, port


def start_worker(*, processes: int = 2, log: str | None = None) -> subprocess.Popen[bytes]:
    """A Celery worker as the Procfile runs it (prefork, ``processes`` pool
    processes, every task of the default queue) with this process's environment.
    The bench sets CELERY_TASK_DEFAULT_QUEUE to a queue of its own first, so the
    worker consumes all the bench's tasks (ingest, event dispatch, ...) and no
    other environment's."""
    queue = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "config", "worker", "--pool", "prefork",
         "--concurrency", str(processes), "--hostname", f"{queue}@%h", "--loglevel", "WARNING",
         "--without-mingle", "--without-gossip", "--without-heartbeat"],
        cwd=ROOT, env=dict(os.environ), stdout=_log(log), stderr=subprocess.STDOUT if log else None,
    )  # fmt: skip


def wait_for_port(port: int, *, seconds: float = 30.0) -> None:
    """Return once something accepts connections on the loopback ``port``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {seconds:.0f} s: uvicorn did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def peak_rss_mb(pid: int) -> float:
    """The highest peak resident memory of ``pid`` and its child processes (the
    uvicorn workers), in MB (Linux)."""
    peaks = []
    for each in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    return round(max(peaks, default=0.0), 1)


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a worker's pool processes), read from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                pass
    return found


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _pss(pid: int) -> int:
    """The proportional set size of ``pid`` in bytes: its private pages plus its share
    of each page it maps with other processes (a page three processes share counts a
    third in each). Read from smaps_rollup, which walks the page tables: ~1 ms for a
    100 MB process, fine at two readings a second."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:  # exited, or not readable (another user's process)
        pass
    return 0


def tree_rss_mb(pid: int) -> float:
    """Resident memory now of a process and its descendants, summed, in MB (Linux).
    A page a forked child still shares with its parent (copy-on-write: the imports
    the parent made before forking) counts once per process here: an upper bound on
    what the tree holds, not the memory it takes from the machine (``tree_pss_mb``)."""
    return sum(_rss(p) for p in _tree(pid)) / 1e6


def tree_pss_mb(pid: int) -> float:
    """The physical memory a process and its descendants hold now, in MB (Linux): the
    sum of their proportional set sizes, each shared page counted once in all. What
    the machine would get back if the tree exited, give or take the pages it shares
    with processes outside it (the Python interpreter's own file, libc)."""
    return sum(_pss(p) for p in _tree(pid)) / 1e6


def largest_rss_mb(pid: int) -> float:
    """Resident memory now of the largest single process of a tree, in MB."""
    return max((_rss(p) for p in _tree(pid)), default=0) / 1e6


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU time (user + system) each of these processes has used so far, in seconds (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / tick
    return used


def tree_pids(pid: int) -> list[int]:
    return _tree(pid)


def embedded_postgres_pids() -> list[int]:
    """The embedded PostgreSQL's postmaster and its backends (none when DATABASE_URL
    names another server), to count the CPU the database spends on a run."""
    if not _embedded_postgres:
        return []
    try:
        return _tree(int((ROOT / ".local" / "pg" / "postmaster.pid").read_text().split()[0]))
    except (OSError, ValueError):
        return []


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def load_average() -> float:
    """The machine's one-minute load, printed beside the figures: on a shared
    machine they mean little without it."""
    return round(os.getloadavg()[0], 2)
