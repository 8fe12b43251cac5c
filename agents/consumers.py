"""The agent desktop's WebSocket.

A staff member connects once; the page then says which customer it shows
(``{"action": "watch", "customer_id": N}``) and receives every change to that
record as it commits. Each agent also has a personal group for work addressed to
them (offers and tasks, in later parts of the desktop).
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from crm import realtime
from crm.models import Customer


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

    async def disconnect(self, code: int) -> None:
        if getattr(self, "personal", None):
            await self.channel_layer.group_discard(self.personal, self.channel_name)
        if self.watching:
            await self.channel_layer.group_discard(self.watching, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or content.get("action") != "watch":
            await self.send_json({"error": 'Send {"action": "watch", "customer_id": <id>}.'})
            return
        customer_id = content.get("customer_id")
        # bool is an int in Python; {"customer_id": true} must not mean customer 1.
        valid_id = isinstance(customer_id, int) and not isinstance(customer_id, bool)
        if not valid_id or not isinstance(customer_id, int) or not await _customer_exists(customer_id):
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
def _is_staff(user: Any) -> bool:
    return bool(user.is_staff_member)


@database_sync_to_async
def _customer_exists(customer_id: int) -> bool:
    return Customer.objects.filter(pk=customer_id).exists()
