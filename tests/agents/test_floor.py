"""The supervisor's floor view: who is where, what waits, today's service level."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents import selectors, services
from agents.models import Agent, AgentState, Call, Queue
from crm import services as crm_services
from crm.models import Customer, SourceSystem, User
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue() -> Queue:
    return Queue.objects.create(code="service", name="Customer service", service_level_seconds=20)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def agent_named(name: str, queue: Queue) -> User:
    user = crm_services.staff_user_create(
        username=name, password=PASSWORD, role="agent", first_name=name.title()
    )
    services.agent_for(user=user).queues.set([queue])
    return user


def test_agents_may_not_watch_the_floor(alice: User) -> None:
    response = logged_in(alice).get(reverse("floor"))
    assert response.status_code == 403
    assert logged_in(alice).get(reverse("floor-part")).status_code == 403


def test_the_floor_counts_states_waiting_calls_and_service_level(
    bob: User, queue: Queue, ivr: SourceSystem, django_assert_max_num_queries: object
) -> None:
    ann, ben = agent_named("ann", queue), agent_named("ben", queue)
    services.agent_set_state(user=ann, state="available")
    first, _ = services.call_arrive(source=ivr, telephony_id="c1", ani="+12025550143", queue_code="service")
    services.call_event(source=ivr, telephony_id="c1", event_id="a", kind="answered")  # within 20 s
    services.call_arrive(source=ivr, telephony_id="c2", ani="+12025550143", queue_code="service")  # waits
    services.agent_set_state(user=ben, state="break", reason="lunch")
    late, _ = services.call_arrive(source=ivr, telephony_id="c3", ani="+12025550143", queue_code="service")
    # Waited three minutes, but never before today's midnight on the floor's clock.
    day_start = selectors.start_of_day("America/Chicago")
    waited = max(timezone.now() - dt.timedelta(minutes=3), day_start + dt.timedelta(seconds=1))
    Call.objects.filter(pk=late.pk).update(arrived_at=waited)
    services.call_event(source=ivr, telephony_id="c3", event_id="gone", kind="ended")  # abandoned

    view = selectors.floor(zone="America/Chicago")
    assert view.states["on_call"] == 1 and view.states["break"] == 1
    row = view.queues[0]
    assert (row.waiting, row.offered, row.answered, row.abandoned) == (1, 3, 1, 1)
    assert row.service_level == 50  # one answered in time out of two that ended or were answered
    assert row.longest_wait_since is not None
    handled = {r.agent.user.username: r.handled for r in view.agents}
    assert handled == {"ann": 1, "ben": 0}

    client = logged_in(bob)
    client.get(reverse("floor"))  # the permission catalog fills on a process's first page
    with django_assert_max_num_queries(11):  # type: ignore[operator]
        html = client.get(reverse("floor-part")).content.decode()
    assert "Customer service" in html and "50%" in html
    assert first.pk  # the call the floor counted as answered


def test_a_supervisor_signs_off_an_idle_agent_but_not_one_on_a_call(
    bob: User, queue: Queue, ivr: SourceSystem
) -> None:
    ann, ben = agent_named("ann", queue), agent_named("ben", queue)
    services.agent_set_state(user=ann, state="break", reason="short")
    services.agent_set_state(user=ben, state="available")
    services.call_arrive(source=ivr, telephony_id="c1", ani="+12025550143", queue_code="service")  # rings ben
    client = logged_in(bob)
    assert client.post(reverse("floor-agent-offline", args=[ann.pk])).status_code == 200
    assert Agent.objects.get(user=ann).state == AgentState.OFFLINE
    assert Agent.objects.get(user=ann).changes.latest("id").changed_by_id == bob.pk
    refused = client.post(reverse("floor-agent-offline", args=[ben.pk]))
    assert refused.status_code == 409
    assert Agent.objects.get(user=ben).state == AgentState.RINGING


def test_an_agent_cannot_sign_off_another(alice: User, queue: Queue) -> None:
    ann = agent_named("ann", queue)
    services.agent_set_state(user=ann, state="available")
    assert logged_in(alice).post(reverse("floor-agent-offline", args=[ann.pk])).status_code == 403
    assert Agent.objects.get(user=ann).state == AgentState.AVAILABLE


def test_each_waiting_call_shows_its_place_in_its_own_queue(
    bob: User, queue: Queue, ivr: SourceSystem
) -> None:
    sales = Queue.objects.create(code="sales", name="Sales")
    now = timezone.now()
    for n, code in enumerate(["service", "sales", "service", "service", "sales"]):
        services.call_arrive(source=ivr, telephony_id=f"w{n}", ani="+12025550143", queue_code=code,
                             now=now - dt.timedelta(minutes=10 - n))  # fmt: skip
    view = selectors.floor(zone="UTC")
    places = [(row.call.telephony_id, row.call.queue.code, row.position) for row in view.waiting]
    assert places == [
        ("w0", "service", 1), ("w1", "sales", 1), ("w2", "service", 2), ("w3", "service", 3),
        ("w4", "sales", 2),
    ]  # fmt: skip
    assert view.waiting_total == 5 and sales.pk
    html = logged_in(bob).get(reverse("floor-part")).content.decode()
    assert "Calls waiting" in html and html.count('class="row-waiting"') >= 5


def test_the_floor_counts_offers_presented_and_answered_today_overall_and_per_agent(
    bob: User, queue: Queue, dave_customer: Customer
) -> None:
    from policies.models import Offer, OfferPresentation

    ann = agent_named("ann", queue)
    services.agent_set_state(user=ann, state="available")
    offer = Offer.objects.create(code="card", name="Travel card", channels=["agent_screen"], value=100)
    now = timezone.now()
    for n, (status, by) in enumerate(
        [("accepted", ann), ("declined", ann), ("accepted", None), ("presented", None)]
    ):
        OfferPresentation.objects.create(
            offer=offer, customer=dave_customer, channel="agent_screen", sequence=n + 1, status=status,
            presented_at=now, expires_at=now + dt.timedelta(hours=1),
            responded_at=now if status != "presented" else None, responded_by=by,
        )  # fmt: skip
    yesterday = now - dt.timedelta(days=2)
    OfferPresentation.objects.create(
        offer=offer, customer=dave_customer, channel="agent_screen", sequence=9, status="accepted",
        presented_at=yesterday, expires_at=yesterday + dt.timedelta(hours=1), responded_at=yesterday,
        responded_by=ann,
    )  # fmt: skip
    view = selectors.floor(zone="UTC")
    assert (view.offers.presented, view.offers.accepted, view.offers.declined) == (4, 2, 1)
    assert view.offers.take_rate == 67
    row = next(r for r in view.agents if r.agent.user == ann)
    assert (row.offers_accepted, row.offers_declined) == (1, 1)
    assert "67% taken" in logged_in(bob).get(reverse("floor-part")).content.decode()


def test_the_floors_queries_stay_flat_with_more_agents_calls_and_offers(
    bob: User, queue: Queue, ivr: SourceSystem, django_assert_max_num_queries: object
) -> None:
    client = logged_in(bob)
    client.get(reverse("floor"))
    for n in range(6):
        services.agent_set_state(user=agent_named(f"agent{n}", queue), state="available")
    for n in range(10):
        services.call_arrive(source=ivr, telephony_id=f"f{n}", ani="+12025550143", queue_code="service")
    with django_assert_max_num_queries(11):  # type: ignore[operator]
        assert client.get(reverse("floor-part")).status_code == 200
