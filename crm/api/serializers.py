"""Shapes of the customer record on the wire (API v1)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import TextChoices
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from crm.field_access import CUSTOMER_FIELDS
from crm.models import Account, Customer, CustomerChange, Household, Interaction, Product
from crm.models.choices import (
    AddressKind,
    Channel,
    CustomerKind,
    CustomerStatus,
    Direction,
    EmailKind,
    HouseholdRole,
    PhoneKind,
    PreferredChannel,
    Tier,
)
from crm.validation import format_phone


def choice(choices: type[TextChoices], **kwargs: Any) -> serializers.ChoiceField:
    """A choice field whose error lists what is allowed."""
    allowed = ", ".join(choices.values)
    return serializers.ChoiceField(
        choices=choices.choices,
        error_messages={"invalid_choice": f"“{{input}}” is not allowed: use one of {allowed}."},
        **kwargs,
    )


class AwareDateTimeField(serializers.DateTimeField):
    """A date and time that names its zone (``Z`` or an offset), stored in UTC.

    DRF would read ``2026-03-01T09:00`` in whatever zone the request activated
    (the agent's, the server's): the same text, a different instant for each
    caller. Refused instead, saying how to write it."""

    default_error_messages = {
        "naive": "“{input}” has no time zone: add Z or an offset, e.g. 2026-03-01T14:30:00Z or +02:00."
    }

    def to_internal_value(self, value: Any) -> dt.datetime:
        if isinstance(value, str):
            parsed = parse_datetime(value.strip())
            if parsed is not None and parsed.tzinfo is None:
                self.fail("naive", input=value)
        elif isinstance(value, dt.datetime) and value.tzinfo is None:
            self.fail("naive", input=value)
        moment: dt.datetime = super().to_internal_value(value)
        return moment.astimezone(dt.UTC)


_JSON_TYPES: tuple[tuple[type[serializers.Field], tuple[type, ...], str], ...] = (
    (serializers.CharField, (str,), "text (a JSON string)"),
    (serializers.BooleanField, (bool,), "true or false"),
    (serializers.IntegerField, (int,), "a whole number"),
)


class JsonTypes:
    """Mix into a serializer of request bodies: a value of the wrong JSON type is
    refused naming the field, as the schema says, instead of being converted (DRF
    turns 123 into "123", and "yes" or 1 into true). A client that sends the
    wrong type has a bug worth hearing about."""

    fields: Any

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            errors: dict[str, list[str]] = {}
            for name, field in self.fields.items():
                value = data.get(name)
                if field.read_only or value is None or name not in data:
                    continue
                for field_class, types, words in _JSON_TYPES:
                    wrong = not isinstance(value, types) or (types == (int,) and isinstance(value, bool))
                    if isinstance(field, field_class) and wrong:
                        errors[name] = [f"Must be {words}."]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)  # type: ignore[misc]


def choice_out(choices: type[TextChoices]) -> serializers.CharField:
    """A read-only value of ``choices``, documented as an enum. A ChoiceField would
    deep-copy its choices for every serializer instance, on every screen pop."""
    field_class = extend_schema_field({"type": "string", "enum": list(choices.values)})(
        type(f"{choices.__name__}Value", (serializers.CharField,), {})
    )
    return field_class(read_only=True)  # type: ignore[no-any-return]


class PhoneSerializer(JsonTypes, serializers.Serializer):
    number = serializers.CharField(max_length=40, help_text="E.164 on output; any dialable form on input.")
    kind = choice(PhoneKind, default=PhoneKind.MOBILE)
    primary = serializers.BooleanField(default=False)


class EmailSerializer(JsonTypes, serializers.Serializer):
    address = serializers.CharField(max_length=254)
    kind = choice(EmailKind, default=EmailKind.PERSONAL)
    primary = serializers.BooleanField(default=False)


class AddressSerializer(JsonTypes, serializers.Serializer):
    kind = choice(AddressKind, default=AddressKind.HOME)
    line1 = serializers.CharField(max_length=200)
    line2 = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    city = serializers.CharField(max_length=100)
    region = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    postal_code = serializers.CharField(max_length=20, required=False, allow_blank=True, default="")
    country = serializers.CharField(max_length=2, min_length=2, help_text="ISO 3166 code, e.g. US.")


class CustomerListSerializer(serializers.ModelSerializer):
    number = serializers.CharField(read_only=True)
    primary_phone = serializers.CharField(read_only=True)
    primary_email = serializers.CharField(read_only=True)
    city = serializers.SerializerMethodField()

    class Meta:
        model = Customer
        fields = ["id", "number", "kind", "display_name", "tier", "status", "primary_phone",
                  "primary_email", "city", "household"]  # fmt: skip

    def get_city(self, customer: Customer) -> str:
        address = customer.primary_address
        return str(address.get("city", "")) if address else ""


@extend_schema_field(PhoneSerializer(many=True))
class PhonesField(serializers.JSONField):
    """Stored already normalised; rendered as is (no nested serializer per item)."""


@extend_schema_field(EmailSerializer(many=True))
class EmailsField(serializers.JSONField):
    pass


@extend_schema_field(AddressSerializer(many=True))
class AddressesField(serializers.JSONField):
    pass


class CustomerSerializer(serializers.Serializer):
    """The full record. Fields are declared, not introspected from the model: this
    renders on every screen pop, and ModelSerializer rebuilds its fields per call."""

    id = serializers.IntegerField(read_only=True)
    number = serializers.CharField(read_only=True)
    kind = choice_out(CustomerKind)
    given_name = serializers.CharField(read_only=True)
    family_name = serializers.CharField(read_only=True)
    organization_name = serializers.CharField(read_only=True)
    display_name = serializers.CharField(read_only=True)
    date_of_birth = serializers.DateField(read_only=True, allow_null=True)
    phones = PhonesField(read_only=True)
    phones_display = serializers.SerializerMethodField()
    emails = EmailsField(read_only=True)
    addresses = AddressesField(read_only=True)
    tier = choice_out(Tier)
    lifetime_value = serializers.DecimalField(max_digits=14, decimal_places=2, read_only=True)
    language = serializers.CharField(read_only=True)
    time_zone = serializers.CharField(read_only=True)
    preferred_channel = choice_out(PreferredChannel)
    do_not_call = serializers.BooleanField(read_only=True)
    do_not_email = serializers.BooleanField(read_only=True)
    marketing_opt_in = serializers.BooleanField(read_only=True)
    consents_updated_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="Null until a consent is first changed."
    )
    status = choice_out(CustomerStatus)
    household = serializers.IntegerField(source="household_id", read_only=True, allow_null=True)
    household_role = serializers.CharField(read_only=True)
    version = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_phones_display(self, customer: Customer) -> list[str]:
        return [format_phone(p["number"]) for p in customer.phones]


class CustomerWriteSerializer(JsonTypes, serializers.Serializer):
    """What a caller may send to create or change a customer; checked here for
    shape, then by crm.services for meaning (E.164, time zone, dates...)."""

    kind = choice(CustomerKind, required=False)
    given_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    family_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    organization_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    date_of_birth = serializers.DateField(required=False, allow_null=True)
    phones = PhoneSerializer(many=True, required=False)
    emails = EmailSerializer(many=True, required=False)
    addresses = AddressSerializer(many=True, required=False)
    tier = choice(Tier, required=False)
    lifetime_value = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=0, required=False)
    language = serializers.CharField(max_length=10, required=False)
    time_zone = serializers.CharField(max_length=64, required=False)
    preferred_channel = choice(PreferredChannel, required=False)
    do_not_call = serializers.BooleanField(required=False)
    do_not_email = serializers.BooleanField(required=False)
    marketing_opt_in = serializers.BooleanField(required=False)
    status = choice(CustomerStatus, required=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        # Unknown fields are reported together with malformed ones, so one round
        # trip shows the caller everything to fix. Which fields a caller may set is
        # crm.field_access's to say, before this runs.
        errors: dict[str, Any] = {}
        value: dict[str, Any] = {}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            errors.update(exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail})
        raw = data if isinstance(data, dict) else {}
        for name in sorted(set(raw) - set(self.fields)):
            errors[name] = ["Not a field of a customer."]
        if errors:
            raise serializers.ValidationError(errors)
        return value


# Fields whose changes are kept: the customer's own, and their household membership.
CHANGE_FIELDS = (*CUSTOMER_FIELDS, "household", "household_role")


class ChangeActorSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["staff", "integration", "customer"])


class CustomerChangeSerializer(serializers.Serializer):
    """One field of the record changed: by whom, through which source, when."""

    id = serializers.IntegerField(read_only=True)
    version = serializers.IntegerField(read_only=True, help_text="The record's version after the change.")
    field = serializers.CharField(read_only=True)
    old_value = serializers.JSONField(read_only=True, allow_null=True)
    new_value = serializers.JSONField(read_only=True, allow_null=True)
    actor = serializers.SerializerMethodField(help_text="Null when the system itself made the change.")
    source_system = serializers.CharField(source="source_system.code", read_only=True)
    at = serializers.DateTimeField(read_only=True)

    @extend_schema_field(ChangeActorSerializer(allow_null=True))
    def get_actor(self, change: CustomerChange) -> dict[str, Any] | None:
        actor = change.actor
        if actor is None:
            return None
        kind = "customer" if actor.is_customer else "integration" if actor.is_integration else "staff"
        return {"id": actor.pk, "username": actor.username, "name": actor.get_full_name(), "kind": kind}


class CustomerChangeQuerySerializer(serializers.Serializer):
    field = serializers.ChoiceField(
        choices=CHANGE_FIELDS, required=False, help_text="Only the changes of this field."
    )


class HouseholdMemberSerializer(serializers.ModelSerializer):
    number = serializers.CharField(read_only=True)

    class Meta:
        model = Customer
        fields = ["id", "number", "display_name", "household_role"]


class HouseholdSerializer(JsonTypes, serializers.ModelSerializer):
    members = serializers.SerializerMethodField()

    class Meta:
        model = Household
        fields = ["id", "name", "line1", "line2", "city", "region", "postal_code", "country",
                  "members", "created_at"]  # fmt: skip
        read_only_fields = ["id", "members", "created_at"]

    @extend_schema_field(HouseholdMemberSerializer(many=True))
    def get_members(self, household: Household) -> list[dict[str, Any]]:
        visible: set[int] | None = self.context.get("visible_member_ids")
        members = [m for m in household.members.all() if visible is None or m.pk in visible]
        return HouseholdMemberSerializer(members, many=True).data  # type: ignore[return-value]


class HouseholdMembershipSerializer(JsonTypes, serializers.Serializer):
    customer = serializers.IntegerField(min_value=1)
    role = choice(HouseholdRole, default=HouseholdRole.MEMBER)


class ProductSerializer(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = ["id", "code", "name", "category", "description", "active"]


class AccountSerializer(serializers.ModelSerializer):
    product = ProductSerializer(read_only=True)

    class Meta:
        model = Account
        fields = ["id", "customer", "account_number", "product", "status", "balance", "currency",
                  "opened_on", "closed_on", "updated_at"]  # fmt: skip


class InteractionSerializer(serializers.ModelSerializer):
    agent = serializers.SerializerMethodField()
    source_system = serializers.CharField(source="source_system.code", read_only=True)

    class Meta:
        model = Interaction
        fields = ["id", "customer", "channel", "direction", "occurred_at", "agent", "campaign_code",
                  "disposition", "subject", "notes", "duration_seconds", "script_run_id", "source_system",
                  "external_id"]  # fmt: skip

    @extend_schema_field(
        serializers.CharField(allow_null=True, help_text="Null for a contact without an agent.")
    )
    def get_agent(self, interaction: Interaction) -> str | None:
        agent = interaction.agent
        return (agent.get_full_name() or agent.username) if agent else None


class SelfServiceInteractionSerializer(serializers.ModelSerializer):
    """A customer's view of their own history: no internal notes, no agent names."""

    class Meta:
        model = Interaction
        fields = ["id", "channel", "direction", "occurred_at", "subject", "duration_seconds"]


