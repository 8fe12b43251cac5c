"""Presence and routing: the longest-idle agent with the skill gets the call;
nobody gets two calls and no call rings two agents, also under concurrency."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.utils import timezone

from agents import services
from agents.models import Agent, AgentState, AgentStateChange, BreakReason, Call, CallState, Queue
from crm import services as crm_services
from crm.exceptions import Conflict
from crm.models import Customer, SourceSystem, User
from tests.conftest import PASSWORD, api_as, make_customer

T0 = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def service_queue(db: None) -> Queue:
    return Queue.objects.create(code="service", name="Customer service", ring_seconds=15)


@pytest.fixture
def sales_queue(db: None) -> Queue:
    return Queue.objects.create(code="sales", name="Sales", ring_seconds=15)


def staff_agent(name: str, *queues: Queue) -> Agent:
    user = crm_services.staff_user_create(
        username=name, password=PASSWORD, role="agent", first_name=name.title()
    )
    agent = services.agent_for(user=user)
    agent.queues.set(queues)
    return agent


def available(agent: Agent, seconds: float) -> Agent:
    return services.agent_set_state(user=agent.user, state=AgentState.AVAILABLE, now=at(seconds))


def arrive(
    ivr: SourceSystem, call_id: str, queue: Queue, seconds: float = 0, ani: str = "+12025550143"
) -> Call:
    call, _ = services.call_arrive(
        source=ivr, telephony_id=call_id, ani=ani, queue_code=queue.code, now=at(seconds)
    )
    return call


def event(ivr: SourceSystem, call: Call, event_id: str, kind: str, **payload: Any) -> Call:
    updated, _ = services.call_event(
        source=ivr, telephony_id=call.telephony_id, event_id=event_id, kind=kind, payload=payload
    )
    return updated


def state_of(agent: Agent) -> str:
    agent.refresh_from_db()
    return agent.state


def test_the_longest_idle_agent_with_the_skill_gets_the_call(
    ivr: SourceSystem, service_queue: Queue, sales_queue: Queue, dave_customer: Customer
) -> None:
    ann = available(staff_agent("ann", service_queue), 10)
    ben = available(staff_agent("ben", service_queue), 5)  # idle longer
    available(staff_agent("cat", sales_queue), 1)  # idle longest, but no skill
    call = arrive(ivr, "c1", service_queue, 20)
    assert (call.state, call.agent_id) == (CallState.RINGING, ben.pk)
    assert call.customer_id == dave_customer.pk
    assert state_of(ben) == AgentState.RINGING
    assert state_of(ann) == AgentState.AVAILABLE


def test_several_customers_on_one_number_become_candidates(
    ivr: SourceSystem, service_queue: Queue, dave_customer: Customer
) -> None:
    partner = make_customer(given_name="Dana", emails=[])
    call = arrive(ivr, "c1", service_queue)
    assert call.customer_id is None
    assert sorted(call.candidates) == sorted([dave_customer.pk, partner.pk])


def test_an_unknown_or_withheld_number_pops_no_customer(ivr: SourceSystem, service_queue: Queue) -> None:
    assert arrive(ivr, "c1", service_queue, ani="+15555550100").customer_id is None
    withheld = arrive(ivr, "c2", service_queue, ani="anonymous")
    assert (withheld.customer_id, withheld.caller_number) == (None, "")


def test_with_nobody_available_the_call_waits_and_the_next_free_agent_takes_the_oldest(
    ivr: SourceSystem, service_queue: Queue
) -> None:
    first = arrive(ivr, "c1", service_queue, 1)
    second = arrive(ivr, "c2", service_queue, 2)
    assert first.state == second.state == CallState.QUEUED
    ann = available(staff_agent("ann", service_queue), 3)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, first.agent_id) == (CallState.RINGING, ann.pk)
    assert second.state == CallState.QUEUED


def test_the_same_call_reported_twice_is_one_call(ivr: SourceSystem, service_queue: Queue) -> None:
    first, created = services.call_arrive(
        source=ivr, telephony_id="c1", ani="+12025550143", queue_code="service"
    )
    again, created_again = services.call_arrive(
        source=ivr, telephony_id="c1", ani="+12025550143", queue_code="service"
    )
    assert (created, created_again, again.pk) == (True, False, first.pk)
    assert Call.objects.count() == 1


def test_an_unanswered_ring_moves_on_and_puts_the_agent_on_a_break(
    ivr: SourceSystem, service_queue: Queue
) -> None:
    ann = available(staff_agent("ann", service_queue), 1)
    ben = available(staff_agent("ben", service_queue), 2)
    call = arrive(ivr, "c1", service_queue, 3)
    assert call.agent_id == ann.pk
    assert services.call_ring_timeout(call_id=call.pk, offer=1, now=at(19))
    call.refresh_from_db()
    assert (call.state, call.agent_id, call.offers) == (CallState.RINGING, ben.pk, 2)
    ann.refresh_from_db()
    assert (ann.state, ann.break_reason) == (AgentState.BREAK, BreakReason.MISSED_CALL)
    # The first ring's timeout delivered again changes nothing.
    assert not services.call_ring_timeout(call_id=call.pk, offer=1, now=at(20))


def test_the_sweep_moves_on_a_ring_once_it_has_lasted_the_queues_ring_time(
    ivr: SourceSystem, service_queue: Queue
) -> None:
    available(staff_agent("ann", service_queue), 1)
    call = arrive(ivr, "c1", service_queue, 3)
    assert services.calls_sweep(now=at(3 + 14.9)) == 0
    call.refresh_from_db()
    assert call.state == CallState.RINGING
    services.calls_sweep(now=at(3 + 15))
    call.refresh_from_db()
    assert (call.state, call.agent_id) == (CallState.QUEUED, None)


def test_an_arriving_call_schedules_no_message_of_its_own(
    ivr: SourceSystem, service_queue: Queue, django_capture_on_commit_callbacks: Any
) -> None:
    available(staff_agent("ann", service_queue), 1)
    with django_capture_on_commit_callbacks() as callbacks:
        arrive(ivr, "c1", service_queue, 3)
    # The frames (state, pop) leave in one batch; the ring's end is the sweep's.
    assert {callback.__module__ for callback in callbacks} == {"crm.realtime"}
    assert [c.__qualname__ for c in callbacks].count("batched.<locals>.<lambda>") == 1


def test_a_call_is_answered_held_resumed_and_ended_into_wrap_up(
    ivr: SourceSystem, service_queue: Queue
) -> None:
    ann = available(staff_agent("ann", service_queue), 1)
    call = arrive(ivr, "c1", service_queue, 2)
    assert event(ivr, call, "e1", "answered").state == CallState.CONNECTED
    assert state_of(ann) == AgentState.ON_CALL
    assert event(ivr, call, "e2", "held").state == CallState.HELD
    assert event(ivr, call, "e3", "resumed").state == CallState.CONNECTED
    ended = event(ivr, call, "e4", "ended")
    assert (ended.state, ended.end_reason) == (CallState.ENDED, "completed")
    ann.refresh_from_db()
    assert (ann.state, ann.call_id) == (AgentState.WRAP_UP, call.pk)
    states = list(AgentStateChange.objects.filter(agent=ann).order_by("id").values_list("state", flat=True))
    assert states == ["available", "ringing", "on_call", "wrap_up"]


def test_a_caller_who_hangs_up_while_it_rings_frees_the_agent(
    ivr: SourceSystem, service_queue: Queue
) -> None:
    ann = available(staff_agent("ann", service_queue), 1)
    call = arrive(ivr, "c1", service_queue, 2)
    ended = event(ivr, call, "e1", "ended")
    assert ended.end_reason == "abandoned"
    assert state_of(ann) == AgentState.AVAILABLE


def test_events_out_of_order_or_for_an_unknown_call_change_nothing(
    ivr: SourceSystem, service_queue: Queue
) -> None:
    call = arrive(ivr, "c1", service_queue)
    with pytest.raises(Conflict):
        event(ivr, call, "e1", "held")  # waiting in the queue: nothing to hold
    with pytest.raises(services.CallNotFound):
        services.call_event(source=ivr, telephony_id="nope", event_id="e1", kind="ended")
    with pytest.raises(ValidationError):
        event(ivr, call, "e2", "exploded")
    call.refresh_from_db()
    assert call.state == CallState.QUEUED
    assert not call.events.exists()


def test_an_event_sent_twice_is_applied_once(ivr: SourceSystem, service_queue: Queue) -> None:
    available(staff_agent("ann", service_queue), 1)
    call = arrive(ivr, "c1", service_queue, 2)
    event(ivr, call, "e1", "answered")
    again, applied = services.call_event(source=ivr, telephony_id="c1", event_id="e1", kind="answered")
    assert (applied, again.state) == (False, CallState.CONNECTED)


def test_a_transfer_to_another_queue_rings_that_queues_agent(
    ivr: SourceSystem, service_queue: Queue, sales_queue: Queue
) -> None:
    ann = available(staff_agent("ann", service_queue), 1)
    ben = available(staff_agent("ben", sales_queue), 2)
    call = arrive(ivr, "c1", service_queue, 3)
    event(ivr, call, "e1", "answered")
    moved = event(ivr, call, "e2", "transferred", queue="sales")
    assert (moved.state, moved.agent_id, moved.queue_id) == (CallState.RINGING, ben.pk, sales_queue.pk)
    assert state_of(ann) == AgentState.WRAP_UP


def test_a_transfer_to_a_named_available_agent_with_the_skill_rings_them_not_the_longest_idle(
    ivr: SourceSystem, service_queue: Queue
) -> None:
    ann = available(staff_agent("ann", service_queue), 1)
    available(staff_agent("ben", service_queue), 2)  # idle longer than cat
    cat = staff_agent("cat", service_queue)
    call = arrive(ivr, "c1", service_queue, 3)
    event(ivr, call, "e1", "answered")
    available(cat, 4)
    moved = event(ivr, call, "e2", "transferred", agent="cat")
    assert (moved.state, moved.agent_id, moved.queue_id) == (CallState.RINGING, cat.pk, service_queue.pk)
    assert (state_of(ann), state_of(cat)) == (AgentState.WRAP_UP, AgentState.RINGING)


@pytest.mark.parametrize(
    "refusal",
    [
        ("ben", Conflict, "not available"),  # on a break
        ("dan", Conflict, "does not answer Customer service calls"),  # available, sales only
        ("ann", Conflict, "already yours"),
        ("nobody", ValidationError, "No agent “nobody”"),
    ],
)
def test_a_transfer_to_an_agent_who_may_not_take_it_is_refused_and_changes_nothing(
    ivr: SourceSystem, service_queue: Queue, sales_queue: Queue, refusal: tuple[str, type[Exception], str]
) -> None:
    who, error, message = refusal
    ann = available(staff_agent("ann", service_queue), 1)
    ben = staff_agent("ben", service_queue)
    services.agent_set_state(user=ben.user, state=AgentState.BREAK, reason=BreakReason.LUNCH, now=at(1))
    dan = available(staff_agent("dan", sales_queue), 1)
    call = arrive(ivr, "c1", service_queue, 3)
    event(ivr, call, "e1", "answered")
    with pytest.raises(error, match=message):
        event(ivr, call, "e2", "transferred", agent=who)
    call.refresh_from_db()
    assert (call.state, call.agent_id, call.queue_id) == (CallState.CONNECTED, ann.pk, service_queue.pk)
    assert (state_of(ann), state_of(ben), state_of(dan)) == (
        AgentState.ON_CALL, AgentState.BREAK, AgentState.AVAILABLE,
    )  # fmt: skip
    assert list(call.events.values_list("kind", flat=True)) == ["answered"]


def test_the_desk_transfers_its_call_to_an_agent_it_lists_and_says_why_it_cannot(
    ivr: SourceSystem, service_queue: Queue
) -> None:
    ann = available(staff_agent("ann", service_queue), 1)
    ben = staff_agent("ben", service_queue)
    call = arrive(ivr, "c1", service_queue, 3)
    client = Client()
    client.force_login(ann.user)
    client.post(f"/desk/calls/{call.pk}/answer/")
    assert client.get("/desk/transfer-targets/").json()["agents"] == []
    refused = client.post(f"/desk/calls/{call.pk}/transfer/", {"agent": "ben"})
    assert refused.status_code == 409 and "Ben is offline, not available" in refused.json()["error"]
    available(ben, 4)
    targets = client.get("/desk/transfer-targets/").json()
    assert targets["agents"] == [{"username": "ben", "name": "Ben"}]
    assert {"code": "service", "name": "Customer service"} in targets["queues"]
    moved = client.post(f"/desk/calls/{call.pk}/transfer/", {"agent": "ben"})
    assert moved.status_code == 200 and moved.json()["state"] == AgentState.WRAP_UP
    assert state_of(ben) == AgentState.RINGING


def test_an_agent_cannot_leave_a_ringing_call_by_changing_state(
    ivr: SourceSystem, service_queue: Queue
) -> None:
    ann = available(staff_agent("ann", service_queue), 1)
    arrive(ivr, "c1", service_queue, 2)
    with pytest.raises(Conflict):
        services.agent_set_state(user=ann.user, state=AgentState.OFFLINE)
    with pytest.raises(ValidationError):
        services.agent_set_state(user=ann.user, state=AgentState.BREAK, reason="bored")


# --- Under concurrency --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_calls_racing_for_few_agents_never_share_one() -> None:
    ivr = crm_services.source_system_create(code="pbx", name="PBX", kind="ivr")
    queue = Queue.objects.create(code="service", name="Service")
    agents = [available(staff_agent(f"agent{i}", queue), i) for i in range(3)]
    start = threading.Barrier(8)

    def ring(n: int) -> None:
        start.wait()
        try:
            services.call_arrive(
                source=ivr, telephony_id=f"race-{n}", ani="+12025550143", queue_code="service"
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=ring, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    ringing = list(Call.objects.filter(state=CallState.RINGING).values_list("agent_id", flat=True))
    assert len(ringing) == len(set(ringing)) <= len(agents)  # nobody rung twice
    assert Call.objects.count() == 8
    for agent in Agent.objects.all():
        calls = Call.objects.filter(agent=agent, state=CallState.RINGING).count()
        assert calls == (1 if agent.state == AgentState.RINGING else 0)


@pytest.mark.django_db(transaction=True)
def test_agents_racing_for_one_waiting_call_never_share_it() -> None:
    ivr = crm_services.source_system_create(code="pbx", name="PBX", kind="ivr")
    queue = Queue.objects.create(code="service", name="Service")
    agents = [staff_agent(f"agent{i}", queue) for i in range(6)]
    call, _ = services.call_arrive(source=ivr, telephony_id="one", ani="+12025550143", queue_code="service")
    start = threading.Barrier(len(agents))

    def go_available(user: User) -> None:
        start.wait()
        try:
            services.agent_set_state(user=user, state=AgentState.AVAILABLE)
        finally:
            connection.close()

    threads = [threading.Thread(target=go_available, args=(a.user,)) for a in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    call.refresh_from_db()
    assert call.state == CallState.RINGING
    assert Agent.objects.filter(state=AgentState.RINGING).count() == 1
    assert Agent.objects.get(state=AgentState.RINGING).pk == call.agent_id


# --- The API ----------------------------------------------------------------------------------


def test_a_telephony_integration_reports_a_call_and_its_events(
    frank: User, ivr: SourceSystem, service_queue: Queue, dave_customer: Customer
) -> None:
    available(staff_agent("ann", service_queue), 1)
    client = api_as(frank)
    body = {"call_id": "pbx-1", "ani": "(202) 555-0143", "queue": "service"}
    created = client.post("/api/v1/calls/", body, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["customer"] == dave_customer.pk
    assert created.json()["agent"] == "ann"
    assert client.post("/api/v1/calls/", body, format="json").status_code == 200
    answered = client.post(
        "/api/v1/calls/pbx-1/events/", {"event_id": "e1", "kind": "answered"}, format="json"
    )
    assert answered.json()["state"] == "connected"
    out_of_order = client.post(
        "/api/v1/calls/pbx-1/events/", {"event_id": "e2", "kind": "resumed"}, format="json"
    )
    assert out_of_order.status_code == 409
    unknown = client.post("/api/v1/calls/nope/events/", {"event_id": "e3", "kind": "ended"}, format="json")
    assert unknown.status_code == 404
    bad_queue = client.post("/api/v1/calls/", {**body, "call_id": "pbx-2", "queue": "nope"}, format="json")
    assert bad_queue.status_code == 400
    assert "queue" in bad_queue.json()


def test_reporting_a_call_takes_a_fixed_handful_of_queries(
    frank: User, ivr: SourceSystem, service_queue: Queue, dave_customer: Customer,
    django_assert_max_num_queries: Any,
) -> None:  # fmt: skip
    for n in range(3):
        available(staff_agent(f"agent{n}", service_queue), n)
    client = api_as(frank)
    client.get("/api/v1/me/")  # the token's first use writes its last use
    # token, queue, caller, then one statement inserting and ringing the call
    with django_assert_max_num_queries(4):
        created = client.post(
            "/api/v1/calls/", {"call_id": "q1", "ani": "(202) 555-0143", "queue": "service"}, format="json"
        )
    assert created.status_code == 201 and created.json()["agent"] == "agent0"
    # token, BEGIN, lock the call (its commit not waiting for the disk), the event unless
    # seen before, lock the agent, the agent's state with its history row, a waiting call
    # for the agent?, UPDATE call, COMMIT
    with django_assert_max_num_queries(9):
        ended = client.post("/api/v1/calls/q1/events/", {"event_id": "e1", "kind": "ended"}, format="json")
    assert ended.json()["state"] == "ended"


def test_the_api_transfers_to_a_named_agent_or_answers_409_naming_the_field(
    frank: User, ivr: SourceSystem, service_queue: Queue
) -> None:
    available(staff_agent("ann", service_queue), 1)
    ben = staff_agent("ben", service_queue)
    client = api_as(frank)
    client.post("/api/v1/calls/", {"call_id": "t1", "ani": "+12025550143", "queue": "service"}, format="json")
    client.post("/api/v1/calls/t1/events/", {"event_id": "e1", "kind": "answered"}, format="json")
    body = {"event_id": "e2", "kind": "transferred", "agent": "ben"}
    refused = client.post("/api/v1/calls/t1/events/", body, format="json")
    assert refused.status_code == 409 and "not available" in refused.json()["agent"][0]
    available(ben, 2)
    moved = client.post("/api/v1/calls/t1/events/", body, format="json")
    assert moved.status_code == 200 and (moved.json()["state"], moved.json()["agent"]) == ("ringing", "ben")


def test_staff_and_customers_cannot_report_calls(bob: User, dave: User, service_queue: Queue) -> None:
    body = {"call_id": "pbx-1", "ani": "+12025550143", "queue": "service"}
    assert api_as(bob).post("/api/v1/calls/", body, format="json").status_code == 403
    assert api_as(dave).post("/api/v1/calls/", body, format="json").status_code == 403
    assert not Call.objects.exists()


def test_state_changes_are_kept_with_who_and_when(ivr: SourceSystem, service_queue: Queue) -> None:
    ann = staff_agent("ann", service_queue)
    services.agent_set_state(user=ann.user, state=AgentState.BREAK, reason=BreakReason.LUNCH, now=at(1))
    services.agent_set_state(user=ann.user, state=AgentState.AVAILABLE, now=at(2))
    rows = list(
        AgentStateChange.objects.filter(agent=ann).order_by("at").values_list("state", "reason", "at")
    )
    assert rows == [("break", "lunch", at(1)), ("available", "", at(2))]
    assert timezone.is_aware(rows[0][2])


def test_the_api_answers_a_call_as_its_documented_serializer_would_in_every_state(
    frank: User, ivr: SourceSystem, service_queue: Queue, dave_customer: Customer
) -> None:
    from agents.api import CallSerializer

    available(staff_agent("ann", service_queue), 1)
    make_customer(given_name="Dee", phones=[{"number": "+12025550177", "kind": "mobile", "primary": True}])
    make_customer(given_name="Don", phones=[{"number": "+12025550177", "kind": "mobile", "primary": True}])
    client = api_as(frank)
    seen: list[dict[str, Any]] = []

    def answered(response: Any, telephony_id: str) -> None:
        assert response.status_code in (200, 201), response.content
        call = Call.objects.select_related("queue", "agent__user").get(telephony_id=telephony_id)
        assert response.json() == dict(CallSerializer(call).data)
        seen.append(response.json())

    answered(client.post("/api/v1/calls/", {"call_id": "s1", "ani": "+12025550143", "queue": "service"},
                         format="json"), "s1")  # fmt: skip
    # Nobody free: it waits; two customers share the number: candidates.
    answered(client.post("/api/v1/calls/", {"call_id": "s2", "ani": "+12025550177", "queue": "service"},
                         format="json"), "s2")  # fmt: skip
    events = "/api/v1/calls/s1/events/"
    answered(client.post(events, {"event_id": "a", "kind": "answered"}, format="json"), "s1")
    answered(client.post(events, {"event_id": "b", "kind": "ended"}, format="json"), "s1")
    answered(client.post("/api/v1/calls/", {"call_id": "s1", "ani": "+12025550143", "queue": "service"},
                         format="json"), "s1")  # fmt: skip
    states = [(body["state"], body["agent"], bool(body["candidates"])) for body in seen]
    assert states == [("ringing", "ann", False), ("queued", None, True), ("connected", "ann", False),
                      ("ended", "ann", False), ("ended", "ann", False)]  # fmt: skip
    assert seen[3]["answered_at"] and seen[3]["ended_at"] and seen[3]["end_reason"] == "completed"


def test_an_arrival_tells_the_ringing_desk_with_one_frame_and_the_floor_with_the_state(
    ivr: SourceSystem, service_queue: Queue, dave_customer: Customer, django_capture_on_commit_callbacks: Any
) -> None:
    from agents.realtime import FLOOR_GROUP
    from crm import realtime as crm_realtime
    from tests.listening import hear

    ann = available(staff_agent("ann", service_queue), 1)
    ben = available(staff_agent("ben", service_queue), 2)

    def ring(call_id: str) -> Call:
        with django_capture_on_commit_callbacks(execute=True):
            return arrive(ivr, call_id, service_queue, 3)

    call, desk = hear(crm_realtime.agent_group(ann.pk), lambda: ring("one-frame"), frames=2, timeout=1.0)
    # The pop alone: it says ringing, since when, and which call and customer.
    assert [frame["event"] for frame in desk] == ["call.offered"]
    assert (desk[0]["state"], desk[0]["call_id"]) == ("ringing", call.pk)
    assert desk[0]["customer_id"] == dave_customer.pk
    assert desk[0]["ring_started_at"] == call.ring_started_at.isoformat()
    # The floor still hears the agent's new state.
    second, floor = hear(FLOOR_GROUP, lambda: ring("two"), frames=2, timeout=1.0)
    assert [(f["event"], f["agent_id"], f["state"]) for f in floor] == [("agent.state", ben.pk, "ringing")]
    assert floor[0]["call"]["call_id"] == second.pk
