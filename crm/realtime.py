"""Real-time delivery: the one place that knows group names and message shapes.

Services call ``send_on_commit``: the message leaves only if the transaction
that changed the data commits, so a screen never shows a change that was rolled
back. Consumers subscribe to the same group names through the helpers here.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


def customer_group(customer_id: int) -> str:
    """Everyone looking at this customer: agent screens and the customer's own session."""
    return f"customer.{customer_id}"


def agent_group(user_id: int) -> str:
    return f"agent.{user_id}"


def customer_updated(customer_id: int, version: int, fields: list[str]) -> dict[str, Any]:
    return {"type": "crm.event", "event": "customer.updated", "customer_id": customer_id,
            "version": version, "fields": fields}  # fmt: skip


def interaction_recorded(customer_id: int, interaction_id: int) -> dict[str, Any]:
    return {"type": "crm.event", "event": "interaction.recorded", "customer_id": customer_id,
            "interaction_id": interaction_id}  # fmt: skip


def send_now(group: str, message: dict[str, Any]) -> None:
    send_many_now([(group, message)])


async def _listened(layer: Any, groups: set[str]) -> set[str]:
    """Which of ``groups`` have a member now, asked of Redis in one pipelined trip
    per server: nearly every customer a worker applies results to is on no
    screen, and a send to an empty group still costs a round trip or two (the
    pub/sub layer's sends to one server also wait for each other). Another layer
    (in memory, in a test): every group is listened to."""
    if hasattr(layer, "_group_key") and hasattr(layer, "consistent_hash") and hasattr(layer, "group_expiry"):
        return await _listened_core(layer, groups)
    if hasattr(layer, "_layers") and hasattr(layer, "_get_layer"):
        return await _listened_pubsub(layer._get_layer(), groups)
    return groups


async def _listened_core(layer: Any, groups: set[str]) -> set[str]:
    """The core layer keeps each group's members in a sorted set scored by when
    they joined (members older than its ``group_expiry`` no longer count)."""
    by_server: dict[int, list[str]] = {}
    for group in groups:
        by_server.setdefault(layer.consistent_hash(group), []).append(group)
    # group_send drops members scored at or before this moment: those after it count.
    since = f"({int(time.time()) - int(layer.group_expiry)}"
    found: set[str] = set()
    for index, names in by_server.items():
        pipe = layer.connection(index).pipeline(transaction=False)
        for name in names:
            pipe.zcount(layer._group_key(name), since, "+inf")
        counts = await pipe.execute()
        found.update(name for name, count in zip(names, counts, strict=True) if count)
    return found


async def _listened_pubsub(loop_layer: Any, groups: set[str]) -> set[str]:
    """The pub/sub layer subscribes each process's connection to a channel per
    group: Redis counts a group's subscribers (PUBSUB NUMSUB), whichever process
    holds them."""
    by_shard: dict[int, list[str]] = {}
    for group in groups:
        channel = loop_layer._get_group_channel_name(group)
        by_shard.setdefault(id(loop_layer._get_shard(channel)), []).append(group)
    shards = {id(shard): shard for shard in loop_layer._shards}
    found: set[str] = set()
    for key, names in by_shard.items():
        shard = shards[key]
        shard._ensure_redis()
        counts = await shard._redis.pubsub_numsub(*(loop_layer._get_group_channel_name(n) for n in names))
        found.update(name for name, (_, count) in zip(names, counts, strict=True) if count)
    return found


def send_many_now(messages: list[tuple[str, dict[str, Any]]]) -> None:
    """Send several messages in one trip into the event loop (a worker applying
    hundreds of results at once would otherwise pay the loop's start-up on each),
    only to the groups someone listens to (asked once for all of them); in a web
    process, with the pub/sub layer, in one pipeline per Redis server instead.

    Inside a web request the messages are handed to the server's own event loop
    and the request goes on without waiting for Redis (a round trip or two per
    group, paid in the request's thread and its response time). One sender per loop
    sends each group's messages in the order they were handed over, so an agent
    never sees a call end before it rang. Elsewhere (Celery, commands, tests) they are sent before
    returning."""
    layer = get_channel_layer()
    if layer is None or not messages:
        return
    loop = _server_loop()
    if loop is not None:
        try:
            loop.call_soon_threadsafe(_hand_over, loop, list(messages))
            return
        except RuntimeError:  # the loop closed meanwhile: send them here
            pass

    async def send_all() -> None:
        await _send_all(layer, messages)

    try:
        async_to_sync(send_all)()
    except Exception:
        logger.exception("could not deliver %s messages", len(messages))