class InteractionCreateSerializer(JsonTypes, serializers.Serializer):
    channel = choice(Channel)
    direction = choice(Direction)
    occurred_at = AwareDateTimeField()
    external_id = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    campaign_code = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    disposition = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    subject = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    notes = serializers.CharField(required=False, allow_blank=True, default="")
    duration_seconds = serializers.IntegerField(min_value=0, required=False, allow_null=True)


class CustomerSearchQuerySerializer(serializers.Serializer):
    q = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="A name (two letters at least; typos, swapped letters and accents forgiven) "
        "or a customer number such as C-0000123.",
    )
    phone = serializers.CharField(
        required=False, allow_blank=True, help_text="A phone number, E.164 or as dialled."
    )
    email = serializers.CharField(required=False, allow_blank=True)
    account_number = serializers.CharField(required=False, allow_blank=True)
    source_key = serializers.CharField(
        required=False, allow_blank=True, help_text="A source system's own key: <code>:<key>, e.g. ivr:48213."
    )


class TimelineQuerySerializer(serializers.Serializer):
    channel = serializers.CharField(required=False, help_text="One channel or a comma-separated list.")
    since = AwareDateTimeField(required=False, help_text="Contacts at or after this time (with its zone).")
    until = AwareDateTimeField(required=False, help_text="Contacts before this time (with its zone).")

    def validate_channel(self, value: str) -> list[str]:
        channels = [c.strip() for c in value.split(",") if c.strip()]
        bad = [c for c in channels if c not in Channel.values]
        if bad:
            raise serializers.ValidationError(
                f"Unknown channel {', '.join(bad)}: use {', '.join(Channel.values)}."
            )
        return channels

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("since") and attrs.get("until") and attrs["since"] >= attrs["until"]:
            raise serializers.ValidationError({"until": "Must be after since."})
        return attrs


class ErrorSerializer(serializers.Serializer):
    """What went wrong and what to do instead."""

    detail = serializers.CharField()


class TokenRequestSerializer(JsonTypes, serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)


class TokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    kind = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())
    customer = serializers.IntegerField(allow_null=True)
    source_system = serializers.CharField(allow_null=True)
    time_zone = serializers.CharField()
