"""The self-service page's WebSocket: a signed-in customer's own live offers.

``/ws/me/offers/?after=<last sequence seen>``. Only a customer's own log-in may
connect (staff, integrations and anonymous visitors are refused with 4403; a
foreign Origin is refused before this by config.asgi). On connect the socket
sends one snapshot: the current offers, or, with ``after``, every presentation
since that number, in order, once (``reload`` when the number is too old or
unknown: start over from the current offers). Then it tells of each offer
presented or answered, never one the snapshot already held. Frames carry what a
customer may read (the self-service text), never the agent's talking points.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from crm import realtime
from policies import selectors
from policies.api import PresentationSerializer

FORBIDDEN = 4403
# Fields of an offer a customer may read (the agent's talking points and the value are not).
CUSTOMER_OFFER_FIELDS = ("code", "name", "self_service_text")


class MyOffersConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None
    last_sent = 0

    async def connect(self) -> None:
        user = self.scope.get("user")
        customer_id = getattr(user, "customer_id", None) if user is not None else None
        if (
            not getattr(user, "is_authenticated", False)
            or not getattr(user, "is_active", False)
            or not customer_id
        ):
            await self.close(code=FORBIDDEN)
            return
        after = _after(self.scope.get("query_string", b""))
        if after is False:
            await self.accept()
            await self.send_json({"error": "after must be a whole number: the last sequence this page saw."})
            await self.close(code=4400)
            return
        # Join before reading the snapshot: an offer committed in between arrives as a
        # frame, and the sequence check below drops it when the snapshot held it.
        self.group = realtime.customer_group(customer_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        snapshot = await _snapshot(customer_id, after if isinstance(after, int) else None)
        self.last_sent = snapshot["last_sequence"]
        await self.send_json(snapshot)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json(
            {"error": "This socket only tells; reconnect with ?after=<last sequence> to catch up."}
        )

    async def crm_event(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "offer.presented":
            sequence = int(message["sequence"])
            if sequence <= self.last_sent:
                return  # already in the snapshot
            self.last_sent = sequence
            offer = message.get("offer") or {}
            await self.send_json({
                "event": event, "sequence": sequence, "presentation_id": message["presentation_id"],
                "channel": message["channel"], "expires_at": message["expires_at"],
                "offer": {k: offer.get(k, "") for k in CUSTOMER_OFFER_FIELDS},
            })  # fmt: skip
        elif event == "offer.responded":
            await self.send_json({
                "event": event, "sequence": message["sequence"],
                "presentation_id": message["presentation_id"], "status": message["status"],
            })  # fmt: skip
        # Anything else said about the customer (profile changes, notes) is for staff screens.


def _after(query_string: bytes) -> int | bool | None:
    """The ``after`` of the query: None when absent, False when not a number."""
    values = parse_qs(query_string.decode("latin-1")).get("after")
    if not values:
        return None
    raw = values[-1]
    return int(raw) if raw.isdigit() and len(raw) < 10 else False


@database_sync_to_async
def _snapshot(customer_id: int, after: int | None) -> dict[str, Any]:
    found = selectors.customer_offers(customer_id=customer_id, after=after)
    return {
        "event": "offers",
        "last_sequence": found.last_sequence,
        "reload": found.reload,
        "offers": PresentationSerializer(found.presentations, many=True).data,
    }
