"""Every write to the customer record, one module per concept.

Plain functions with keyword-only arguments, each in one transaction; views,
the API, tasks, consumers and management commands all call these through this
package (``services.customer_update(...)``). A function that a person's input
reaches raises ``ValidationError`` naming the field and the fix, and writes
nothing when it does.
"""

from __future__ import annotations

from crm.services.access import access_log_record
from crm.services.access_partitions import (
    access_log_partitions,
    access_log_partitions_ensure,
    access_log_retention_apply,
    access_log_retention_cutoff,
)
from crm.services.accounts import account_close, account_open
from crm.services.customers import (
    CONSENT_FIELDS,
    CUSTOMER_FIELDS,
    customer_create,
    customer_search_fields,
    customer_update,
    customer_version_save,
    customers_reindex_search,
)
from crm.services.event_dispatch import (
    business_events_dispatch,
    business_events_sweep,
    events_dispatch_on_commit,
)
from crm.services.events import business_event_record, business_events_record_new
from crm.services.history import interaction_record, task_create, task_set_status, tasks_escalate_overdue
from crm.services.households import household_add_member, household_create, household_remove_member
from crm.services.imports import (
    FileSpec,
    file_import_create,
    file_import_report_rows,
    file_import_report_write,
    file_import_run,
    file_imports_sweep,
)
from crm.services.logins import (
    Lockout,
    client_address,
    login_entry_point,
    login_failure_record,
    login_lockout_find,
    login_lockout_of,
    login_lockout_remember,
    login_success_record,
)
from crm.services.sources import (
    CRM_SOURCE_CODE,
    crm_source,
    source_record_link,
    source_records_seen,
    source_system_create,
)
from crm.services.tokens import (
    api_token_create,
    api_token_lifetime,
    api_token_revoke,
    api_tokens_purge_expired,
    api_tokens_revoke,
    customer_login_create,
    staff_user_create,
)
from crm.services.touchpoint_apply import (
    touchpoint_results_apply,
    touchpoint_results_overdue,
    touchpoint_results_pending,
    touchpoint_results_sweep,
)
from crm.services.touchpoint_purge import touchpoint_results_purge, touchpoint_retention_cutoff
from crm.services.touchpoint_review import (
    touchpoint_results_retry,
    touchpoint_review_attach,
    touchpoint_review_create_new,
)
from crm.services.touchpoints import (
    MAX_BATCH_ITEMS,
    touchpoint_apply_enqueue,
    touchpoint_apply_started,
    touchpoint_batch_receive,
    touchpoint_signature_remember,
    touchpoint_signatures_prune,
)

__all__ = [
    "CONSENT_FIELDS",
    "CRM_SOURCE_CODE",
    "CUSTOMER_FIELDS",
    "MAX_BATCH_ITEMS",
    "FileSpec",
    "Lockout",
    "access_log_partitions",
    "access_log_partitions_ensure",
    "access_log_record",
    "access_log_retention_apply",
    "access_log_retention_cutoff",
    "account_close",
    "account_open",
    "api_token_create",
    "api_token_lifetime",
    "api_token_revoke",
    "api_tokens_purge_expired",
    "api_tokens_revoke",
    "business_event_record",
    "business_events_dispatch",
    "business_events_record_new",
    "business_events_sweep",
    "client_address",
    "crm_source",
    "customer_create",
    "customer_login_create",
    "customer_search_fields",
    "customer_update",
    "customer_version_save",
    "customers_reindex_search",
    "events_dispatch_on_commit",
    "file_import_create",
    "file_import_report_rows",
    "file_import_report_write",
    "file_import_run",
    "file_imports_sweep",
    "household_add_member",
    "household_create",
    "household_remove_member",
    "interaction_record",
    "login_entry_point",
    "login_failure_record",
    "login_lockout_find",
    "login_lockout_of",
    "login_lockout_remember",
    "login_success_record",
    "source_record_link",
    "source_records_seen",
    "source_system_create",
    "staff_user_create",
    "task_create",
    "task_set_status",
    "tasks_escalate_overdue",
    "touchpoint_apply_enqueue",
    "touchpoint_apply_started",
    "touchpoint_batch_receive",
    "touchpoint_results_apply",
    "touchpoint_results_overdue",
    "touchpoint_results_pending",
    "touchpoint_results_purge",
    "touchpoint_results_retry",
    "touchpoint_results_sweep",
    "touchpoint_retention_cutoff",
    "touchpoint_review_attach",
    "touchpoint_review_create_new",
    "touchpoint_signature_remember",
    "touchpoint_signatures_prune",
]
