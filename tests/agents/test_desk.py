"""The desk's controls: presence, the call in hand and where a pop lands."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents import services
from agents.models import Agent, AgentState, Call, CallState, Disposition, Queue
from crm import events as crm_events
from crm.models import AccessLogEntry, BusinessEvent, Customer, SourceSystem, User
from tests.conftest import make_customer

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue() -> Queue:
    queue = Queue.objects.create(code="service", name="Customer service")
    Disposition.objects.create(code="resolved", label="Resolved")  # every queue
    Disposition.objects.create(queue=queue, code="do_not_call", label="Asked not to be called",
                               sets_do_not_call=True)  # fmt: skip
    return queue


def on_wrap_up(user: User, queue: Queue, ivr: SourceSystem, call_id: str = "c1") -> Call:
    ready(user, queue)
    call, _ = services.call_arrive(source=ivr, telephony_id=call_id, ani="+12025550143", queue_code="service")
    services.desk_call_control(user=user, call_id=call.pk, kind="answered")
    services.desk_call_control(user=user, call_id=call.pk, kind="ended")
    return Call.objects.get(pk=call.pk)


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
    assert [d["code"] for d in ended["dispositions"]] == ["do_not_call", "resolved"]
    refused = client.post(reverse("desk-wrap-up-done"), {"disposition": "sold_a_yacht"})
    assert refused.status_code == 400
    assert "Choose how the call ended" in refused.json()["error"]
    done = client.post(reverse("desk-wrap-up-done"), {"disposition": "resolved", "notes": "Reset PIN"})
    assert done.json()["state"] == "available"
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


# --- Wrap-up ---------------------------------------------------------------------------------


def test_wrap_up_puts_the_call_in_the_contact_history_once(
    alice: User, queue: Queue, ivr: SourceSystem, dave_customer: Customer
) -> None:
    call = on_wrap_up(alice, queue, ivr)
    services.call_wrap_up(user=alice, disposition="resolved", notes="Reset the card PIN")
    entry = dave_customer.interactions.get()
    assert (entry.channel, entry.direction, entry.disposition, entry.agent_id) == (
        "phone",
        "inbound",
        "resolved",
        alice.pk,
    )
    assert entry.notes == "Reset the card PIN"
    assert entry.external_id == f"call:{call.telephony_id}"
    assert entry.duration_seconds is not None
    assert Call.objects.get(pk=call.pk).interaction_id == entry.pk
    assert Agent.objects.get(user=alice).state == AgentState.AVAILABLE


def test_wrap_up_raises_call_ended_and_call_disposition_for_the_policies_once(
    alice: User, queue: Queue, ivr: SourceSystem, dave_customer: Customer
) -> None:
    call = on_wrap_up(alice, queue, ivr)
    services.call_wrap_up(user=alice, disposition="resolved", notes="Reset the card PIN")
    calls = BusinessEvent.objects.filter(customer=dave_customer, type__startswith="call.")
    events = {e.type: e for e in calls}
    assert set(events) == {"call.ended", "call.disposition"} and calls.count() == 2
    ended = events["call.ended"].payload
    assert (ended["call_id"], ended["direction"], ended["queue"], ended["agent"]) == (
        call.telephony_id, "inbound", "service", "alice",
    )  # fmt: skip
    assert ended["duration_seconds"] == dave_customer.interactions.get().duration_seconds
    assert events["call.disposition"].payload == {
        "disposition": "resolved", "call_id": call.telephony_id, "agent": "alice",
    }  # fmt: skip
    assert events["call.ended"].actor_id == alice.pk and events["call.ended"].source_system_id == ivr.pk
    # Both are valid against the catalog the policies are authored on.
    for event in events.values():
        crm_events.get(event.type).validate(event.payload)


def test_a_wrap_up_that_ran_out_of_time_raises_call_ended_without_a_disposition(
    alice: User, queue: Queue, ivr: SourceSystem, dave_customer: Customer
) -> None:
    on_wrap_up(alice, queue, ivr)
    agent = Agent.objects.get(user=alice)
    services.wrap_ups_overdue(now=agent.state_since + dt.timedelta(seconds=queue.wrap_up_seconds + 1))
    raised = BusinessEvent.objects.filter(customer=dave_customer, type__startswith="call.")
    assert list(raised.values_list("type", flat=True)) == ["call.ended"]


def test_a_refused_wrap_up_raises_no_event(
    alice: User, queue: Queue, ivr: SourceSystem, dave_customer: Customer
) -> None:
    on_wrap_up(alice, queue, ivr)
    with pytest.raises(ValidationError):
        services.call_wrap_up(user=alice, disposition="not_a_code")
    with pytest.raises(ValidationError):
        services.call_wrap_up(
            user=alice, disposition="resolved", callback_at=timezone.now() - dt.timedelta(hours=1)
        )
    assert not BusinessEvent.objects.filter(customer=dave_customer, type__startswith="call.").exists()


def test_a_do_not_call_disposition_sets_the_consent(
    alice: User, queue: Queue, ivr: SourceSystem, dave_customer: Customer
) -> None:
    on_wrap_up(alice, queue, ivr)
    services.call_wrap_up(user=alice, disposition="do_not_call")
    dave_customer.refresh_from_db()
    assert dave_customer.do_not_call
    assert dave_customer.change_history.filter(field="do_not_call", actor=alice).exists()


def test_a_callback_becomes_a_task_at_a_time_within_the_customers_calling_hours(
    alice: User, queue: Queue, ivr: SourceSystem, dave_customer: Customer
) -> None:
    on_wrap_up(alice, queue, ivr)
    new_york = zoneinfo.ZoneInfo("America/New_York")
    tomorrow = (timezone.now().astimezone(new_york) + dt.timedelta(days=1)).date()
    too_late = dt.datetime.combine(tomorrow, dt.time(22, 30), tzinfo=new_york)
    with pytest.raises(ValidationError, match="22:30 for the customer"):
        services.call_wrap_up(user=alice, disposition="resolved", callback_at=too_late)
    with pytest.raises(ValidationError, match="passed"):
        services.call_wrap_up(
            user=alice, disposition="resolved", callback_at=timezone.now() - dt.timedelta(hours=1)
        )
    assert not dave_customer.interactions.exists()  # nothing kept from the refused attempts
    good = dt.datetime.combine(tomorrow, dt.time(10, 30), tzinfo=new_york)
    services.call_wrap_up(user=alice, disposition="resolved", callback_at=good)
    task = dave_customer.tasks.get()
    assert (task.kind, task.due_at, task.assigned_to_id) == ("callback", good, alice.pk)


def test_the_callback_field_is_read_on_the_customers_clock(
    alice: User, queue: Queue, ivr: SourceSystem, dave_customer: Customer
) -> None:
    on_wrap_up(alice, queue, ivr)
    tomorrow = (
        (timezone.now() + dt.timedelta(days=1)).astimezone(zoneinfo.ZoneInfo("America/New_York")).date()
    )
    response = desk(alice).post(
        reverse("desk-wrap-up-done"), {"disposition": "resolved", "callback_at": f"{tomorrow:%Y-%m-%d}T09:15"}
    )
    assert response.status_code == 200, response.content
    due_at = dave_customer.tasks.get().due_at
    assert due_at is not None
    due = due_at.astimezone(zoneinfo.ZoneInfo("America/New_York"))
    assert (due.date(), due.hour, due.minute) == (tomorrow, 9, 15)


def test_wrap_up_is_finished_with_an_outcome_not_skipped(
    alice: User, queue: Queue, ivr: SourceSystem
) -> None:
    on_wrap_up(alice, queue, ivr)
    response = desk(alice).post(reverse("desk-state"), {"state": "available"})
    assert response.status_code == 409
    assert "Finish the wrap-up" in response.json()["error"]
    assert Agent.objects.get(user=alice).state == AgentState.WRAP_UP


def test_a_new_caller_is_taken_down_with_the_number_they_called_from(
    alice: User, queue: Queue, ivr: SourceSystem
) -> None:
    ready(alice, queue)
    call, _ = services.call_arrive(source=ivr, telephony_id="c1", ani="+13125550100", queue_code="service")
    client = desk(alice)
    form = client.get(reverse("desk-new-customer"), {"call": call.pk}).content.decode()
    assert 'value="+1 312-555-0100"' in form
    url = reverse("desk-new-customer")
    person = {"call": call.pk, "given_name": "Ola", "family_name": "Nordmann", "time_zone": "America/Chicago"}
    refused = client.post(url, {**person, "family_name": "", "phone": "12"})
    assert refused.status_code == 200
    assert "This field is required" in refused.content.decode()
    bad_phone = client.post(url, {**person, "phone": "12"})
    assert "digits" in bad_phone.content.decode()
    assert not Customer.objects.filter(family_name="Nordmann").exists()
    saved = client.post(url, {**person, "phone": "+1 312 555 0100"})
    customer = Customer.objects.get(family_name="Nordmann")
    assert saved["Location"] == reverse("customer", args=[customer.pk])
    assert customer.primary_phone == "+13125550100"
    assert Call.objects.get(pk=call.pk).customer_id == customer.pk


# --- Callbacks ---------------------------------------------------------------------------------


def _callback(customer: Customer, agent: User, due: dt.datetime) -> Any:
    from crm import services as crm_services

    return crm_services.task_create(
        customer_id=customer.pk,
        kind="callback",
        title="Call back about the card",
        due_at=due,
        assigned_to=agent,
    )


def test_an_overdue_callback_goes_to_anyone_then_to_the_top(alice: User, dave_customer: Customer) -> None:
    from crm import services as crm_services

    now = timezone.now()
    task = _callback(dave_customer, alice, now - dt.timedelta(minutes=20))
    assert [t.pk for t in crm_services.tasks_escalate_overdue(now=now)] == [task.pk]
    task.refresh_from_db()
    assert (task.assigned_to_id, task.priority) == (None, 3)
    assert crm_services.tasks_escalate_overdue(now=now) == []  # once per step
    crm_services.tasks_escalate_overdue(now=now + dt.timedelta(hours=1))
    task.refresh_from_db()
    assert task.priority == 1


def test_the_work_list_shows_my_tasks_and_callbacks_anyone_may_take(
    alice: User, bob: User, dave_customer: Customer, erin_customer: Customer
) -> None:
    now = timezone.now()
    _callback(dave_customer, alice, now + dt.timedelta(hours=2))
    _callback(erin_customer, bob, now + dt.timedelta(hours=1))  # bob's: not in alice's list
    escalated = _callback(erin_customer, bob, now - dt.timedelta(hours=2))
    from crm import services as crm_services

    crm_services.tasks_escalate_overdue(now=now)
    html = desk(alice).get(reverse("home")).content.decode()
    assert "Your work" in html
    assert html.count("Call back about the card") == 2
    assert "Overdue since" in html and "anyone" in html
    assert escalated.customer.display_name in html


def test_callbacks_falling_due_are_counted_once(alice: User, dave_customer: Customer) -> None:
    now = timezone.now()
    _callback(dave_customer, alice, now - dt.timedelta(seconds=30))
    assert services.callbacks_due(now=now) == 1
    assert services.callbacks_due(now=now + dt.timedelta(minutes=2)) == 0


# --- Editing the profile in place --------------------------------------------------------------


def _profile_post(customer: Customer, version: int, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": version, "given_name": customer.given_name, "family_name": customer.family_name,
        "phone": customer.primary_phone, "email": customer.primary_email,
        "preferred_channel": customer.preferred_channel, "language": customer.language,
        "time_zone": customer.time_zone,
    }  # fmt: skip
    for flag in ("do_not_call", "do_not_email", "marketing_opt_in"):
        if getattr(customer, flag):
            data[flag] = "on"
    data.update(changes)
    return data


def test_an_agent_edits_the_profile_in_place(alice: User, dave_customer: Customer) -> None:
    client = desk(alice)
    url = reverse("customer-profile", args=[dave_customer.pk])
    assert 'name="version"' in client.get(url).content.decode()
    response = client.post(url, _profile_post(dave_customer, dave_customer.version, phone="+1 202 555 0199"))
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#screen"
    dave_customer.refresh_from_db()
    assert dave_customer.primary_phone == "+12025550199"
    assert dave_customer.change_history.filter(field="phones", actor=alice).exists()


def test_a_bad_phone_is_shown_on_its_field_and_nothing_is_saved(alice: User, dave_customer: Customer) -> None:
    response = desk(alice).post(
        reverse("customer-profile", args=[dave_customer.pk]),
        _profile_post(dave_customer, dave_customer.version, phone="12"),
    )
    html = response.content.decode()
    assert "digits" in html and "field-error" in html
    dave_customer.refresh_from_db()
    assert dave_customer.primary_phone == "+12025550143"


def test_a_stale_edit_shows_who_changed_what_and_applies_mine_on_request(
    alice: User, bob: User, dave_customer: Customer
) -> None:
    read_at = dave_customer.version
    from crm import services as crm_services

    crm_services.customer_update(
        customer_id=dave_customer.pk, expected_version=read_at, changes={"given_name": "David"}, actor=bob
    )
    url = reverse("customer-profile", args=[dave_customer.pk])
    stale = desk(alice).post(url, _profile_post(dave_customer, read_at, given_name="Davey"))
    html = stale.content.decode()
    assert "Someone changed this record" in html
    assert "David" in html and "Davey" in html and "Bob" in html
    assert f'value="{read_at + 1}"' in html  # applying mine saves over the version now current
    dave_customer.refresh_from_db()
    assert dave_customer.given_name == "David"
    applied = desk(alice).post(url, _profile_post(dave_customer, read_at + 1, given_name="Davey"))
    assert applied["HX-Retarget"] == "#screen"
    dave_customer.refresh_from_db()
    assert dave_customer.given_name == "Davey"


def test_a_customer_login_cannot_use_the_profile_form(dave: User, dave_customer: Customer) -> None:
    assert desk(dave).get(reverse("customer-profile", args=[dave_customer.pk])).status_code == 403


def test_wrap_up_past_its_limit_ends_by_itself_and_keeps_the_call_in_the_history(
    alice: User, queue: Queue, ivr: SourceSystem, dave_customer: Customer
) -> None:
    on_wrap_up(alice, queue, ivr)
    agent = Agent.objects.get(user=alice)
    assert (
        services.wrap_ups_overdue(now=agent.state_since + dt.timedelta(seconds=queue.wrap_up_seconds - 1))
        == 0
    )
    assert (
        services.wrap_ups_overdue(now=agent.state_since + dt.timedelta(seconds=queue.wrap_up_seconds + 1))
        == 1
    )
    agent.refresh_from_db()
    assert (agent.state, agent.call_id) == (AgentState.AVAILABLE, None)
    entry = dave_customer.interactions.get()
    assert (entry.disposition, entry.agent_id) == ("", alice.pk)


# --- Offers on the screen ---------------------------------------------------------------------


def test_the_agent_records_the_customers_answer_to_an_offer_on_the_screen(
    alice: User, dave_customer: Customer
) -> None:
    from policies.models import Offer, OfferPresentation

    offer = Offer.objects.create(
        code="mortgage",
        name="Fixed-rate mortgage",
        talking_points="Rates from 4.1%",
        channels=["agent_screen"],
        value=500,
    )
    presented = OfferPresentation.objects.create(
        offer=offer, customer=dave_customer, channel="agent_screen", sequence=1,
        expires_at=timezone.now() + dt.timedelta(hours=1),
    )  # fmt: skip
    client = desk(alice)
    screen = client.get(reverse("customer", args=[dave_customer.pk])).content.decode()
    assert "Fixed-rate mortgage" in screen and "Rates from 4.1%" in screen
    url = reverse("customer-offer-respond", args=[dave_customer.pk, presented.pk, "accept"])
    response = client.post(url)
    assert response["HX-Retarget"] == "#screen"
    presented.refresh_from_db()
    assert (presented.status, presented.responded_by_id) == ("accepted", alice.pk)
    assert "No offers for this customer right now" in response.content.decode()
    again = client.post(url).content.decode()
    assert "no longer open" in again


def test_a_policys_task_for_a_queue_is_in_the_work_list_of_that_queues_agents_only(
    alice: User, carol: User, bob: User, dave_customer: Customer
) -> None:
    from agents import selectors as agents_selectors
    from agents.models import Queue
    from crm import services as crm_services
    from crm.models import Task
    from policies import services as policy_services
    from tests.policies.conftest import make_policy

    sales = Queue.objects.create(code="sales", name="Sales")
    services.agent_for(user=alice).queues.set([sales])
    services.agent_for(user=carol).queues.set([])
    event, _ = crm_services.business_event_record(
        type="web.page_view", occurred_at=timezone.now(), payload={"url": "/"},
        source=crm_services.crm_source(), idempotency_key="view-1", customer=dave_customer,
    )  # fmt: skip
    policy = make_policy(bob, status="draft", trigger_types=["web.page_view"],
                         actions=[{"action": "tag_customer", "settings": {"tag": "browsing"}}])  # fmt: skip
    run = policy_services.ActionRun(event=event, customer_id=dave_customer.pk, policy_id=policy.pk,
                                    now=timezone.now())  # fmt: skip
    task = policy_services.policy_task_create(run=run, settings={
        "kind": "sales_call", "title": "Large withdrawal: call within a day", "due_in_hours": 24,
        "assign_to": "queue:sales", "priority": 1,
    })  # fmt: skip
    assert (task.queue, task.assigned_to_id) == ("sales", None)
    assert [w.task_id for w in agents_selectors.work_list(user_id=alice.pk)] == [task.pk]
    assert agents_selectors.work_list(user_id=carol.pk) == []
    html = desk(alice).get(reverse("home")).content.decode()
    assert "Large withdrawal: call within a day" in html and "sales queue" in html
    assert Task.objects.count() == 1
