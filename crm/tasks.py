"""Celery tasks of the customer record.

Each task takes ids (JSON-serialisable, so a message never carries a stale row),
and calls one service that loads the rows and does the work. Settings run every
task with ``acks_late``: a worker that dies mid-task gets the message delivered
again, so each task here must leave the same result when it runs twice.
"""

from __future__ import annotations

import os
import socket

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from crm import services

# A database restart or fail-over drops connections; the work is idempotent,
# so retrying with backoff is safe and better than losing the message.
_TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)


@shared_task(
    name="crm.tasks.customers_reindex_search",
    acks_late=True,
    ignore_result=True,
    autoretry_for=_TRANSIENT_DB_ERRORS,
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=5,
)
def customers_reindex_search(customer_ids: list[int]) -> int:
    """Recompute the stored search keys of these customers.

    Idempotent: the keys are derived from the customer's own fields only, so a
    redelivered message writes the same values again. Ids of customers deleted
    since the message was sent are skipped."""
    return services.customers_reindex_search(customer_ids=[int(pk) for pk in customer_ids])


@shared_task(
    name="crm.tasks.api_tokens_purge_expired",
    acks_late=True,
    ignore_result=True,
    autoretry_for=_TRANSIENT_DB_ERRORS,
    retry_backoff=True,
    max_retries=3,
    # Beat sends this hourly; if workers were down for a day, one run clears
    # the backlog, so older copies may be dropped rather than run 24 times.
    expires=3600,
)
def api_tokens_purge_expired() -> int:
    """Delete API tokens that expired or were revoked long ago (idempotent)."""
    return services.api_tokens_purge_expired()


@shared_task(
    name="crm.tasks.access_log_partitions_ensure",
    acks_late=True,
    ignore_result=True,
    # A lock timeout (a long read of the log) is an OperationalError too: retry later.
    autoretry_for=_TRANSIENT_DB_ERRORS,
    retry_backoff=60,
    retry_backoff_max=3600,
    max_retries=6,
    # Beat sends this daily; a copy that waited a day is superseded by the next.
    expires=86_400,
)
def access_log_partitions_ensure() -> int:
    """Create the access log's partitions for this month and the next few
    (idempotent: months that exist are left alone)."""
    return len(services.access_log_partitions_ensure())


@shared_task(
    name="crm.tasks.business_events_dispatch",
    acks_late=True,
    ignore_result=True,
    autoretry_for=_TRANSIENT_DB_ERRORS,
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=5,
)
def business_events_dispatch(event_ids: list[int]) -> int:
    """Run the deferred listeners of these events (idempotent: an event already
    dispatched, or being dispatched by another worker, is skipped)."""
    return services.business_events_dispatch(event_ids=[int(pk) for pk in event_ids])


@shared_task(
    name="crm.tasks.business_events_sweep",
    acks_late=True,
    ignore_result=True,
    autoretry_for=_TRANSIENT_DB_ERRORS,
    max_retries=2,
    # Beat sends this every half minute; a late copy is superseded by the next.
    expires=60,
)
def business_events_sweep() -> int:
    """Send again the events a lost message or a dead worker left undispatched."""
    return services.business_events_sweep()


@shared_task(
    name="crm.tasks.touchpoint_results_apply",
    acks_late=True,
    ignore_result=True,
    autoretry_for=_TRANSIENT_DB_ERRORS,
    retry_backoff=True,
    retry_backoff_max=120,
    max_retries=10,
)
def touchpoint_results_apply(successor: bool = False) -> int:
    """Apply pending touchpoint results until none is left or the time budget is
    spent (then enqueue another run for the rest).

    Idempotent: it takes no ids but claims what is pending and not locked by
    another claim, so a redelivered or duplicated message claims other rows or none.
    Intake sends a message only when no run is queued and unstarted
    (``touchpoint_apply_enqueue``): a busy backlog makes a few messages, not one
    per batch received. A run that stops at its time budget with results left
    sends its own successor (``successor=True``), so as many runs go on as were
    going; only a run that intake asked for clears intake's mark as it starts."""
    if not successor:
        services.touchpoint_apply_started()
    applied = services.touchpoint_results_apply(
        limit=settings.CRM_INGEST_BATCH_SIZE, worker=f"{socket.gethostname()}:{os.getpid()}"
    )
    if applied and services.touchpoint_results_pending():
        services.touchpoint_apply_enqueue(successor=True)
    return applied


@shared_task(name="crm.tasks.touchpoint_results_sweep", ignore_result=True, expires=60)
def touchpoint_results_sweep() -> bool:
    """Beat, every 30 s: enqueue an apply run if results have waited over a minute."""
    return services.touchpoint_results_sweep()


@shared_task(
    name="crm.tasks.touchpoint_results_purge",
    acks_late=True,
    ignore_result=True,
    autoretry_for=_TRANSIENT_DB_ERRORS,
    retry_backoff=True,
    max_retries=3,
    # Beat sends this hourly; a copy that waited an hour is superseded by the next.
    expires=3600,
)
def touchpoint_results_purge() -> int:
    """Beat, hourly: delete applied and rejected inbox results past their retention
    (idempotent: what is gone stays gone, a run cut short is taken up by the next)."""
    return services.touchpoint_results_purge()


@shared_task(name="crm.tasks.touchpoint_signatures_prune", ignore_result=True, expires=300)
def touchpoint_signatures_prune() -> int:
    """Beat, every 5 minutes: forget request signatures too old to be replayed."""
    return services.touchpoint_signatures_prune()


# --- Legacy file imports ---------------------------------------------------------------------


@shared_task(
    name="crm.tasks.file_import_run",
    acks_late=True,
    ignore_result=True,
    autoretry_for=_TRANSIENT_DB_ERRORS,
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=10,
)
def file_import_run(job_id: int) -> None:
    """Read an import job's files into the touchpoint inbox.

    Idempotent and resumable: the job is claimed with a conditional update (a
    redelivered message finds a live worker's job taken and returns), each chunk
    commits with the job's progress, and a job whose worker died resumes after
    its last stored chunk. A large file outlives the broker's visibility timeout;
    the copy delivered then is the harmless case above."""
    services.file_import_run(job_id=int(job_id), worker=f"{socket.gethostname()}:{os.getpid()}")


@shared_task(name="crm.tasks.file_imports_sweep", ignore_result=True, expires=120)
def file_imports_sweep() -> int:
    """Beat, every minute: enqueue imports whose message was lost or whose worker died."""
    return services.file_imports_sweep()