# A lot of more groups than this (a worker's batch: hundreds of customers, few of them on
# a screen) first asks the pub/sub layer who listens, one name each, rather than publishing
# hundreds of messages nobody receives; a smaller lot (a request's) publishes at once.
ASK_WHO_LISTENS_OVER = 8


async def _send_all(
    layer: Any, messages: list[tuple[str, dict[str, Any]]], *, pipelined: bool = False
) -> None:
    """Each group's messages in order; the groups side by side, so that their
    round trips to Redis overlap instead of adding up (a web process under load
    gets its event loop back only now and then, and each round trip waits for it).
    ``pipelined`` (the web process's sender), with the pub/sub layer: one pipeline
    per Redis server (``_send_all_pubsub``)."""
    if pipelined and hasattr(layer, "_layers") and hasattr(layer, "_get_layer"):
        await _send_all_pubsub(layer._get_layer(), messages)
        return
    groups = {group for group, _ in messages}
    try:
        listened = await _listened(layer, groups)
    except Exception:
        logger.warning("could not read who listens to %s groups; sending to all", len(groups), exc_info=True)
        listened = groups
    by_group: dict[str, list[dict[str, Any]]] = {}
    for group, message in messages:
        if group in listened:
            by_group.setdefault(group, []).append(message)

    async def send_in_order(group: str, ordered: list[dict[str, Any]]) -> None:
        for message in ordered:
            try:
                await layer.group_send(group, message)
            except Exception:
                logger.exception("could not deliver %s to %s", message.get("event"), group)

    await asyncio.gather(*(send_in_order(group, ordered) for group, ordered in by_group.items()))


