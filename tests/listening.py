"""Hear what a sync action sends to a real-time group, through the real channel layer.

With the pub/sub layer a group's members and their subscription live in the layer
of one event loop: a channel created, added to a group and read in different loops
hears nothing (``group_add`` refuses a channel of another loop). So one async
function subscribes, runs the action on the test's own thread (its database
connection and transaction) through ``sync_to_async``, and reads, all in one loop.
Works the same with the core layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer

# A guard against a hang, not a timing assertion.
FRAME_TIMEOUT = 5.0


def hear(
    groups: str | list[str], action: Callable[[], Any], *, frames: int = 1, timeout: float = FRAME_TIMEOUT
) -> tuple[Any, list[dict[str, Any]]]:
    """Subscribe one channel to ``groups``, run ``action``, then read up to ``frames``
    messages (fewer when nothing more arrives within ``timeout``). Returns what the
    action returned and the messages heard, in order."""
    names = [groups] if isinstance(groups, str) else list(groups)

    async def scenario() -> tuple[Any, list[dict[str, Any]]]:
        layer: Any = get_channel_layer()
        channel = await layer.new_channel()
        for name in names:
            await layer.group_add(name, channel)
        heard: list[dict[str, Any]] = []
        try:
            result = await sync_to_async(action)()
            for _ in range(frames):
                try:
                    heard.append(await asyncio.wait_for(layer.receive(channel), timeout=timeout))
                except TimeoutError:
                    break
        finally:
            for name in names:
                await layer.group_discard(name, channel)
        return result, heard

    return async_to_sync(scenario)()
