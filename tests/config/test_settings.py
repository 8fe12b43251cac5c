"""Start-up refuses bad configuration, and production settings pass the deploy checks.

Each case runs ``manage.py check`` in a subprocess, because settings are read
once per process: the environment is this test run's (so CRM_LOCAL_DIR and the
embedded servers are shared) with only the variable under test changed.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# What tests/environment.py relaxes for the test client (plain HTTP); a
# production deployment sets none of them.
TEST_ONLY_OVERRIDES = (
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
)


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def environment(**changes: str | None) -> dict[str, str]:
    """This process's environment with ``changes`` applied (None removes a variable)."""
    env = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def test_the_test_environment_itself_passes_the_checks() -> None:
    # The baseline every case below changes one variable of.
    result = manage("check", env=environment())
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variable", "changes"),
    [
        ("DEBUG", {"DEBUG": "maybe"}),
        ("DATABASE_CONN_MAX_AGE", {"DATABASE_CONN_MAX_AGE": "abc"}),
        ("DATABASE_URL", {"DATABASE_URL": "mysql://u:p@h/db"}),
        ("REDIS_URL", {"REDIS_URL": "http://x"}),
        ("SECRET_KEY", {"SECRET_KEY": None, "DEBUG": "false"}),
        ("LOG_LEVEL", {"LOG_LEVEL": "LOUD"}),
    ],
    ids=["debug-maybe", "conn-max-age-abc", "mysql-url", "http-redis-url", "no-secret-key", "log-level-loud"],
)
def test_a_bad_value_stops_start_up_with_a_message_naming_the_variable(
    variable: str, changes: dict[str, str | None]
) -> None:
    result = manage("check", env=environment(**changes))

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("Configuration error: "), result.stderr
    assert variable in result.stderr
    assert "Traceback" not in result.stderr  # a message for a person, not a stack


@pytest.mark.parametrize("variable", ["DATABASE_URL", "REDIS_URL"])
def test_with_debug_off_a_missing_server_url_stops_start_up_instead_of_starting_an_embedded_server(
    variable: str,
) -> None:
    given = {
        "DATABASE_URL": "postgresql://crm@db.internal:5432/crm",
        "REDIS_URL": "redis://cache.internal:6379/0",
    }
    given[variable] = None  # type: ignore[assignment]
    result = manage("check", env=environment(DEBUG="false", CRM_EMBEDDED_SERVERS=None, **given))

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"Configuration error: {variable} is not set and DEBUG is off"), (
        result.stderr
    )
    assert "CRM_EMBEDDED_SERVERS=true" in result.stderr


def production_environment() -> dict[str, str]:
    env = environment(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),  # 67 characters, as check --deploy wants (50+, varied)
        ALLOWED_HOSTS="crm.example.com",
    )
    for name in TEST_ONLY_OVERRIDES:
        env.pop(name, None)
    return env


def test_production_settings_raise_no_security_warning() -> None:
    result = manage("check", "--deploy", "--tag", "security", "--fail-level", "WARNING",
                    env=production_environment())  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNINGS" not in result.stdout + result.stderr


def test_production_settings_pass_every_deploy_check_without_a_warning() -> None:
    # Every registered check, not only security: drf-spectacular, for one,
    # reports an API schema it cannot generate cleanly as a deploy warning.
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_environment())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
