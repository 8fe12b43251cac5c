"""The customer record and its shared vocabulary.

Every source system is mapped onto these definitions: customer, household,
account, product, interaction (contact history) and business event.
"""

from __future__ import annotations

from crm.models.audit import AccessLogEntry
from crm.models.changes import CustomerChange
from crm.models.customers import Customer, Household
from crm.models.history import BusinessEvent, Interaction, Task
from crm.models.holdings import Account, Product
from crm.models.imports import FileImport, ImportFile, ImportRejection, ImportStatus
from crm.models.security import LockoutScope, LoginEntryPoint, LoginLockout
from crm.models.sources import FieldMapping, SourceRecord, SourceSystem
from crm.models.touchpoints import SeenSignature, TouchpointBatch, TouchpointResult
from crm.models.users import ApiToken, User

__all__ = [
    "AccessLogEntry",
    "Account",
    "ApiToken",
    "BusinessEvent",
    "Customer",
    "CustomerChange",
    "FieldMapping",
    "FileImport",
    "Household",
    "ImportFile",
    "ImportRejection",
    "ImportStatus",
    "Interaction",
    "LockoutScope",
    "LoginEntryPoint",
    "LoginLockout",
    "Product",
    "SeenSignature",
    "SourceRecord",
    "SourceSystem",
    "Task",
    "TouchpointBatch",
    "TouchpointResult",
    "User",
]