async def _send_all_pubsub(loop_layer: Any, messages: list[tuple[str, dict[str, Any]]]) -> None:
    """The pub/sub layer's group_send is a PUBLISH, one round trip each, and a server's
    publishes wait for each other (the layer locks its connection per send). Here all
    the messages for one server go out in one pipeline, in the order handed over, so
    a lot costs one round trip per server however many groups and messages it has:
    and no question first of who listens (a PUBLISH to no one costs what asking does),
    unless the lot is large (``ASK_WHO_LISTENS_OVER``)."""
    groups = {group for group, _ in messages}
    listened = groups
    if len(groups) > ASK_WHO_LISTENS_OVER:
        try:
            listened = await _listened_pubsub(loop_layer, groups)
        except Exception:
            logger.warning(
                "could not read who listens to %s groups; sending to all", len(groups), exc_info=True
            )
    by_shard: dict[int, tuple[Any, list[tuple[str, dict[str, Any]]]]] = {}
    for group, message in messages:
        if group in listened:
            channel = loop_layer._get_group_channel_name(group)
            shard = loop_layer._get_shard(channel)
            by_shard.setdefault(id(shard), (shard, []))[1].append((channel, message))
    serialize = loop_layer.channel_layer.serialize

    async def publish(shard: Any, items: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            async with shard._lock:  # as the layer's own publish: one sender on the connection at a time
                shard._ensure_redis()
                pipe = shard._redis.pipeline(transaction=False)
                for channel, message in items:
                    pipe.publish(channel, serialize(message))
                results = await pipe.execute(raise_on_error=False)
        except Exception:
            logger.exception("could not deliver %s messages", len(items))
            return
        for (channel, message), result in zip(items, results, strict=True):
            if isinstance(result, Exception):
                logger.error("could not deliver %s to %s: %s", message.get("event"), channel, result)

    await asyncio.gather(*(publish(shard, items) for shard, items in by_shard.values()))


def in_server_thread() -> bool:
    """Whether this thread runs a request's sync code for the ASGI server (a web
    process, as opposed to a worker, a command or a test)."""
    return _server_loop() is not None


def _server_loop() -> asyncio.AbstractEventLoop | None:
    """The ASGI server's running event loop when this thread runs a request's sync
    code for it (asgiref records it there), else None."""
    local = SyncToAsync.threadlocal
    if getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    loop: asyncio.AbstractEventLoop | None = getattr(local, "main_event_loop", None)
    if loop is None or loop.is_closed() or not loop.is_running():
        return None
    return loop


# Per event loop: the queue of message lists its one sender task sends in order.
_outboxes: dict[asyncio.AbstractEventLoop, tuple[asyncio.Queue[list[tuple[str, dict[str, Any]]]], Any]] = {}


def _hand_over(loop: asyncio.AbstractEventLoop, messages: list[tuple[str, dict[str, Any]]]) -> None:
    """In the loop: queue the messages, starting the loop's sender on first use."""
    outbox = _outboxes.get(loop)
    if outbox is None or outbox[1].done():
        queue: asyncio.Queue[list[tuple[str, dict[str, Any]]]] = asyncio.Queue()
        outbox = (queue, loop.create_task(_sender(queue)))  # the reference keeps the task alive
        _outboxes[loop] = outbox
    outbox[0].put_nowait(messages)


async def _sender(queue: asyncio.Queue[list[tuple[str, dict[str, Any]]]]) -> None:
    layer = get_channel_layer()
    while True:
        messages = list(await queue.get())
        # What queued up while the last lot went out leaves with the next, in order: one
        # look-up of who listens (a Redis round trip) per lot instead of one per request,
        # so a sender that falls behind under load catches up instead of staying behind.
        while not queue.empty():
            messages.extend(queue.get_nowait())
        await _send_all(layer, messages, pipelined=True)


# Inside ``batched()``: the messages of the transaction committing, in order.
_batch: contextvars.ContextVar[list[tuple[str, dict[str, Any]]] | None] = contextvars.ContextVar(
    "realtime_batch", default=None
)


def send_on_commit(group: str, message: dict[str, Any]) -> None:
    batch = _batch.get()
    if batch is None:
        transaction.on_commit(lambda: send_now(group, message))
    else:
        # Still one on_commit per message: a savepoint rolled back drops its own.
        transaction.on_commit(lambda: batch.append((group, message)))


@contextmanager
def batched() -> Iterator[None]:
    """Within a transaction: the messages its code sends on commit go out together,
    in one trip, after the commit (those of rolled-back savepoints never do)."""
    batch: list[tuple[str, dict[str, Any]]] = []
    token = _batch.set(batch)
    try:
        yield
    finally:
        _batch.reset(token)
    # Registered last, so it runs after every append above.
    transaction.on_commit(lambda: send_many_now(batch))


# --- Offers and notices raised by interaction policies ----------------------------------------
# Frames only tell: the rows (policies.OfferPresentation, with a sequence per customer)
# are the truth, and a screen that reconnects asks for every row after the last
# sequence it saw.


def offer_presented(
    *, customer_id: int, presentation_id: int, sequence: int, channel: str, offer: dict[str, Any],
    expires_at: str,
) -> dict[str, Any]:  # fmt: skip
    """``offer``: code, name, talking_points, self_service_text, value (a decimal string)."""
    return {"type": "crm.event", "event": "offer.presented", "customer_id": customer_id,
            "presentation_id": presentation_id, "sequence": sequence, "channel": channel,
            "offer": offer, "expires_at": expires_at}  # fmt: skip


def offer_responded(*, customer_id: int, presentation_id: int, sequence: int, status: str) -> dict[str, Any]:
    return {"type": "crm.event", "event": "offer.responded", "customer_id": customer_id,
            "presentation_id": presentation_id, "sequence": sequence, "status": status}  # fmt: skip


def agent_notice(
    *, customer_id: int, message: str, origin: str, task_id: int | None = None
) -> dict[str, Any]:
    return {"type": "crm.event", "event": "agent.notice", "customer_id": customer_id, "message": message,
            "origin": origin, "task_id": task_id}  # fmt: skip
