"""The apply's statements on the inbox read what they need whatever the planner
believes of it: its statistics lag behind (thousands of results arrive and leave
the pending state between two analyses), and an equality on the status let the
planner pick a partial index of pending rows and read it whole."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection

from crm.models import TouchpointBatch, TouchpointResult
from crm.services.touchpoint_apply import _COMPLETE_BATCHES
from crm.services.touchpoint_claims import _CLAIM
from tests.touchpoint_data import apply_all, receive, visit

# VACUUM (which sets the pages and tuples the planner believes an index holds) runs
# outside a transaction.
pytestmark = pytest.mark.django_db(transaction=True)

PENDING_INDEXES = ("touchpointresult_pending", "touchpointresult_waiting_order")


def _stale_inbox(web) -> list[int]:
    """An inbox the statistics saw with nothing pending, now all pending and claimed."""
    receive(web, [visit(f"plan-{i}", f"plan{i}@example.com") for i in range(300)])
    apply_all()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE crm_touchpointresult")
    TouchpointResult.objects.update(status="pending", claimed_by="tok", applied_at=None)
    TouchpointBatch.objects.update(completed_at=None)
    return list(TouchpointResult.objects.values_list("id", flat=True)[:100])


def _plan(sql: str, params: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_a_claim_takes_its_windows_rows_through_the_primary_key(web):
    ids = _stale_inbox(web)
    plan = _plan(_CLAIM, {"ids": json.dumps(ids), "stale": "2026-01-01T00:00:00Z", "limit": 50})
    assert "Index Scan using crm_touchpointresult_pkey on crm_touchpointresult r " in plan, plan
    # The pending-order index serves the per-row probe of earlier results, nothing more.
    assert "touchpointresult_pending " not in plan and "Seq Scan" not in plan, plan


def test_a_batch_is_probed_for_pending_results_by_its_own_entries(web):
    _stale_inbox(web)
    batch_ids = list(TouchpointBatch.objects.values_list("id", flat=True))
    plan = _plan(_COMPLETE_BATCHES, {"now": "2026-01-01T00:00:00Z", "ids": batch_ids})
    assert "touchpointresult_batch_status" in plan, plan
    assert not any(name in plan for name in PENDING_INDEXES), plan
