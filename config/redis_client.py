"""This process's Redis client for the product's own keys and announcements
(Celery and the Channels layer keep their own connections)."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings

_client: tuple[int, Any] | None = None


def redis_client() -> Any:
    """The client of this process, made on first use (a forked process gets its
    own: a socket shared across a fork mixes two processes' replies). Its pool is
    thread-safe; a command waits at most 2 s for a Redis that went away."""
    global _client  # noqa: PLW0603
    import redis  # noqa: PLC0415  (only the processes that use it pay the import)

    if _client is None or _client[0] != os.getpid():
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        _client = (os.getpid(), client)
    return _client[1]
