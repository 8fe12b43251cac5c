"""The statements one claimed batch costs: a fixed number, whatever its size."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crm import services
from crm.models import Interaction, TouchpointResult
from tests.conftest import make_customer
from tests.touchpoint_data import apply_all, profile, receive, visit

pytestmark = pytest.mark.django_db

STATEMENTS = 54


def _keyed_results(web, n: int, prefix: str) -> list[dict]:
    """Visits and profile changes of ``n`` customers the source keyed before."""
    items = []
    for i in range(n):
        customer = make_customer(emails=[], phones=[])
        services.source_record_link(source=web, external_key=f"{prefix}{i}", customer_id=customer.pk)
        items.append(visit(f"{prefix}-v{i}", "", key=f"{prefix}{i}"))
        items.append(profile(f"{prefix}-p{i}", f"{prefix}{i}", tier="G"))
    return items


def _statements_to_apply(web, n: int, prefix: str) -> int:
    receive(web, _keyed_results(web, n, prefix))
    with CaptureQueriesContext(connection) as queries:
        applied = apply_all()
    assert applied == 2 * n
    return len(queries.captured_queries)


def test_a_claimed_batch_costs_the_same_statements_for_4_results_or_40(web):
    _statements_to_apply(web, 1, "W")  # the policies' index loads once per process
    small = _statements_to_apply(web, 2, "A")
    large = _statements_to_apply(web, 20, "B")
    assert small == large
    # Two claims (a key's profile change waits for its visit) and a last, empty one.
    # Each: the settings and the claim's lock, the window after the position the
    # claims read to and, the claim being short, the window before it, the claim, the planner's
    # settings back (no commit of its own, no second lock), the keys looked up and marked seen in
    # one statement, contacts, their events (each insert in a savepoint: a plain insert,
    # the one that skips repeats only if it meets one; no policy listens to them: the engine's
    # listener reads nothing), (profile rows locked, updated, their history, orders
    # and events), the outcomes, the batch, with their savepoints and settings.
    assert large == STATEMENTS, large
    assert Interaction.objects.filter(external_id__startswith="B-v").count() == 20
    assert not TouchpointResult.objects.exclude(status="applied").exists()
