"""config/asgi.py: what a web process has loaded once it starts."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.conftest import PROJECT_ROOT


def test_a_web_process_imports_its_views_at_start_and_freezes_them_out_of_the_collector() -> None:
    """A full collection walked every object the process had loaded: tens of
    milliseconds landing on a request or a frame. Started, a web process has its
    views imported and all it loaded frozen; a process without config.asgi
    freezes nothing (the figure is not the interpreter's own)."""
    code = (
        "import gc, sys; before = gc.get_freeze_count(); import config.asgi; "
        "print(before, gc.get_freeze_count(), 'agents.views.customer' in sys.modules, gc.get_threshold()[0])"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env={**os.environ, "DEBUG": "true"},
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    before, after, views, first_generation = completed.stdout.split()
    assert int(before) == 0
    assert int(after) > 50_000
    assert views == "True"
    # Later garbage: collected in passes of 20,000 allocations, not the interpreter's 700.
    assert int(first_generation) == 20_000
