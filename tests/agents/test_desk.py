"""The desk's controls: presence, the call in hand and where a pop lands."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents import services
from agents.models import Agent, AgentState, Call, CallState, Queue
from crm.models import AccessLogEntry, Customer, SourceSystem, User
from tests.conftest import make_customer

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue() -> Queue:
    return Queue.objects.create(code="service", name="Customer service")


def desk(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ready(user: User, queue: Queue) -> Agent:
    services.agent_for(user=user).queues.set([queue])
    return services.agent_set_state(user=user, state="available")


def test_an_agent_goes_available_on_a_break_and_offline(alice: User, queue: Queue) -> None:
    client = desk(alice)
    response = client.post(reverse("desk-state"), {"state": "available"})
    assert response.status_code == 200
    assert response.json()["state"] == "available"
    on_break = client.post(reverse("desk-state"), {"state": "break", "reason": "lunch"}).json()
    assert (on_break["state"], on_break["reason"]) == ("break", "lunch")
    refused = client.post(reverse("desk-state"), {"state": "break", "reason": "nap"})
    assert refused.status_code == 400
    assert "Say why" in refused.json()["error"]
    assert client.post(reverse("desk-state"), {"state": "offline"}).json()["state"] == "offline"


def test_the_desk_answers_holds_and_hangs_up_its_own_call_then_wraps_up(
    alice: User, queue: Queue, ivr: SourceSystem
) -> None:
    ready(alice, queue)
    call, _ = services.call_arrive(source=ivr, telephony_id="c1", ani="+12025550143", queue_code="service")
    client = desk(alice)
    answered = client.post(reverse("desk-call-control", args=[call.pk, "answer"]))
    assert answered.json()["call"]["state"] == "connected"
    assert client.post(reverse("desk-call-control", args=[call.pk, "hold"])).json()["call"]["state"] == "held"
    assert client.post(reverse("desk-call-control", args=[call.pk, "hold"])).status_code == 409
    client.post(reverse("desk-call-control", args=[call.pk, "resume"]))
    ended = client.post(reverse("desk-call-control", args=[call.pk, "hangup"])).json()
    assert ended["state"] == "wrap_up"
    assert client.post(reverse("desk-wrap-up-done")).json()["state"] == "available"
    assert Call.objects.get(pk=call.pk).state == CallState.ENDED


def test_an_agent_cannot_control_another_agents_call(
    alice: User, bob: User, queue: Queue, ivr: SourceSystem
) -> None:
    ready(alice, queue)
    call, _ = services.call_arrive(source=ivr, telephony_id="c1", ani="+12025550143", queue_code="service")
    assert desk(bob).post(reverse("desk-call-control", args=[call.pk, "answer"])).status_code == 404
    assert desk(bob).get(reverse("desk-call", args=[call.pk])).status_code == 404
    call.refresh_from_db()
    assert call.state == CallState.RINGING


def test_a_pop_opens_the_one_customer_a_number_names(
    alice: User, queue: Queue, ivr: SourceSystem, dave_customer: Customer
) -> None:
    ready(alice, queue)
    call, _ = services.call_arrive(source=ivr, telephony_id="c1", ani="(202) 555-0143", queue_code="service")
    response = desk(alice).get(reverse("desk-call", args=[call.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("customer", args=[dave_customer.pk])


def test_a_pop_lists_the_customers_sharing_a_number_and_logs_the_read(
    alice: User, queue: Queue, ivr: SourceSystem, dave_customer: Customer
) -> None:
    partner = make_customer(given_name="Dana", emails=[])
    ready(alice, queue)
    call, _ = services.call_arrive(source=ivr, telephony_id="c1", ani="+12025550143", queue_code="service")
    html = desk(alice).get(reverse("desk-call", args=[call.pk])).content.decode()
    assert "2 customers share this number" in html
    assert dave_customer.display_name in html and partner.display_name in html
    logged = set(AccessLogEntry.objects.filter(user=alice).values_list("customer_id", flat=True))
    assert logged == {dave_customer.pk, partner.pk}


def test_a_pop_for_an_unknown_number_offers_the_search_with_the_number(
    alice: User, queue: Queue, ivr: SourceSystem
) -> None:
    ready(alice, queue)
    call, _ = services.call_arrive(source=ivr, telephony_id="c1", ani="+13125550100", queue_code="service")
    html = desk(alice).get(reverse("desk-call", args=[call.pk])).content.decode()
    assert "No customer has this number" in html
    assert "q=%2B1+312-555-0100" in html or "312" in html


def test_signing_out_ends_availability(alice: User, queue: Queue) -> None:
    ready(alice, queue)
    desk(alice).post(reverse("logout"))
    assert Agent.objects.get(user=alice).state == AgentState.OFFLINE


def test_a_desk_that_stopped_beating_goes_offline_but_a_call_keeps_its_agent(
    alice: User, bob: User, queue: Queue, ivr: SourceSystem
) -> None:
    ready(alice, queue)
    ready(bob, queue)
    services.call_arrive(source=ivr, telephony_id="c1", ani="+12025550143", queue_code="service")
    long_ago = timezone.now() - dt.timedelta(minutes=5)
    Agent.objects.update(heartbeat_at=long_ago)
    assert services.agents_gone_quiet() == 1
    states = dict(Agent.objects.values_list("user__username", "state"))
    ringing = Agent.objects.get(pk=Call.objects.get().agent_id).user.username
    assert states[ringing] == AgentState.RINGING
    assert next(s for name, s in states.items() if name != ringing) == AgentState.OFFLINE
