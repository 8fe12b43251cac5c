"""The agent desktop's WebSocket, through the real channels-redis layer.

First in process (``config.asgi.application`` driven by Channels' test
communicator, with session cookies and an Origin header, so the auth and
origin middleware run too), then end to end through a real uvicorn process: a
change committed here reaches a socket served by another process through Redis.

pytest-asyncio is not installed: each scenario is one async function run with
``async_to_sync``, and the services it calls run through ``sync_to_async`` on
the test's own thread, inside its (committed, transactional) database context.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import websockets
from asgiref.sync import async_to_sync, sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.test import Client
from websockets.sync.client import connect as ws_connect

from config.asgi import application
from crm import services
from crm.backends import forget_catalog
from crm.models import AccessLogEntry, Customer, User
from tests.integration.conftest import COMMITTED, Server

pytestmark = [pytest.mark.integration, COMMITTED]

T = TypeVar("T")
ALLOWED_ORIGIN = "http://localhost"  # localhost is in the tests' ALLOWED_HOSTS
FRAME_TIMEOUT = 5.0


class Rollback(Exception):
    pass


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run one async scenario in a fresh event loop, from this sync test."""

    async def warmed_up() -> T:
        # Each event loop gets its own Redis pool. Python 3.11's asyncio.wait_for
        # can swallow a cancellation that lands while redis-py is still
        # handshaking a new connection: a consumer refused within a millisecond
        # of starting then lingers until the 5 s BZPOPMIN timeout. One command
        # first leaves a connected connection in the pool for the consumer.
        await get_channel_layer().group_discard("warm-up", "warm-up")
        return await scenario()

    return async_to_sync(warmed_up)()


def session_cookie(user: User) -> str:
    """A real session for ``user`` in the database, as its browser would carry it."""
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


