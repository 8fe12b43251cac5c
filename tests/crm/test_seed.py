"""The demo and bulk seed commands: coherent data, search keys equal to the services'."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.models import Count, Q
from django.test import override_settings

from crm import selectors, services
from crm.management.commands.seed_bulk import name_keys
from crm.management.sample_data import DEMO_PASSWORD, SOURCE_SYSTEMS, ensure_sample_mappings
from crm.mapping_preview import mapping_preview
from crm.models import (
    Account,
    BusinessEvent,
    Customer,
    FieldMapping,
    Household,
    ImportRejection,
    Interaction,
    Product,
    SourceSystem,
    Task,
    TouchpointResult,
    User,
)
from crm.models.choices import Channel
from crm.services.imports import FileSpec

# Hashing the seeded passwords with the production hasher takes most of a second each.
FAST_HASHER = ["django.contrib.auth.hashers.MD5PasswordHasher"]
COUNTED = (Customer, Household, Account, Product, Interaction, BusinessEvent, Task, User, SourceSystem,
           FieldMapping)  # fmt: skip
SAMPLE_FILES = Path(__file__).resolve().parents[2] / "crm" / "management" / "sample_files"
# (source, record kind, a record as the source sends it, some of what it maps to)
SAMPLE_RECORDS = [
    ("ivr", "interaction",
     {"call_id": "IVR-77", "ani": "212-555-0143", "call_start": "2026-11-20T14:05:00-05:00",
      "call_type": "IN", "exit_code": "XFER", "intent": "LOST", "menu_path": "1>4>0", "duration": "143"},
     {"interaction.channel": "ivr", "interaction.direction": "inbound",
      "interaction.disposition": "transferred", "interaction.subject": "Lost or stolen card",
      "customer.phone": "+12125550143"}),
    ("web", "customer", {"visitor_id": "WV-1", "email": "Ana@Example.net", "zip": "02108", "state": "ma",
                         "paperless_marketing": "no"},
     {"customer.external_key": "WV-1", "address.region": "MA", "customer.marketing_opt_in": "no"}),
    ("email", "interaction",
     {"recipient": "ana@example.net", "message_id": "m-1", "event_time": "2026-11-20T10:00:00Z",
      "event": "click", "campaign_id": "em-spring-save"},
     {"interaction.channel": "email", "interaction.direction": "outbound",
      "interaction.disposition": "clicked", "interaction.campaign_code": "EM-SPRING-SAVE"}),
    ("email", "customer", {"recipient": "ana@example.net", "unsubscribed": "true"},
     {"customer.marketing_opt_in": "no"}),
    ("dialer", "interaction",
     {"attempt_id": "A-9", "phone_dialed": "4155550100", "dialed_at": "2026-11-20T16:00:00Z",
      "media": "VOICE", "call_direction": "O", "result_code": "PTP", "campaign": "collections"},
     {"interaction.channel": "phone", "interaction.direction": "outbound",
      "interaction.disposition": "promise_to_pay"}),
    ("direct_mail", "interaction",
     {"piece_id": "P-1", "customer_no": "C-1", "mail_date": "2026-11-02T09:00:00-05:00", "format": "LTR",
      "status": "RESP", "campaign": "dm-heloc"},
     {"interaction.channel": "mail", "interaction.disposition": "responded",
      "interaction.campaign_code": "DM-HELOC"}),
    ("pos", "purchase", {"card_holder_id": "K-1", "amount": "1,249.99", "currency": "usd", "item": "Laptop"},
     {"purchase.amount": "1249.99", "purchase.currency": "USD"}),
    ("billing", "account",
     {"cust_id": "B-1", "acct_no": "sav-0012", "product_code": "SAV01", "status": "A",
      "open_date": "03/15/2024", "balance": "2500.00"},
     {"account.number": "SAV-0012", "account.product": "high-yield-savings", "account.status": "open",
      "account.opened_on": "2024-03-15"}),
    ("billing", "event", {"cust_id": "B-1", "txn_type": "DEP", "amount": "300", "acct_no": "sav-0012"},
     {"event.type": "account.deposit", "event.amount": "300"}),
]  # fmt: skip


def counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in COUNTED}


def run(command: str, **options: Any) -> str:
    out = io.StringIO()
    call_command(command, stdout=out, **options)
    return out.getvalue()


# --- seed_demo ---------------------------------------------------------------------------
# Building the demo set takes seconds, so one build serves every test of the class:
# it happens inside a transaction that is rolled back after the last of them.


@pytest.fixture(scope="class")
def demo(django_db_setup: None, django_db_blocker: Any) -> Iterator[str]:
    with override_settings(PASSWORD_HASHERS=FAST_HASHER), django_db_blocker.unblock(), transaction.atomic():
        output = run("seed_demo")
        yield output
        transaction.set_rollback(True)


@pytest.fixture
def demo_db(demo: str, db: None) -> str:
    return demo


class TestSeedDemo:
    def test_seed_demo_prints_a_summary_with_the_log_ins(self, demo_db):
        assert "300 customers" in demo_db
        assert "agent1" in demo_db and "supervisor" in demo_db and "admin" in demo_db
        assert f"customer / {DEMO_PASSWORD}" in demo_db

    def test_seed_demo_builds_about_300_customers_in_about_120_households(self, demo_db):
        assert Customer.objects.count() == 300
        assert Customer.objects.filter(kind="business").count() == 15
        assert 100 <= Household.objects.count() <= 140
        tiers = dict(Customer.objects.values_list("tier").annotate(n=Count("id")))
        assert tiers["standard"] > tiers["silver"] > tiers["gold"] > tiers["platinum"] > 0

    def test_every_household_has_members_and_one_head(self, demo_db):
        households = Household.objects.annotate(
            members_count=Count("members"), heads=Count("members", filter=Q(members__household_role="head"))
        )
        assert all(h.members_count >= 1 and h.heads == 1 for h in households)
        assert not Customer.objects.filter(kind="person", household__isnull=True).exists()

    def test_every_customer_has_one_to_four_accounts_and_contact_history(self, demo_db):
        customers = Customer.objects.annotate(
            n_accounts=Count("accounts", distinct=True), n_contacts=Count("interactions", distinct=True)
        )
        assert all(1 <= c.n_accounts <= 4 for c in customers)
        assert all(10 <= c.n_contacts <= 62 for c in customers)  # up to 60, plus a recent call-back
        assert Account.objects.filter(status="closed", closed_on__isnull=False).exists()

    def test_the_history_covers_every_channel_coherently(self, demo_db):
        assert set(Interaction.objects.values_list("channel", flat=True).distinct()) == set(Channel.values)
        assert not Interaction.objects.filter(channel="ivr").exclude(direction="inbound").exists()
        dialer = Interaction.objects.filter(source_system__code="dialer", channel="phone")
        assert dialer.exists() and not dialer.exclude(direction="outbound").exists()
        assert not dialer.filter(disposition="").exists()
        phone = Interaction.objects.filter(channel="phone")
        assert not phone.filter(agent__isnull=True).exists()
        assert set(phone.values_list("agent__username", flat=True).distinct()) == {
            "agent1",
            "agent2",
            "agent3",
        }
        assert not Interaction.objects.filter(
            channel__in=["web", "mail", "ivr"], agent__isnull=False
        ).exists()
        assert not Interaction.objects.filter(
            direction="outbound", channel="phone", customer__do_not_call=True
        )
        assert not Interaction.objects.filter(channel="mail", customer__marketing_opt_in=False).exclude(
            campaign_code=""
        )

    def test_every_interaction_has_its_recorded_event_and_money_moves(self, demo_db):
        assert (
            BusinessEvent.objects.filter(type="interaction.recorded").count() == Interaction.objects.count()
        )
        deposits = BusinessEvent.objects.filter(type="account.deposit")
        assert deposits.exists() and BusinessEvent.objects.filter(type="account.withdrawal").exists()
        assert all(float(e.payload["amount"]) > 0 for e in deposits)

    def test_open_call_backs_are_assigned_to_agents(self, demo_db):
        tasks = Task.objects.filter(status="open", kind="callback").select_related("assigned_to")
        assert tasks.count() == 12
        assert {t.assigned_to.username for t in tasks if t.assigned_to} == {"agent1", "agent2", "agent3"}

    def test_staff_log_ins_are_in_their_role_groups(self, demo_db):
        roles = {u.username: set(u.groups.values_list("name", flat=True)) for u in User.objects.all()}
        assert roles["agent1"] == roles["agent2"] == roles["agent3"] == {"agent"}
        assert roles["supervisor"] == {"supervisor"}
        assert roles["admin"] == {"administrator"}
        admin = User.objects.get(username="admin")
        assert admin.is_superuser and admin.is_staff and admin.check_password(DEMO_PASSWORD)
        assert User.objects.get(username="agent1").time_zone.startswith("America/")

    def test_the_self_service_log_in_sees_one_customer(self, demo_db):
        login = User.objects.get(username="customer")
        assert login.customer is not None and login.check_password(DEMO_PASSWORD)
        assert list(selectors.customers_visible_to(login)) == [login.customer]

    def test_a_demo_customer_is_found_by_the_number_as_dialled(self, demo_db):
        customer = Customer.objects.filter(kind="person").earliest("pk")
        number = customer.phones[0]["number"]  # +1AAA555XXXX
        dialled = f"({number[2:5]}) {number[5:8]}-{number[8:]}"
        assert customer in selectors.customers_by_phone(dialled)

    def test_seed_demo_adds_the_other_apps_demo_data(self, demo_db):
        # policies.demo through CRM_DEMO_SEEDERS: the offers and the example policies.
        assert "4 offers and 5 interaction policies (active)" in demo_db

    def test_every_demo_source_has_mappings_for_the_records_it_sends(self, demo_db):
        kinds = {
            code: set(
                FieldMapping.objects.filter(source_system__code=code).values_list("record_kind", flat=True)
            )
            for code, _, _ in SOURCE_SYSTEMS
        }
        assert kinds == {
            "web": {"customer", "interaction"}, "email": {"customer", "interaction"}, "ivr": {"interaction"},
            "dialer": {"customer", "interaction"}, "direct_mail": {"customer", "interaction"},
            "pos": {"purchase"}, "billing": {"account", "event"},
        }  # fmt: skip
        for mapping in FieldMapping.objects.all():
            mapping.full_clean()  # as the admin checks them

    @pytest.mark.parametrize(("code", "kind", "record", "expected"), SAMPLE_RECORDS)
    def test_a_typical_record_of_each_source_maps_onto_ours(self, demo_db, code, kind, record, expected):
        preview = mapping_preview(source=SourceSystem.objects.get(code=code), record_kind=kind,
                                  sample=json.dumps(record))  # fmt: skip
        assert preview.ok, preview.errors
        mapped = {m.target: m.value for m in preview.mapped}
        assert expected.items() <= mapped.items()

    def test_the_sample_files_import_with_the_demo_mappings(self, demo_db):
        job = services.file_import_create(
            source=SourceSystem.objects.get(code="web"), enqueue=False,
            files=[FileSpec("interaction", "web_history.csv", str(SAMPLE_FILES / "web_history.csv")),
                   FileSpec("customer", "web_customers.csv", str(SAMPLE_FILES / "web_customers.csv"))],
        )  # fmt: skip
        done = services.file_import_run(job_id=job.pk)
        assert done is not None and (done.rows_read, done.accepted, done.refused) == (41, 38, 3)
        refused = ImportRejection.objects.filter(job=job).order_by("file__position", "line")
        assert [(r.file.name, r.line, r.field) for r in refused] == [
            ("web_customers.csv", 12, "paperless_marketing"), ("web_history.csv", 8, "event_type"),
            ("web_history.csv", 20, "started_at")]  # fmt: skip

        # And the workers apply every stored row: new customers, then their visits.
        services.touchpoint_results_apply(limit=500, worker="test", budget_seconds=60)
        web = TouchpointResult.objects.filter(source_system__code="web")
        assert dict(web.values_list("status").annotate(n=Count("id"))) == {"applied": 38}
        visit = Interaction.objects.get(source_system__code="web", external_id="S-880001")
        assert (visit.channel, visit.subject, visit.customer.source_records.get().external_key) == (
            "chat",
            "Chat: mortgage pre-approval",
            "WV-100206",
        )

    def test_running_seed_demo_again_changes_nothing(self, demo_db):
        before = counts()
        assert "already there" in run("seed_demo")
        assert counts() == before
        assert ensure_sample_mappings({s.code: s for s in SourceSystem.objects.all()}) == 0

    def test_a_demo_seeded_before_the_sample_mappings_gets_them_on_the_next_run(self, demo_db):
        mappings = FieldMapping.objects.count()
        FieldMapping.objects.filter(source_system__code="ivr").delete()
        assert "added 10 sample field mappings" in run("seed_demo")
        assert FieldMapping.objects.count() == mappings


# --- seed_bulk ------------------------------------------------------------------------------

SEARCH_COLUMNS = ("display_name", "sort_name", "name_phonetic", "phone_keys", "email_keys")


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = FAST_HASHER


@pytest.fixture
def bulk(db: None) -> list[Customer]:
    run("seed_bulk", customers=300, interactions_per_customer=4, no_progress=True)
    return list(Customer.objects.order_by("pk"))


def test_seed_bulk_loads_the_counts_asked_for(bulk):
    assert len(bulk) == 300
    assert Interaction.objects.count() == 1200
    assert Account.objects.count() == 600
    assert set(SourceSystem.objects.values_list("code", flat=True)) >= {c for c, _, _ in SOURCE_SYSTEMS}
    in_households = Customer.objects.filter(household__isnull=False).count()
    assert 60 <= in_households <= 180  # 40% of 300, give or take chance
    assert not Household.objects.annotate(n=Count("members")).filter(n__lt=2).exists()
    assert all(Interaction.objects.filter(customer=c).count() == 4 for c in bulk[:20])


def test_seed_bulk_contacts_span_two_years_on_every_channel(bulk):
    interactions = Interaction.objects.all()
    assert set(interactions.values_list("channel", flat=True).distinct()) == set(Channel.values)
    assert not interactions.filter(channel="phone", agent__isnull=True).exists()
    assert not interactions.filter(channel="web", agent__isnull=False).exists()
    newest = interactions.latest("occurred_at")
    oldest = interactions.earliest("occurred_at")
    assert (newest.occurred_at - oldest.occurred_at).days > 600


def test_bulk_search_columns_equal_what_the_services_compute(bulk):
    businesses = [c for c in bulk if c.kind == "business"]
    households = [c for c in bulk if c.household_id]
    sample = [*bulk[:10], *businesses[:3], *households[:5]]
    assert businesses and households
    for loaded in sample:
        created = services.customer_create(
            kind=loaded.kind, given_name=loaded.given_name, family_name=loaded.family_name,
            organization_name=loaded.organization_name, phones=loaded.phones, emails=loaded.emails,
        )  # fmt: skip
        created.refresh_from_db()
        for column in SEARCH_COLUMNS:
            assert getattr(loaded, column) == getattr(created, column), (loaded.display_name, column)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT a.search_vector = b.search_vector, a.search_vector::text FROM crm_customer a, "
                "crm_customer b WHERE a.id = %s AND b.id = %s",
                [loaded.pk, created.pk],
            )
            same, text = cursor.fetchone()
        assert same, text


@pytest.mark.parametrize(
    ("given", "family", "organization"),
    [("José", "Núñez", ""), ("Zoë", "Lefèvre", ""), ("Li Na", "Wang", ""), ("Seamus", "O'Brien", ""),
     ("Anna", "Anna", ""), ("", "", "Okafor & Mensah CPAs"), ("Ji-woo", "Kim", "")],
)  # fmt: skip
def test_precomputed_name_keys_equal_the_services(db, given, family, organization):
    kind = "business" if organization else "person"
    customer = services.customer_create(
        kind=kind, given_name=given, family_name=family, organization_name=organization
    )
    customer.refresh_from_db()
    keys = name_keys(given, family, organization)
    assert keys.display_name == customer.display_name
    assert keys.sort_name == customer.sort_name
    assert keys.name_phonetic == "{" + ",".join(customer.name_phonetic) + "}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT search_vector = %s::tsvector FROM crm_customer WHERE id = %s",
                       [keys.search_vector, customer.pk])  # fmt: skip
        assert cursor.fetchone()[0], keys.search_vector


def test_each_bulk_customer_is_the_only_one_at_their_number(bulk):
    for customer in bulk[::30]:
        number = customer.phones[0]["number"]
        dialled = f"({number[2:5]}) {number[5:8]}-{number[8:]}"
        assert list(selectors.customers_by_phone(dialled)) == [customer]
        assert list(selectors.customers_by_phone(number)) == [customer]


def test_a_bulk_customer_is_found_by_a_misspelled_name(bulk):
    customer = next(c for c in bulk if c.kind == "person" and len(c.family_name) > 4)
    family = customer.family_name
    # Doubling a consonant keeps the sound (metaphone drops repeats) but breaks the prefix match.
    at = max(i for i, ch in enumerate(family) if ch.lower() in "bdfgklmnprstvz")
    misspelled = family[: at + 1] + family[at] + family[at + 1 :]
    query = f"{customer.given_name} {misspelled}"
    assert not selectors.customer_search(queryset=Customer.objects.filter(pk=customer.pk), q=misspelled + "x")
    assert customer in selectors.customer_search(queryset=Customer.objects.all(), q=query)


def test_running_seed_bulk_again_appends_and_moves_the_sequences(bulk):
    run("seed_bulk", customers=50, interactions_per_customer=2, accounts_per_customer=1, no_progress=True)
    assert Customer.objects.count() == 350
    assert Interaction.objects.count() == 1300
    assert Account.objects.count() == 650
    newest = max(c.pk for c in Customer.objects.only("pk"))
    created = services.customer_create(given_name="Nora", family_name="Quinn")
    assert created.pk > newest
    interaction, _ = services.interaction_record(
        customer_id=created.pk, channel="web", direction="inbound", occurred_at=created.created_at
    )
    assert interaction.pk > 1300


def _schema(tables: tuple[str, ...]) -> set[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = ANY(%s::regclass[])"
            " UNION ALL SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s)",
            [list(tables), list(tables)],
        )
        return set(cursor.fetchall())


def test_rebuilding_indexes_around_a_load_puts_every_index_and_constraint_back(db):
    tables = ("crm_household", "crm_customer", "crm_account", "crm_interaction")
    before = _schema(tables)
    assert any("FOREIGN KEY" in definition for _, definition in before)
    run("seed_bulk", customers=40, interactions_per_customer=3, rebuild_indexes="always", no_progress=True)
    assert _schema(tables) == before
    assert Interaction.objects.count() == 120


def test_seed_bulk_refuses_nonsense_arguments(db):
    with pytest.raises(CommandError, match="households-share"):
        run("seed_bulk", customers=10, interactions_per_customer=1, households_share=1.5)
    assert Customer.objects.count() == 0
