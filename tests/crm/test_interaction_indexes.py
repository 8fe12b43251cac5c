"""The contact history's agent index holds only contacts an agent made: those a
touchpoint sends (most of the table) cost it no entry, and finding or clearing
an agent's contacts still reads it."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from crm import services
from crm.models import Interaction

pytestmark = pytest.mark.django_db


def _entries(index: str) -> int:
    """Entries in ``index`` (a partial index of the contacts with an agent), counted from it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [index])
        (definition,) = cursor.fetchone()
    assert "WHERE (agent_id IS NOT NULL)" in definition, definition
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan TO off")
        cursor.execute("SELECT count(*) FROM crm_interaction WHERE agent_id IS NOT NULL")
        return int(cursor.fetchone()[0])


def test_contacts_without_an_agent_are_not_in_the_agent_index(dave_customer, alice, ivr):
    now = timezone.now()
    for i in range(3):
        services.interaction_record(
            customer_id=dave_customer.pk, channel="web", direction="inbound", occurred_at=now,
            source=ivr, external_id=f"visit-{i}",
        )  # fmt: skip
    services.interaction_record(
        customer_id=dave_customer.pk, channel="phone", direction="inbound", occurred_at=now, agent=alice
    )
    assert Interaction.objects.count() == 4
    assert _entries("interaction_agent") == 1


def test_an_agents_contacts_are_found_through_the_agent_index(dave_customer, alice):
    services.interaction_record(
        customer_id=dave_customer.pk, channel="phone", direction="inbound", occurred_at=timezone.now(),
        agent=alice,
    )  # fmt: skip
    query = Interaction.objects.filter(agent__in=[alice.pk])
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan TO off")
    assert "interaction_agent" in query.explain()
    assert list(query) == list(Interaction.objects.all())
