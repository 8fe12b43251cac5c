"""The self-service page's offers socket, through a real uvicorn and the real
channels-redis layer: an event posted to the API becomes an offer frame on the
customer's own socket; a socket that reconnects with the last number it saw
gets every missed offer once, in order; strangers are refused."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
import websockets
from django.utils import timezone
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from crm import services
from crm.models import Customer, SourceSystem, User
from policies import engine
from policies import services as policy_services
from policies.models import OfferPresentation
from tests.conftest import make_customer
from tests.integration.conftest import COMMITTED, Server
from tests.integration.test_realtime import session_cookie

pytestmark = [pytest.mark.integration, COMMITTED]
FRAME_TIMEOUT = 5.0


@pytest.fixture
def mortgage_on_the_web(bob: User) -> None:
    policy_services.offer_save(
        code="home-mortgage", name="Home mortgage", channels=["self_service", "agent_screen"],
        status="active", talking_points="Say the agent's lines.", self_service_text="Moving? Lock a rate.",
        max_presentations=50, period_days=1, cooling_off_days=0,
    )  # fmt: skip
    policy_services.policy_save(
        actor=bob, name="Moved: mortgage on the web", status="active",
        trigger_types=["customer.address_changed"],
        actions=[{"action": "present_offer",
                  "settings": {"offer": "home-mortgage", "channels": ["self_service"]}}],
    )  # fmt: skip
    engine.index_invalidate()


@pytest.fixture
def customer_login(mortgage_on_the_web: None) -> User:
    customer = make_customer(marketing_opt_in=True)
    return services.customer_login_create(customer=customer, username="dora", password="a-long-password-1")


def offers_socket(
    server: Server, user: User | None, *, after: int | None = None, origin: str = ""
) -> ClientConnection:
    query = f"?after={after}" if after is not None else ""
    return ws_connect(
        f"{server.ws_url}/ws/me/offers/{query}",
        origin=websockets.Origin(origin or server.origin),
        additional_headers={"Cookie": session_cookie(user)} if user else {},
        open_timeout=FRAME_TIMEOUT,
    )


def frame(socket: ClientConnection) -> dict[str, Any]:
    return json.loads(socket.recv(timeout=FRAME_TIMEOUT))  # type: ignore[no-any-return]


def post_event(server: Server, token: str, customer: Customer, key: str) -> int:
    body = json.dumps({"type": "customer.address_changed", "customer": customer.pk, "idempotency_key": key,
                       "occurred_at": timezone.now().isoformat(), "payload": {"city": "Denver"}})  # fmt: skip
    request = urllib.request.Request(  # noqa: S310  (the test's own http:// server)
        f"{server.origin}/api/v1/events", data=body.encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=FRAME_TIMEOUT) as response:  # noqa: S310
        return int(response.status)


def record_move(customer: Customer, key: str) -> None:
    """An address change told to the call center, decided in this process on commit.
    The customer first accepts the offer still waiting (the contact rules present
    an offer only once at a time on a channel)."""
    for waiting in OfferPresentation.objects.filter(customer=customer, status="presented"):
        policy_services.offer_respond(presentation_id=waiting.pk, accepted=True, actor=customer.login)
    services.business_event_record(
        type="customer.address_changed", occurred_at=timezone.now(), payload={"city": "Austin"},
        source=services.crm_source(), idempotency_key=key, customer=customer,
    )  # fmt: skip


def test_an_event_posted_to_the_api_becomes_an_offer_frame_on_the_customers_socket(
    uvicorn_server: Server, customer_login: User, ivr: SourceSystem
) -> None:
    _, token = services.api_token_create(user=User.objects.get(source_system=ivr), name="test")
    customer = customer_login.customer
    assert customer is not None
    with offers_socket(uvicorn_server, customer_login) as socket:
        snapshot = frame(socket)
        assert snapshot == {"event": "offers", "last_sequence": 0, "reload": False, "offers": []}
        assert post_event(uvicorn_server, token, customer, "move-1") == 201
        offer = frame(socket)
    assert offer["event"] == "offer.presented" and offer["sequence"] == 1
    assert offer["channel"] == "self_service"
    # What the customer reads, never the agent's lines nor the value.
    assert offer["offer"] == {"code": "home-mortgage", "name": "Home mortgage",
                              "self_service_text": "Moving? Lock a rate."}  # fmt: skip


def test_a_socket_that_reconnects_gets_every_missed_offer_once_in_order(
    uvicorn_server: Server, customer_login: User, settings: Any
) -> None:
    # Five offers in a day: more than a customer gets on one channel in production.
    settings.POLICIES_CHANNEL_DAILY_LIMITS = {**settings.POLICIES_CHANNEL_DAILY_LIMITS, "self_service": 10}
    customer = customer_login.customer
    assert customer is not None
    with offers_socket(uvicorn_server, customer_login) as socket:
        frame(socket)
        record_move(customer, "move-a")
        last_seen = frame(socket)["sequence"]
    # Offline: three more offers are recorded (each answered or not).
    for key in ["move-b", "move-c", "move-d"]:
        record_move(customer, key)
    with offers_socket(uvicorn_server, customer_login, after=last_seen) as socket:
        caught_up = frame(socket)
        record_move(customer, "move-e")
        answered, live = frame(socket), frame(socket)
    assert caught_up["event"] == "offers" and caught_up["reload"] is False
    assert [o["sequence"] for o in caught_up["offers"]] == [last_seen + 1, last_seen + 2, last_seen + 3]
    assert caught_up["last_sequence"] == last_seen + 3
    assert "talking_points" not in caught_up["offers"][0]["offer"]
    assert answered["event"] == "offer.responded" and answered["sequence"] == last_seen + 3
    assert answered["status"] == "accepted"
    assert live["event"] == "offer.presented" and live["sequence"] == last_seen + 4  # the next one, once


def test_a_number_the_server_never_gave_asks_the_page_to_reload(
    uvicorn_server: Server, customer_login: User
) -> None:
    customer = customer_login.customer
    assert customer is not None
    record_move(customer, "move-1")
    with offers_socket(uvicorn_server, customer_login, after=500) as socket:
        snapshot = frame(socket)
    assert snapshot["reload"] is True and [o["sequence"] for o in snapshot["offers"]] == [1]


def test_strangers_are_refused(uvicorn_server: Server, customer_login: User, alice: User) -> None:
    # Anonymous; a staff member (they watch customers on the desk socket); a foreign page.
    for user, origin in [(None, ""), (alice, ""), (customer_login, "https://evil.example")]:
        with pytest.raises(websockets.InvalidStatus) as refused:
            offers_socket(uvicorn_server, user, origin=origin)
        assert refused.value.response.status_code == 403


def test_one_customer_never_hears_of_anothers_offers(uvicorn_server: Server, customer_login: User) -> None:
    other = make_customer(given_name="Otto", phones=[], emails=[], marketing_opt_in=True)
    customer = customer_login.customer
    assert customer is not None
    with offers_socket(uvicorn_server, customer_login) as socket:
        frame(socket)
        record_move(other, "other-move")
        record_move(customer, "own-move")
        first = frame(socket)
    assert first["event"] == "offer.presented" and first["sequence"] == 1
    assert first["presentation_id"] not in {p.pk for p in other.offer_presentations.all()}


def test_a_number_that_is_not_one_is_explained(uvicorn_server: Server, customer_login: User) -> None:
    with ws_connect(
        f"{uvicorn_server.ws_url}/ws/me/offers/?after=yesterday",
        origin=websockets.Origin(uvicorn_server.origin),
        additional_headers={"Cookie": session_cookie(customer_login)},
        open_timeout=FRAME_TIMEOUT,
    ) as socket:
        assert "after must be a whole number" in frame(socket)["error"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            socket.recv(timeout=FRAME_TIMEOUT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
