"""A small, coherent demo data set: ``manage.py seed_demo``.

About 300 customers in about 120 households, their accounts, two years of
contact history on every channel, money movements, a few open call-backs, the
staff log-ins printed by ``make demo`` and one self-service log-in. The random
seed is fixed, so every machine gets the same people (dates are relative to
today). Customers, households, accounts, users and source systems go through
``crm.services`` so their search keys and events are what production writes;
the history is bulk-inserted because there are some ten thousand rows of it.

Running it again on a seeded database changes nothing.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import unicodedata
import zoneinfo
from argparse import ArgumentParser
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from crm import events, services
from crm.management.sample_data import (
    BUSINESSES,
    CITIES,
    CONTACT_KINDS,
    DEMO_PASSWORD,
    EMAIL_DOMAINS,
    NAME_POOLS,
    PRODUCTS,
    PRODUCTS_BY_CODE,
    STREET_KINDS,
    STREETS,
    City,
    ContactKind,
    NamePool,
    check_pools,
    ensure_sample_mappings,
    ensure_sources_and_products,
)
from crm.models import Account, BusinessEvent, Customer, Interaction, SourceSystem, User
from crm.models.choices import AccountStatus, TaskKind

SEED = 20_240_601
PERSONS = 285
HISTORY_DAYS = 730
CALLBACKS = 12

# (username, first name, last name, role, time zone)
STAFF: tuple[tuple[str, str, str, str, str], ...] = (
    ("agent1", "Maria", "Lopez", "agent", "America/New_York"),
    ("agent2", "James", "Carter", "agent", "America/Chicago"),
    ("agent3", "Priya", "Raman", "agent", "America/Denver"),
    ("supervisor", "Dana", "Whitfield", "supervisor", "America/Los_Angeles"),
    ("admin", "Sam", "Okoye", "administrator", "America/New_York"),
)
CUSTOMER_LOGIN = "customer"
DEMO_USERNAMES = (*(s[0] for s in STAFF), CUSTOMER_LOGIN)

# Relative frequencies; en-heavy like the US customer base of a regional bank.
POOL_WEIGHTS = (30, 18, 12, 7, 5, 7, 4, 7, 10)
HOUSEHOLD_SIZES = ((1, 30), (2, 36), (3, 20), (4, 14))
TIERS = (("standard", 70), ("silver", 18), ("gold", 9), ("platinum", 3))
LIFETIME_VALUE = {"standard": (200, 8_000), "silver": (8_000, 30_000), "gold": (30_000, 120_000),
                  "platinum": (120_000, 900_000)}  # fmt: skip
PREFERRED_CHANNELS = (("phone", 35), ("email", 30), ("web", 20), ("sms", 10), ("mail", 3), ("branch", 2))
# Local hours a contact on each channel happens in (customers sleep; mail houses keep office hours).
CHANNEL_HOURS = {"web": (7, 23), "email": (7, 22), "sms": (9, 19), "mail": (9, 17), "pos": (8, 21)}
OFFICE_HOURS = (8, 19)


def weighted(rng: random.Random, pairs: tuple[tuple[Any, int], ...]) -> Any:
    return rng.choices([v for v, _ in pairs], weights=[w for _, w in pairs])[0]


def ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text)
    return "".join(c for c in folded if c.isascii() and c.isalnum()).lower()


@dataclass
class Person:
    """A customer as planned, before it is written."""

    fields: dict[str, Any]
    role: str = ""
    customer: Customer | None = None


@dataclass
class Plan:
    """What the run wrote, for the summary and the next steps."""

    customers: list[Customer] = field(default_factory=list)
    households: int = 0
    accounts: list[Account] = field(default_factory=list)
    interactions: int = 0
    events: int = 0
    callbacks: int = 0
    mappings: int = 0
    login: User | None = None


class Command(BaseCommand):
    help = "Load the demo data set (fixed random seed); does nothing if it is already there."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--seed", type=int, default=SEED, help=f"Random seed (default {SEED}).")

    def handle(self, *args: Any, seed: int, **options: Any) -> None:
        found = User.objects.filter(username__in=DEMO_USERNAMES).values_list("username", flat=True).first()
        if found is not None:
            # A demo seeded by an earlier release gets what it lacks: the sample
            # mappings, and the demo data of the apps built on crm (each idempotent).
            with transaction.atomic():
                mappings = ensure_sample_mappings(ensure_sources_and_products())
                added = _other_apps_demo_data()
            if mappings:
                self.stdout.write(f"The demo data is already there (user “{found}” exists); added {mappings} "
                                  "sample field mappings of the touchpoint systems.")  # fmt: skip
                if added:
                    self.stdout.write("Added what the other apps were missing:\n" + "\n".join(added))
                return
            self.stdout.write(f"The demo data is already there (user “{found}” exists); nothing changed.")
            if added:
                self.stdout.write("Added what the other apps were missing:\n" + "\n".join(added))
            return
        check_pools()
        started = time.monotonic()
        # One transaction: a failure half-way leaves the database as it was, and
        # the next run starts from scratch instead of tripping over half the users.
        with transaction.atomic():
            plan = DemoBuilder(random.Random(seed), timezone.now()).build()
            added = _other_apps_demo_data()
        self._summary(plan, time.monotonic() - started, added)

    def _summary(self, plan: Plan, seconds: float, added: list[str]) -> None:
        people = sum(1 for c in plan.customers if c.kind == "person")
        closed = sum(1 for a in plan.accounts if a.status == AccountStatus.CLOSED)
        login = plan.login.customer if plan.login else None
        lines = [
            self.style.SUCCESS(f"Demo data created in {seconds:.1f} s:"),
            f"  {len(plan.customers)} customers ({people} people, {len(plan.customers) - people} businesses)"
            f" in {plan.households} households",
            f"  {len(PRODUCTS)} products, {len(plan.accounts)} accounts ({closed} closed)",
            f"  {plan.mappings} field mappings of the touchpoint systems (admin: Source systems; try a file"
            " from crm/management/sample_files/ in File imports)",
            f"  {plan.interactions:,} interactions over two years, {plan.events:,} business events,"
            f" {plan.callbacks} open call-backs",
            f"  Staff log-ins (password {DEMO_PASSWORD}): agent1, agent2, agent3 (agents),"
            " supervisor, admin (administrator, superuser)",
            f"  Self-service log-in: {CUSTOMER_LOGIN} / {DEMO_PASSWORD}"
            f" ({login.display_name if login else '?'}, {login.number if login else '?'})",
        ]
        self.stdout.write("\n".join(lines + added))


def _other_apps_demo_data() -> list[str]:
    """Demo data of the apps built on crm (the policies' offers and rules), named as
    dotted paths in CRM_DEMO_SEEDERS: crm imports no other app. Each returns the
    lines it adds to the summary."""
    lines: list[str] = []
    for path in getattr(settings, "CRM_DEMO_SEEDERS", []):
        lines.extend(import_string(path)())
    return lines


class DemoBuilder:
    def __init__(self, rng: random.Random, now: dt.datetime) -> None:
        self.rng = rng
        self.now = now
        self.today = now.date()
        self.plan = Plan()
        self.used_phones: set[str] = set()
        self.used_emails: set[str] = set()
        self.used_accounts: set[str] = set()
        self.agents: list[User] = []
        self.sources: dict[str, SourceSystem] = {}

    def build(self) -> Plan:
        self._staff()
        self._sources_and_products()
        crm = services.crm_source()
        for person in self._persons():
            self._create(person, crm)
        for business in self._businesses():
            self._create(business, crm)
        for customer in self.plan.customers:
            self._accounts(customer)
        self._history_and_callbacks()
        self._self_service_login()
        return self.plan

    # --- People who log in, and the systems that send data -------------------------------

    def _staff(self) -> None:
        for username, first, last, role, tz in STAFF:
            # The demo admin is a superuser: the whole Django admin, users and groups too.
            user = services.staff_user_create(
                username=username, password=DEMO_PASSWORD, role=role, first_name=first, last_name=last,
                email=f"{username}@bank.example.com", time_zone=tz, superuser=role == "administrator",
            )  # fmt: skip
            if role == "agent":
                self.agents.append(user)

    def _sources_and_products(self) -> None:
        self.sources = ensure_sources_and_products()
        self.plan.mappings = ensure_sample_mappings(self.sources)

    # --- Customers and households --------------------------------------------------------

    def _persons(self) -> list[Person]:
        """Households of one to four at one address; every person belongs to one."""
        rng = self.rng
        persons: list[Person] = []
        while len(persons) < PERSONS:
            pool = rng.choices(NAME_POOLS, weights=POOL_WEIGHTS)[0]
            city = rng.choice(CITIES)
            address = self._address(city, "home")
            size = min(weighted(rng, HOUSEHOLD_SIZES), PERSONS - len(persons))
            family = rng.choice(pool.family)
            household = services.household_create(
                name=f"The {family} household", line1=address["line1"], line2=address["line2"],
                city=city.name, region=city.region, postal_code=address["postal_code"], country="US",
            )  # fmt: skip
            self.plan.households += 1
            tier = weighted(rng, TIERS)
            home_phone = self._phone(city) if size > 1 and rng.random() < 0.3 else None
            members: list[Person] = []
            for index in range(size):
                role = "head" if index == 0 else "partner" if index == 1 else "dependent"
                member_pool, member_family = pool, family
                if role == "partner" and rng.random() < 0.25:
                    # Kept their own name, sometimes from another background.
                    member_pool = rng.choices(NAME_POOLS, weights=POOL_WEIGHTS)[0]
                    member_family = rng.choice(member_pool.family)
                person = self._person(
                    member_pool,
                    member_family,
                    city,
                    address=address,
                    role=role,
                    tier=tier,
                    home_phone=home_phone,
                )
                person.fields["household"] = household
                members.append(person)
            persons.extend(members)
        return persons

    def _person(
        self, pool: NamePool, family: str, city: City, *, address: dict[str, str], role: str, tier: str,
        home_phone: str | None,
    ) -> Person:  # fmt: skip
        rng = self.rng
        given = rng.choice(pool.female if rng.random() < 0.5 else pool.male)
        age = rng.randint(16, 24) if role == "dependent" else rng.randint(25, 86)
        born = self.today - dt.timedelta(days=age * 365 + rng.randint(0, 364))
        # People keep their mobile number when they move: some area codes are from elsewhere.
        phones = [{"number": self._phone(city if rng.random() < 0.85 else rng.choice(CITIES)),
                   "kind": "mobile", "primary": True}]  # fmt: skip
        if home_phone and role != "dependent":
            phones.append({"number": home_phone, "kind": "home", "primary": False})
        emails = [{"address": self._email(given, family), "kind": "personal", "primary": True}]
        if role != "dependent" and rng.random() < 0.15:
            emails.append(
                {"address": self._email(given, family, work=True), "kind": "work", "primary": False}
            )
        if role == "dependent":
            tier = "standard"
        low, high = LIFETIME_VALUE[tier]
        marketing = rng.random() < 0.55
        fields: dict[str, Any] = {
            "kind": "person",
            "given_name": given,
            "family_name": family,
            "date_of_birth": born,
            "phones": phones,
            "emails": emails,
            "addresses": [address],
            "tier": tier,
            "lifetime_value": Decimal(rng.randint(low * 100, high * 100)) / 100,
            "language": pool.language if pool.language != "en" and rng.random() < 0.5 else "en",
            "time_zone": city.time_zone,
            "preferred_channel": weighted(rng, PREFERRED_CHANNELS),
            "do_not_call": rng.random() < 0.07,
            "do_not_email": rng.random() < 0.05,
            "marketing_opt_in": marketing,
            "status": "inactive" if rng.random() < 0.04 else "active",
        }
        return Person(fields, role=role)

    def _businesses(self) -> list[Person]:
        rng = self.rng
        result = []
        for name, label in BUSINESSES:
            city = rng.choice(CITIES)
            tier = weighted(rng, (("standard", 30), ("silver", 40), ("gold", 25), ("platinum", 5)))
            low, high = LIFETIME_VALUE[tier]
            fields: dict[str, Any] = {
                "kind": "business",
                "organization_name": name,
                "phones": [{"number": self._phone(city), "kind": "work", "primary": True}],
                "emails": [{"address": f"info@{label}.example.com", "kind": "work", "primary": True}],
                "addresses": [self._address(city, "work"), self._address(city, "billing")],
                "tier": tier,
                "lifetime_value": Decimal(rng.randint(low * 100, high * 100)) / 100,
                "time_zone": city.time_zone,
                "preferred_channel": weighted(rng, (("email", 50), ("phone", 40), ("branch", 10))),
                "marketing_opt_in": rng.random() < 0.6,
            }
            result.append(Person(fields))
        return result

    def _create(self, person: Person, crm: SourceSystem) -> None:
        fields = dict(person.fields)
        household = fields.pop("household", None)
        person.customer = services.customer_create(
            source=crm, household=household, household_role=person.role if household else "", **fields
        )
        self.plan.customers.append(person.customer)

    def _address(self, city: City, kind: str) -> dict[str, str]:
        rng = self.rng
        return {
            "kind": kind,
            "line1": f"{rng.randint(10, 9899)} {rng.choice(STREETS)} {rng.choice(STREET_KINDS)}",
            "line2": f"Apt {rng.randint(1, 24)}{rng.choice('ABCD')}" if rng.random() < 0.2 else "",
            "city": city.name,
            "region": city.region,
            "postal_code": f"{city.zip_prefix}{rng.randint(1, 99):02d}",
            "country": "US",
        }

    def _phone(self, city: City) -> str:
        """A unique number in the 555-01XX range reserved for fiction, as people type it."""
        # Only 100 such numbers per area code: when a city's run out, borrow a neighbour's.
        for area_code in (city.area_code, *(c.area_code for c in CITIES)):
            free = [n for n in range(100, 200) if f"({area_code}) 555-{n:04d}" not in self.used_phones]
            if free:
                national = f"({area_code}) 555-{self.rng.choice(free):04d}"
                self.used_phones.add(national)
                return national
        raise RuntimeError("The fictional 555-01XX numbers of every area code are used up.")

    def _email(self, given: str, family: str, *, work: bool = False) -> str:
        rng = self.rng
        first, last = ascii_slug(given), ascii_slug(family)
        domain = "work.example.com" if work else rng.choice(EMAIL_DOMAINS)
        candidates = [f"{first}.{last}", f"{first[0]}{last}", f"{first}{last}{rng.randint(1, 99)}"]
        for local in candidates:
            address = f"{local}@{domain}"
            if address not in self.used_emails:
                self.used_emails.add(address)
                return address
        address = f"{first}.{last}.{len(self.used_emails)}@{domain}"
        self.used_emails.add(address)
        return address

    # --- Accounts ------------------------------------------------------------------------

    def _accounts(self, customer: Customer) -> None:
        rng = self.rng
        codes = self._products_for(customer)
        closing = customer.status == "inactive"
        for position, code in enumerate(codes):
            spec = PRODUCTS_BY_CODE[code]
            opened = self.today - dt.timedelta(days=rng.randint(400, 15 * 365))
            if customer.date_of_birth:
                opened = max(opened, customer.date_of_birth + dt.timedelta(days=16 * 365))
            close = closing or (position > 0 and rng.random() < 0.08)
            low, high = spec.balance
            balance = Decimal(rng.randint(low * 100, high * 100)) / 100 if not close else Decimal("0.00")
            account = services.account_open(
                customer_id=customer.pk, product_code=code, account_number=self._account_number(spec.prefix),
                opened_on=opened, balance=balance, source=self.sources["pos"],
            )  # fmt: skip
            if close:
                closed_on = self.today - dt.timedelta(days=rng.randint(30, 700))
                account = services.account_close(account_id=account.pk, closed_on=max(closed_on, opened))
            self.plan.accounts.append(account)
        # A customer since their first account, not since the day the demo was loaded.
        first = min(a.opened_on for a in self.plan.accounts if a.customer_id == customer.pk)
        since = dt.datetime.combine(first, dt.time(12), tzinfo=dt.UTC)
        Customer.objects.filter(pk=customer.pk).update(created_at=since, updated_at=since)

    def _products_for(self, customer: Customer) -> list[str]:
        rng = self.rng
        if customer.kind == "business":
            codes = ["business-checking"]
            codes += [c for c, p in (("cash-back-card", 0.5), ("auto-loan", 0.2), ("personal-loan", 0.15))
                      if rng.random() < p]  # fmt: skip
            return codes[:4]
        if customer.household_role == "dependent":
            return ["high-yield-savings"] + (["everyday-checking"] if rng.random() < 0.5 else [])
        wealthy = customer.tier in ("gold", "platinum")
        codes = ["premier-checking" if wealthy and rng.random() < 0.7 else "everyday-checking"]
        odds = [
            ("high-yield-savings", 0.6), ("cash-back-card", 0.4),
            ("travel-rewards-card", 0.45 if wealthy else 0.15),
            ("mortgage-30-fixed", 0.3 if customer.household_role == "head" else 0.05), ("auto-loan", 0.15),
            ("personal-loan", 0.07), ("managed-portfolio", 0.6 if wealthy else 0.03), ("term-life-20", 0.12),
        ]  # fmt: skip
        codes += [code for code, p in odds if rng.random() < p]
        if "mortgage-30-fixed" in codes and rng.random() < 0.8:
            codes.append("homeowners-insurance")
        return codes[:4]

    def _account_number(self, prefix: str) -> str:
        while True:
            number = f"{prefix}-{self.rng.randint(10_000_000, 99_999_999)}"
            if number not in self.used_accounts:
                self.used_accounts.add(number)
                return number

    # --- Contact history, money movements and call-backs -----------------------------------

    def _history_and_callbacks(self) -> None:
        rng = self.rng
        interactions: list[Interaction] = []
        external_ids: Counter[str] = Counter()
        for customer in self.plan.customers:
            kinds = [k for k in CONTACT_KINDS if self._may_contact(customer, k)]
            weights = [k.weight for k in kinds]
            count = rng.randint(10, 40) + {"silver": 5, "gold": 10, "platinum": 20}.get(customer.tier, 0)
            # An inactive customer's history stops when they left, months ago.
            latest = 180 if customer.status == "inactive" else 1
            for kind in rng.choices(kinds, weights=weights, k=min(count, 60)):
                day = self.today - dt.timedelta(days=rng.randint(latest, HISTORY_DAYS))
                interactions.append(self._interaction(customer, kind, day, external_ids))
        # Call-backs the agents promised in the last few days, each with its task.
        eligible = [c for c in self.plan.customers
                    if c.status == "active" and c.phones and not c.do_not_call]  # fmt: skip
        promises = [k for k in CONTACT_KINDS if k.follow_up and not k.marketing]
        callbacks: list[tuple[Interaction, ContactKind]] = []
        for index, customer in enumerate(rng.sample(eligible, CALLBACKS)):
            kind = rng.choice(promises)
            day = self.today - dt.timedelta(days=rng.randint(1, 3))
            interaction = self._interaction(customer, kind, day, external_ids, agent=self.agents[index % 3])
            interactions.append(interaction)
            callbacks.append((interaction, kind))

        Interaction.objects.bulk_create(interactions, batch_size=2_000)
        self.plan.interactions = len(interactions)
        recorded = [
            BusinessEvent(
                type=events.INTERACTION_RECORDED.name,
                customer_id=i.customer_id,
                occurred_at=i.occurred_at,
                payload={"channel": i.channel, "direction": i.direction, "disposition": i.disposition},
                source_system_id=i.source_system_id,
                idempotency_key=f"interaction.recorded:{i.pk}",
                recorded_at=i.occurred_at + dt.timedelta(seconds=rng.randint(1, 90)),
            )
            for i in interactions
        ]
        money = self._money_movements()
        BusinessEvent.objects.bulk_create(recorded + money, batch_size=2_000)
        self.plan.events = len(recorded) + len(money)

        customers = {c.pk: c for c in self.plan.customers}
        for interaction, kind in callbacks:
            customer = customers[interaction.customer_id]
            local = zoneinfo.ZoneInfo(customer.time_zone)
            due_day = self.today + dt.timedelta(days=rng.randint(1, 4))
            due = dt.datetime.combine(
                due_day, dt.time(rng.randint(10, 16), rng.choice((0, 30))), tzinfo=local
            )
            services.task_create(
                customer_id=customer.pk, kind=TaskKind.CALLBACK,
                title=f"Call back {customer.display_name}: {kind.subject.lower()}", description=kind.notes,
                priority=1 if customer.tier in ("gold", "platinum") else 2, due_at=due.astimezone(dt.UTC),
                assigned_to=interaction.agent, created_by=interaction.agent,
                origin=f"interaction:{interaction.pk}",
            )  # fmt: skip
        self.plan.callbacks = len(callbacks)

    def _may_contact(self, customer: Customer, kind: ContactKind) -> bool:
        """Consents and reachability: nobody is called, mailed or e-mailed against their wishes."""
        if kind.channel in ("phone", "ivr", "sms") and not customer.phones:
            return False
        if kind.channel == "email" and not customer.emails:
            return False
        if kind.marketing and not customer.marketing_opt_in:
            return False
        if kind.direction == "outbound" and kind.channel in ("phone", "sms") and customer.do_not_call:
            return False
        return not (kind.direction == "outbound" and kind.channel == "email" and kind.marketing
                    and customer.do_not_email)  # fmt: skip

    def _interaction(
        self, customer: Customer, kind: ContactKind, day: dt.date, external_ids: Counter[str],
        *, agent: User | None = None,
    ) -> Interaction:  # fmt: skip
        rng = self.rng
        low, high = CHANNEL_HOURS.get(kind.channel, OFFICE_HOURS)
        local = dt.datetime.combine(
            day, dt.time(rng.randint(low, high - 1), rng.randint(0, 59), rng.randint(0, 59)),
            tzinfo=zoneinfo.ZoneInfo(customer.time_zone),
        )  # fmt: skip
        external_id = ""
        if kind.source != "crm":
            # The touchpoint's own id; the CRM's screens record without one.
            external_ids[kind.source] += 1
            external_id = f"{kind.source.upper()}-{external_ids[kind.source]:07d}"
        if kind.agent and agent is None:
            agent = rng.choice(self.agents)
        occurred_at = local.astimezone(dt.UTC)
        if occurred_at > self.now:
            # "Yesterday evening" west of UTC can still be ahead of now in UTC.
            occurred_at -= dt.timedelta(days=1)
        return Interaction(
            customer_id=customer.pk, channel=kind.channel, direction=kind.direction,
            occurred_at=occurred_at, agent=agent if kind.agent else None,
            campaign_code=kind.campaign, disposition=kind.disposition, subject=kind.subject, notes=kind.notes,
            duration_seconds=rng.randint(*kind.duration) if kind.duration else None,
            source_system=self.sources[kind.source], external_id=external_id,
        )  # fmt: skip

    def _money_movements(self) -> list[BusinessEvent]:
        """Deposits and withdrawals on checking and savings accounts while they were open."""
        rng = self.rng
        billing = self.sources["billing"]
        result = []
        deposit, withdrawal = events.ACCOUNT_DEPOSIT, events.ACCOUNT_WITHDRAWAL
        for account in self.plan.accounts:
            if account.product.category not in ("checking", "savings"):
                continue
            start = max(account.opened_on, self.today - dt.timedelta(days=HISTORY_DAYS))
            end = account.closed_on or self.today - dt.timedelta(days=1)
            if end <= start:
                continue
            for n in range(rng.randint(2, 8)):
                event_type = deposit if rng.random() < 0.6 else withdrawal
                cents = rng.randint(80_000, 520_000) if event_type is deposit else rng.randint(4_000, 250_000)
                if rng.random() < 0.03:
                    cents *= 10  # the occasional large movement that policies watch for
                payload = {"account_number": account.account_number, "amount": cents / 100, "currency": "USD"}
                event_type.validate(payload)
                day = start + dt.timedelta(days=rng.randint(0, (end - start).days))
                at = dt.datetime.combine(day, dt.time(rng.randint(0, 23), rng.randint(0, 59)), tzinfo=dt.UTC)
                result.append(
                    BusinessEvent(
                        type=event_type.name,
                        customer_id=account.customer_id,
                        occurred_at=at,
                        payload=payload,
                        source_system=billing,
                        recorded_at=at,
                        idempotency_key=f"seed:{event_type.name}:{account.account_number}:{n}",
                    )
                )
        return result

    # --- The self-service log-in ------------------------------------------------------------

    def _self_service_login(self) -> None:
        """Someone with a full record to look at: an active head of a household, with an e-mail."""
        members: Counter[int | None] = Counter(c.household_id for c in self.plan.customers)
        candidates = [
            c for c in self.plan.customers
            if c.household_role == "head" and c.status == "active" and c.emails
            and members[c.household_id] > 1
        ]  # fmt: skip
        candidates.sort(key=lambda c: ({"gold": 0, "platinum": 1, "silver": 2}.get(c.tier, 3), c.pk))
        self.plan.login = services.customer_login_create(
            customer=candidates[0], username=CUSTOMER_LOGIN, password=DEMO_PASSWORD
        )
