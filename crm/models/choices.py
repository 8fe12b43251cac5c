"""Enumerations shared by models, validation, the API and the seed data."""

from __future__ import annotations

from django.db import models


class CustomerKind(models.TextChoices):
    PERSON = "person", "Person"
    BUSINESS = "business", "Business"


class Tier(models.TextChoices):
    STANDARD = "standard", "Standard"
    SILVER = "silver", "Silver"
    GOLD = "gold", "Gold"
    PLATINUM = "platinum", "Platinum"


class CustomerStatus(models.TextChoices):
    PROSPECT = "prospect", "Prospect"
    ACTIVE = "active", "Active"
    INACTIVE = "inactive", "Inactive"
    CLOSED = "closed", "Closed"
    DECEASED = "deceased", "Deceased"


class Channel(models.TextChoices):
    PHONE = "phone", "Phone"
    EMAIL = "email", "E-mail"
    SMS = "sms", "SMS"
    WEB = "web", "Web"
    CHAT = "chat", "Chat"
    IVR = "ivr", "IVR"
    MAIL = "mail", "Direct mail"
    BRANCH = "branch", "Branch"
    POS = "pos", "Point of sale"


class PreferredChannel(models.TextChoices):
    PHONE = "phone", "Phone"
    EMAIL = "email", "E-mail"
    SMS = "sms", "SMS"
    WEB = "web", "Web"
    MAIL = "mail", "Mail"
    BRANCH = "branch", "Branch"


class Direction(models.TextChoices):
    INBOUND = "inbound", "Inbound"
    OUTBOUND = "outbound", "Outbound"


class HouseholdRole(models.TextChoices):
    HEAD = "head", "Head of household"
    PARTNER = "partner", "Partner"
    DEPENDENT = "dependent", "Dependent"
    MEMBER = "member", "Member"


class AccountStatus(models.TextChoices):
    OPEN = "open", "Open"
    DORMANT = "dormant", "Dormant"
    CLOSED = "closed", "Closed"


class ProductCategory(models.TextChoices):
    CHECKING = "checking", "Checking"
    SAVINGS = "savings", "Savings"
    CARD = "card", "Credit card"
    MORTGAGE = "mortgage", "Mortgage"
    LOAN = "loan", "Loan"
    INVESTMENT = "investment", "Investment"
    INSURANCE = "insurance", "Insurance"
    SERVICE = "service", "Service"


class SourceKind(models.TextChoices):
    WEB = "web", "Web site"
    EMAIL = "email", "E-mail platform"
    IVR = "ivr", "IVR"
    DIALER = "dialer", "Dialer"
    DIRECT_MAIL = "direct_mail", "Direct mail"
    POS = "pos", "Point of sale"
    BILLING = "billing", "Billing"
    CORE = "core", "Core system"
    CRM = "crm", "This CRM"


class RecordKind(models.TextChoices):
    """What one touchpoint result describes; each kind has its own field mappings."""

    CUSTOMER = "customer", "Customer profile"
    ACCOUNT = "account", "Account"
    PURCHASE = "purchase", "Purchase"
    INTERACTION = "interaction", "Contact (interaction)"
    EVENT = "event", "Business event"


class ResultStatus(models.TextChoices):
    """Where a touchpoint result stands in the inbox."""

    PENDING = "pending", "Waiting to be applied"
    APPLIED = "applied", "Applied"
    REJECTED = "rejected", "Rejected (its data cannot be applied)"
    REVIEW = "review", "Waiting for review (several customers match)"
    DEAD = "dead", "Dead-lettered (attempts exhausted)"


class BatchOrigin(models.TextChoices):
    API = "api", "API"
    FILE = "file", "File import"


class TaskStatus(models.TextChoices):
    OPEN = "open", "Open"
    IN_PROGRESS = "in_progress", "In progress"
    DONE = "done", "Done"
    CANCELLED = "cancelled", "Cancelled"


class TaskKind(models.TextChoices):
    CALLBACK = "callback", "Call back"
    FOLLOW_UP = "follow_up", "Follow up"
    SALES_CALL = "sales_call", "Sales call"
    SERVICE = "service", "Service request"


class PhoneKind(models.TextChoices):
    MOBILE = "mobile", "Mobile"
    HOME = "home", "Home"
    WORK = "work", "Work"
    OTHER = "other", "Other"


class EmailKind(models.TextChoices):
    PERSONAL = "personal", "Personal"
    WORK = "work", "Work"
    OTHER = "other", "Other"


class AddressKind(models.TextChoices):
    HOME = "home", "Home"
    MAILING = "mailing", "Mailing"
    WORK = "work", "Work"
    BILLING = "billing", "Billing"


class AccessChannel(models.TextChoices):
    PAGE = "page", "Page"
    API = "api", "API"
    EXPORT = "export", "Export"
    ADMIN = "admin", "Admin"
