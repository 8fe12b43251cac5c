"""A missing browser fails CI and only skips on a developer's machine.

Each case collects the browser tests in a subprocess with the browser's path
pointed at nothing; collection alone decides, so no database is touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def collect_browser_tests(*, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CRM_CHROMIUM": "/nonexistent/chromium"}
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/e2e"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_in_ci_a_missing_chromium_stops_the_run_and_says_why() -> None:
    result = collect_browser_tests(ci="true")
    assert result.returncode != 0
    assert (
        "CI needs the real-browser tests, but /nonexistent/chromium is missing"
        in result.stdout + result.stderr
    )


def test_on_a_developers_machine_a_missing_chromium_lets_the_browser_tests_collect_to_skip() -> None:
    result = collect_browser_tests(ci=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tests/e2e/test_agent_pages.py::" in result.stdout


def test_the_chromium_installer_fails_in_ci_and_only_warns_elsewhere(tmp_path: Path) -> None:
    # Run as if the browser were absent and apt-get could not be found.
    script = (PROJECT_ROOT / "scripts" / "install-chromium.sh").read_text()
    script = script.replace("CHROMIUM=/usr/bin/chromium", "CHROMIUM=/nonexistent/chromium")
    copy = tmp_path / "install-chromium.sh"
    copy.write_text(script)
    env = {"PATH": "/nonexistent", "HOME": str(tmp_path)}
    in_ci = subprocess.run(["/bin/bash", str(copy)], env={**env, "CI": "true"}, capture_output=True,
                           text=True, check=False)  # fmt: skip
    elsewhere = subprocess.run(["/bin/bash", str(copy)], env=env, capture_output=True, text=True, check=False)
    assert in_ci.returncode == 1, in_ci.stderr
    assert "CI needs the e2e browser tests" in in_ci.stderr
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "will be skipped" in elsewhere.stderr
