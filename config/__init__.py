from __future__ import annotations

import sys
import types

# The CEL package imports its interactive command line (prompt_toolkit, rich, typer,
# pygments) from its __init__: 24 MB resident in every process that evaluates a
# condition, each web process and each worker pool process, for a tool the product
# never runs. An empty module stands in for it; ``python -m cel`` in a shell is unaffected.
sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))

from config.celery import app as celery_app  # noqa: E402  (after the stand-in above)

__all__ = ["celery_app"]
