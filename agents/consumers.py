"""The agent desktop's WebSocket.

A staff member connects once; the page then says which customer it shows
(``{"action": "watch", "customer_id": N}``) and receives every change to that
record as it commits. Watching is reading: the customer must be one the staff
member may see, and each watch is written to the access log like a page read.
Each agent also has a personal group for work addressed to them (offers and
tasks, in later parts of the desktop).
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from agents import services as agents_services
from crm import realtime, selectors, services
from crm.models.choices import AccessChannel


class DesktopConsumer(AsyncJsonWebsocketConsumer):
    watching: str | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not await _is_staff(user):
            await self.close(code=4403)
            return
        self.personal = realtime.agent_group(user.pk)
        await self.channel_layer.group_add(self.personal, self.channel_name)
        await self.accept()
        # The snapshot first; frames after it only tell what changed since.
        await self.send_json({"event": "presence", **await _presence(user)})

    async def disconnect(self, code: int) -> None:
        if getattr(self, "personal", None):
            await self.channel_layer.group_discard(self.personal, self.channel_name)
        if self.watching:
            await self.channel_layer.group_discard(self.watching, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("action") == "heartbeat":
            await _heartbeat(self.scope["user"])
            return
        if not isinstance(content, dict) or content.get("action") != "watch":
            await self.send_json(
                {"error": 'Send {"action": "watch", "customer_id": <id>} or {"action": "heartbeat"}.'}
            )
            return
        customer_id = content.get("customer_id")
        # bool is an int in Python; {"customer_id": true} must not mean customer 1.
        valid_id = isinstance(customer_id, int) and not isinstance(customer_id, bool)
        # A customer this staff member may not see answers like a missing one:
        # the socket must not tell which ids exist.
        if (
            not valid_id
            or not isinstance(customer_id, int)
            or not await _watch_allowed(self.scope, customer_id)
        ):
            await self.send_json({"error": f"No customer with id {customer_id!r}."})
            return
        if self.watching:
            await self.channel_layer.group_discard(self.watching, self.channel_name)
        self.watching = realtime.customer_group(customer_id)
        await self.channel_layer.group_add(self.watching, self.channel_name)
        await self.send_json({"event": "watching", "customer_id": customer_id})

    async def crm_event(self, message: dict[str, Any]) -> None:
        await self.send_json({k: v for k, v in message.items() if k != "type"})


@database_sync_to_async
def _presence(user: Any) -> dict[str, Any]:
    return agents_services.presence_snapshot(user=user)


@database_sync_to_async
def _heartbeat(user: Any) -> None:
    agents_services.agent_heartbeat(user=user)


@database_sync_to_async
def _is_staff(user: Any) -> bool:
    return bool(user.is_staff_member)


@database_sync_to_async
def _watch_allowed(scope: dict[str, Any], customer_id: int) -> bool:
    """Whether this staff member may see the customer; if so, log the read."""
    user = scope["user"]
    if not selectors.customers_visible_to(user).filter(pk=customer_id).exists():
        return False
    services.access_log_record(
        user=user, customer_ids=[customer_id], channel=AccessChannel.PAGE, path=scope.get("path", "")
    )
    return True
