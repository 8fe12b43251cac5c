"""The demo's phone system: manage.py simulate_calls sends calls through the
telephony API of a real uvicorn, and hangs up as a switch would."""

from __future__ import annotations

import subprocess

import pytest
from django.core.management import call_command

from agents.models import Call, CallState
from tests.conftest import make_customer
from tests.integration.conftest import BIN, COMMITTED, PROJECT_ROOT, Server, subprocess_env

pytestmark = [pytest.mark.integration, COMMITTED]


def test_simulated_calls_arrive_through_the_api_and_callers_who_wait_too_long_hang_up(
    uvicorn_server: Server,
) -> None:
    make_customer()
    call_command("seed_floor", stdout=None)
    result = subprocess.run(
        [str(BIN / "python"), "manage.py", "simulate_calls", "--url", uvicorn_server.origin, "--calls", "3",
         "--per-minute", "600", "--patience", "1", "1", "--unknown-share", "0.5", "--seed", "7"],
        cwd=PROJECT_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    calls = list(Call.objects.filter(source_system__code="pbx"))
    assert len(calls) == 3
    # Nobody was available: every caller gave up in the queue, and the switch said so.
    assert {(c.state, c.end_reason) for c in calls} == {(CallState.ENDED, "abandoned")}
    assert "3 calls" in result.stdout
