"""The embedded servers are real servers, and every process shares the same ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from config import embedded

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def server_run_id(url: str) -> str:
    """Redis's id for one server process: it changes whenever the server restarts."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        assert client.ping() is True
        run_id: str = client.info("server")["run_id"]
        return run_id
    finally:
        client.close()


def test_the_embedded_redis_answers_ping_and_a_second_call_finds_the_same_server() -> None:
    first = embedded.redis_url()
    second = embedded.redis_url()

    assert first == second
    assert server_run_id(first) == server_run_id(second)


def test_another_process_finds_the_same_redis_rather_than_starting_its_own() -> None:
    # What web, worker and beat do when they start side by side.
    child = subprocess.run(
        [sys.executable, "-c", "from config import embedded; print(embedded.redis_url())"],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    url = child.stdout.strip()
    assert url == embedded.redis_url()
    assert server_run_id(url) == server_run_id(embedded.redis_url())


def test_the_project_uses_the_embedded_redis_when_redis_url_is_unset() -> None:
    if os.environ.get("REDIS_URL"):
        pytest.skip("REDIS_URL is set: this run uses an external Redis")
    assert settings.REDIS_URL == embedded.redis_url()
    assert settings.CELERY_BROKER_URL.startswith("redis+socket://")


@pytest.mark.django_db
def test_the_test_database_is_a_real_postgresql_14_or_newer() -> None:
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT version(), current_setting('server_version_num')::int, current_database()")
        version, version_num, database = cursor.fetchone()
    assert version.startswith("PostgreSQL ")
    assert version_num >= 140000
    assert database == connection.settings_dict["NAME"]
    assert database.startswith("test_")  # pytest-django's database, never the demo's


class _RecordingServer:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def psql(self, statement: str) -> str:
        self.statements.append(statement)
        return ""


def test_the_tuning_is_applied_once_and_again_when_it_changes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CRM_LOCAL_DIR", str(tmp_path))
    server = _RecordingServer()
    assert embedded._tune(server) is True  # a new data directory: applied, restart
    assert "ALTER SYSTEM SET max_wal_size = '8GB';" in server.statements
    applied = len(server.statements)
    assert embedded._tune(server) is False  # nothing changed: nothing done
    assert len(server.statements) == applied
    monkeypatch.setitem(embedded.TUNING, "work_mem", "32MB")  # a setting changed in a release
    assert embedded._tune(server) is True
    assert server.statements[-len(embedded.TUNING) :].count("ALTER SYSTEM SET work_mem = '32MB';") == 1
    (tmp_path / "pg-tuned").write_text("")  # a marker from before the settings were recorded
    assert embedded._tune(server) is True
