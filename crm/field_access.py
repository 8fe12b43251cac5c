"""Who may set which customer field: one rule for the API, the staff pages and
touchpoint ingestion.

- A self-service customer: their own contact points, preferences and consents.
- An integration (a source system's user): identity, contact points and
  preferences; tier, lifetime value, status and the consents only where an
  administrator mapped the source's data onto that field (a FieldMapping whose
  target is ``customer.<field>``): those drive offers and the right to contact,
  so a source changes them only by explicit decision.
- Staff: ``crm.add_customer`` / ``crm.change_customer`` for the record, and
  ``crm.change_customer_standing`` for tier, lifetime value and status (the
  roles holding it are declared in crm.roles: supervisors and administrators).

The rule looks at the fields a caller sends, not at whether their values
differ: a form or client sends only what its user may change, and a refusal
tells the caller exactly what to leave out.
"""

from __future__ import annotations

from collections.abc import Iterable

from crm.exceptions import FieldAccessDenied
from crm.models import Customer, FieldMapping, User

IDENTITY_FIELDS = ("kind", "given_name", "family_name", "organization_name", "date_of_birth")
CONTACT_FIELDS = ("phones", "emails", "addresses")
PREFERENCE_FIELDS = ("language", "time_zone", "preferred_channel")
CONSENT_FIELDS = ("do_not_call", "do_not_email", "marketing_opt_in")
# A customer's standing with the business: what offers, priorities and service they get.
STANDING_FIELDS = ("tier", "lifetime_value", "status")

# Fields a caller may set on a customer; the rest (keys, version, timestamps) are derived.
CUSTOMER_FIELDS = (
    *IDENTITY_FIELDS, *CONTACT_FIELDS, *STANDING_FIELDS, *PREFERENCE_FIELDS, *CONSENT_FIELDS,
)  # fmt: skip

SELF_SERVICE_FIELDS = frozenset((*CONTACT_FIELDS, *PREFERENCE_FIELDS, *CONSENT_FIELDS))
INTEGRATION_FIELDS = frozenset((*IDENTITY_FIELDS, *CONTACT_FIELDS, *PREFERENCE_FIELDS))
# What an integration may set only where its source's field mapping targets it.
MAPPED_ONLY_FIELDS = (*STANDING_FIELDS, *CONSENT_FIELDS)
STANDING_PERMISSION = "crm.change_customer_standing"


def mapping_target(field: str) -> str:
    """The FieldMapping target (crm.mapping.TARGETS) naming a customer field."""
    return f"customer.{field}"


def customer_fields_writable_by(user: User, *, creating: bool = False) -> frozenset[str]:
    """The customer fields ``user`` may set: on a new customer when ``creating``,
    else on an existing one they can see."""
    if not user.is_authenticated or not user.is_active:
        return frozenset()
    if user.is_customer:
        return frozenset() if creating else SELF_SERVICE_FIELDS
    if user.is_integration:
        return INTEGRATION_FIELDS | _mapped_fields(user)
    if not user.has_perm("crm.add_customer" if creating else "crm.change_customer"):
        return frozenset()
    if user.has_perm(STANDING_PERMISSION):
        return frozenset(CUSTOMER_FIELDS)
    return frozenset(CUSTOMER_FIELDS) - set(STANDING_FIELDS)


def customer_field_refusals(
    user: User, fields: Iterable[str], *, creating: bool = False
) -> dict[str, list[str]]:
    """For each of ``fields`` that ``user`` may not set, why and what to do about it.
    Names that are not customer fields are left to the caller's own validation."""
    asked = [name for name in dict.fromkeys(fields) if name in CUSTOMER_FIELDS]
    if not asked:
        return {}
    writable = customer_fields_writable_by(user, creating=creating)
    return {name: [refusal_reason(user, name, creating=creating)] for name in asked if name not in writable}


def customer_fields_check(user: User | None, fields: Iterable[str], *, creating: bool = False) -> None:
    """Raise FieldAccessDenied naming every field of ``fields`` that ``user`` may not
    set. ``None`` is the system itself (seed data, migrations, policies), which may."""
    if user is None:
        return
    refusals = customer_field_refusals(user, fields, creating=creating)
    if refusals:
        raise FieldAccessDenied(refusals)


def refusal_reason(user: User, field: str, *, creating: bool = False) -> str:
    """Why ``user`` may not set ``field``, and how to get it set."""
    label = _label(field)
    verb = "create" if creating else "change"
    if not user.is_authenticated or not user.is_active:
        return f"You may not {verb} customers."
    if user.is_customer:
        if creating:
            return "Customers cannot create customer records: sign up through the contact center."
        return (
            f"Your {label} is kept by the contact center and cannot be changed through "
            "self-service: contact us to have it changed."
        )
    if user.is_integration:
        return (
            f"Your source system's field mapping does not include {mapping_target(field)}: "
            "ask an administrator to map it."
        )
    if not user.has_perm("crm.add_customer" if creating else "crm.change_customer"):
        return f"Your role may not {verb} customers: ask a supervisor."
    return f"Your role may not set a customer's {label}: ask a supervisor or an administrator."


def _mapped_fields(user: User) -> frozenset[str]:
    targets = {mapping_target(name): name for name in MAPPED_ONLY_FIELDS}
    mapped = FieldMapping.objects.filter(
        source_system_id=user.source_system_id, target__in=list(targets)
    ).values_list("target", flat=True)
    return frozenset(targets[target] for target in mapped)


def _label(field: str) -> str:
    return str(getattr(Customer._meta.get_field(field), "verbose_name", field))