class DesktopSocket(ApplicationCommunicator):
    """A browser's socket to ``/ws/desktop/``, in process.

    Channels' own WebsocketCommunicator would do, but ``channels.testing``
    imports daphne, which this project does not install (uvicorn serves it)."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        scope = {"type": "websocket", "path": "/ws/desktop/", "query_string": b"", "headers": headers,
                 "subprotocols": [], "client": ("127.0.0.1", 50000), "server": ("localhost", 80)}  # fmt: skip
        super().__init__(application, scope)

    async def open(self) -> tuple[bool, int | None]:
        """(True, None) when accepted, else (False, the close code)."""
        await self.send_input({"type": "websocket.connect"})
        reply = await self.receive_output(FRAME_TIMEOUT)
        if reply["type"] == "websocket.close":
            return False, reply.get("code", 1000)
        assert reply["type"] == "websocket.accept", reply
        # The desk's first frame is its presence snapshot; frames after it tell changes.
        self.presence = await self.receive_json()
        assert self.presence["event"] == "presence", self.presence
        return True, None

    async def send_json(self, data: dict[str, Any]) -> None:
        await self.send_input({"type": "websocket.receive", "text": json.dumps(data)})

    async def receive_json(self) -> dict[str, Any]:
        reply = await self.receive_output(FRAME_TIMEOUT)
        assert reply["type"] == "websocket.send", reply
        frame: dict[str, Any] = json.loads(reply["text"])
        return frame

    async def close(self) -> None:
        # What the server sends when the browser goes away; the consumer then
        # leaves its groups and the application returns.
        await self.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.wait(FRAME_TIMEOUT)


def desktop_socket(*, user: User | None = None, origin: str = ALLOWED_ORIGIN) -> DesktopSocket:
    headers = [(b"origin", origin.encode()), (b"host", b"localhost")]
    if user is not None:
        headers.append((b"cookie", session_cookie(user).encode()))
    return DesktopSocket(headers)


async def watch(socket: DesktopSocket, customer_id: int) -> dict[str, Any]:
    await socket.send_json({"action": "watch", "customer_id": customer_id})
    return await socket.receive_json()


update_customer = sync_to_async(services.customer_update)


def test_the_channel_layer_is_redis() -> None:
    # Everything below would pass on an in-memory layer too; only Redis reaches
    # other processes.
    assert isinstance(get_channel_layer(), (RedisChannelLayer, RedisPubSubChannelLayer))


def test_a_watched_customer_update_reaches_the_agent_socket(alice: User, dave_customer: Customer) -> None:
    socket = desktop_socket(user=alice)

    async def scenario() -> dict[str, Any]:
        connected, _ = await socket.open()
        assert connected
        try:
            assert await watch(socket, dave_customer.pk) == {
                "event": "watching",
                "customer_id": dave_customer.pk,
            }
            await update_customer(customer_id=dave_customer.pk, expected_version=1, changes={"tier": "gold"})
            frame: dict[str, Any] = await socket.receive_json()
            return frame
        finally:
            await socket.close()

    assert run(scenario) == {
        "event": "customer.updated",
        "customer_id": dave_customer.pk,
        "version": 2,
        "fields": ["tier"],
    }


def test_only_committed_changes_to_the_watched_customer_reach_the_socket(
    alice: User, dave_customer: Customer, erin_customer: Customer
) -> None:
    socket = desktop_socket(user=alice)

    def roll_back_an_update() -> None:
        with pytest.raises(Rollback), transaction.atomic():
            services.customer_update(
                customer_id=dave_customer.pk, expected_version=1, changes={"tier": "platinum"}
            )
            raise Rollback

    async def scenario() -> dict[str, Any]:
        connected, _ = await socket.open()
        assert connected
        try:
            await watch(socket, dave_customer.pk)
            await sync_to_async(roll_back_an_update)()
            await update_customer(customer_id=erin_customer.pk, expected_version=1, changes={"tier": "gold"})
            # Messages to one channel arrive in order, so had either of the two
            # above been delivered, it would be the next frame instead of this one.
            await update_customer(
                customer_id=dave_customer.pk, expected_version=1, changes={"do_not_call": True}
            )
            frame: dict[str, Any] = await socket.receive_json()
            return frame
        finally:
            await socket.close()

    frame = run(scenario)
    assert (frame["customer_id"], frame["version"], frame["fields"]) == (dave_customer.pk, 2, ["do_not_call"])


def test_a_self_service_customer_is_refused_with_4403(dave: User) -> None:
    socket = desktop_socket(user=dave)

    async def scenario() -> tuple[bool, int | None]:
        try:
            return await socket.open()
        finally:
            await socket.close()

    assert run(scenario) == (False, 4403)


def test_an_anonymous_connection_is_refused_with_4403() -> None:
    socket = desktop_socket()

    async def scenario() -> tuple[bool, int | None]:
        try:
            return await socket.open()
        finally:
            await socket.close()

    assert run(scenario) == (False, 4403)


def test_a_socket_opened_from_a_foreign_origin_is_refused(alice: User) -> None:
    socket = desktop_socket(user=alice, origin="https://evil.example")

    async def scenario() -> tuple[bool, int | None]:
        try:
            return await socket.open()
        finally:
            await socket.close()

    connected, _ = run(scenario)
    assert connected is False


def test_watching_a_customer_that_does_not_exist_gives_an_error_frame(
    alice: User, dave_customer: Customer
) -> None:
    missing_id = (Customer.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1000
    socket = desktop_socket(user=alice)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        connected, _ = await socket.open()
        assert connected
        try:
            error = await watch(socket, missing_id)
            # The socket stays usable after the mistake.
            return error, await watch(socket, dave_customer.pk)
        finally:
            await socket.close()

    error, watching = run(scenario)
    assert error == {"error": f"No customer with id {missing_id}."}
    assert watching == {"event": "watching", "customer_id": dave_customer.pk}


def test_watching_a_customer_is_written_to_the_access_log_like_a_page_read(
    alice: User, dave_customer: Customer
) -> None:
    socket = desktop_socket(user=alice)

    async def scenario() -> dict[str, Any]:
        connected, _ = await socket.open()
        assert connected
        try:
            return await watch(socket, dave_customer.pk)
        finally:
            await socket.close()

    assert run(scenario) == {"event": "watching", "customer_id": dave_customer.pk}
    rows = list(
        AccessLogEntry.objects.filter(customer_id=dave_customer.pk).values("user_id", "channel", "path")
    )
    assert rows == [{"user_id": alice.pk, "channel": "page", "path": "/ws/desktop/"}]


def test_a_staff_member_who_may_not_see_customers_cannot_watch_one(
    alice: User, dave_customer: Customer
) -> None:
    # The agent role without the right to read customers: connected, but no watch.
    Group.objects.get(name="agent").permissions.remove(
        Permission.objects.get(content_type__app_label="crm", codename="view_customer")
    )
    forget_catalog()
    socket = desktop_socket(user=alice)

    async def scenario() -> dict[str, Any]:
        connected, _ = await socket.open()
        assert connected
        try:
            return await watch(socket, dave_customer.pk)
        finally:
            await socket.close()

    # Answered like a missing customer, so the socket tells nothing about which ids exist.
    assert run(scenario) == {"error": f"No customer with id {dave_customer.pk}."}
    assert not AccessLogEntry.objects.filter(customer_id=dave_customer.pk).exists()


# --- End to end through uvicorn ---------------------------------------------------------------


def test_through_uvicorn_an_update_committed_here_reaches_the_agent_in_the_server_process(
    uvicorn_server: Server, alice: User, dave_customer: Customer
) -> None:
    with ws_connect(
        f"{uvicorn_server.ws_url}/ws/desktop/",
        origin=websockets.Origin(uvicorn_server.origin),
        additional_headers={"Cookie": session_cookie(alice)},
        open_timeout=FRAME_TIMEOUT,
    ) as socket:
        assert json.loads(socket.recv(timeout=FRAME_TIMEOUT))["event"] == "presence"
        socket.send(json.dumps({"action": "watch", "customer_id": dave_customer.pk}))
        assert json.loads(socket.recv(timeout=FRAME_TIMEOUT)) == {
            "event": "watching",
            "customer_id": dave_customer.pk,
        }

        services.customer_update(customer_id=dave_customer.pk, expected_version=1, changes={"tier": "gold"})

        frame = json.loads(socket.recv(timeout=FRAME_TIMEOUT))
    assert frame == {"event": "customer.updated", "customer_id": dave_customer.pk, "version": 2,
                     "fields": ["tier"]}  # fmt: skip


@pytest.mark.parametrize("origin", ["https://evil.example", None])
def test_uvicorn_refuses_the_handshake_from_a_foreign_or_missing_origin(
    uvicorn_server: Server, alice: User, origin: str | None
) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        ws_connect(
            f"{uvicorn_server.ws_url}/ws/desktop/",
            origin=websockets.Origin(origin) if origin else None,
            additional_headers={"Cookie": session_cookie(alice)},
            open_timeout=FRAME_TIMEOUT,
        )
    assert refused.value.response.status_code == 403


def test_uvicorn_refuses_a_self_service_customer(uvicorn_server: Server, dave: User) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        ws_connect(
            f"{uvicorn_server.ws_url}/ws/desktop/",
            origin=websockets.Origin(uvicorn_server.origin),
            additional_headers={"Cookie": session_cookie(dave)},
            open_timeout=FRAME_TIMEOUT,
        )
    assert refused.value.response.status_code == 403
