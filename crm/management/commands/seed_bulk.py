"""Load large volumes fast: ``manage.py seed_bulk --customers N --interactions-per-customer M``.

Built for benchmarks (a million customers, ten million interactions, in
minutes on two cores), so it bypasses the ORM:

1. households and customers are generated in Python from precomputed name pools
   (each name's search keys computed once, exactly as ``services`` would) and
   streamed with PostgreSQL ``COPY``;
2. accounts and interactions are generated inside PostgreSQL with
   ``generate_series`` and ``random()`` (no rows cross the socket at all);
3. ids are assigned explicitly after the current maximum and the identity
   sequences are moved past them at the end;
4. for a load that is large next to what the tables hold, the secondary indexes,
   unique and foreign-key constraints of the loaded tables are dropped first and
   rebuilt afterwards (one sort per index and one join per foreign key instead of
   ten million index insertions and trigger checks), then the tables are
   vacuumed and analysed.

Everything up to the VACUUM is one transaction: a failure leaves the tables,
their indexes and constraints as they were. While it runs, the loaded tables
are locked against writes (and against reads too while their indexes are
rebuilt). It appends: running it twice adds a second batch. No business events
are written (``seed_demo`` shows those); phone numbers are unique per customer
(derived from the id) so a phone lookup finds exactly one customer.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
import sys
import time
from argparse import ArgumentParser
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone
from tqdm import tqdm

from crm import services
from crm.management.sample_data import (
    BUSINESS_SUFFIXES,
    BUSINESS_WORDS,
    CITIES,
    CONTACT_KINDS,
    EMAIL_DOMAINS,
    NAME_POOLS,
    PRODUCTS,
    STREET_KINDS,
    STREETS,
    City,
    check_pools,
    ensure_sources_and_products,
)
from crm.models import Product, User
from crm.search_keys import display_name, fold, name_tokens, phonetic_keys, sort_name

SEED = 7
HISTORY_DAYS = 730
FLOOR_AGENTS = 8
# Rebuild indexes when a load adds at least this many rows and at least a
# quarter of what the table already holds; below that, maintaining them is cheaper.
REBUILD_MIN_ROWS = 100_000
NULL = "\\N"  # COPY text format
CUSTOMER_CHUNK = 10_000  # customers per COPY write
INTERACTION_CHUNK = 1_000_000  # interactions per INSERT ... SELECT

POOL_WEIGHTS = (30, 18, 12, 7, 5, 7, 4, 7, 10)
HOUSEHOLD_SIZES = ((2, 50), (3, 30), (4, 20))
TIERS = (("standard", 70), ("silver", 18), ("gold", 9), ("platinum", 3))
LIFETIME_CENTS = {"standard": (20_000, 800_000), "silver": (800_000, 3_000_000),
                  "gold": (3_000_000, 12_000_000), "platinum": (12_000_000, 90_000_000)}  # fmt: skip
PREFERRED = (("phone", 35), ("email", 30), ("web", 20), ("sms", 10), ("mail", 3), ("branch", 2))
BUSINESS_SHARE = 0.03  # of the customers not in a household
# Product mix of a customer's second, third, ... account (the first is always checking).
OTHER_PRODUCTS = (
    ("high-yield-savings", 35), ("cash-back-card", 20), ("travel-rewards-card", 8), ("mortgage-30-fixed", 8),
    ("auto-loan", 8), ("personal-loan", 4), ("managed-portfolio", 6), ("term-life-20", 5),
    ("homeowners-insurance", 6),
)  # fmt: skip
LOADED_TABLES = ("crm_household", "crm_customer", "crm_account", "crm_interaction")
CUSTOMER_COLUMNS = (
    "id", "kind", "given_name", "family_name", "organization_name", "display_name", "date_of_birth",
    "phones", "emails", "addresses", "tier", "lifetime_value", "language", "time_zone",
    "preferred_channel", "do_not_call", "do_not_email", "marketing_opt_in", "consents_updated_at",
    "status", "household_role", "sort_name", "name_phonetic", "search_vector", "phone_keys",
    "email_keys", "version", "created_at", "updated_at", "household_id",
)  # fmt: skip
HOUSEHOLD_COLUMNS = ("id", "name", "line1", "line2", "city", "region", "postal_code", "country",
                     "address_key", "created_at", "updated_at")  # fmt: skip


class Home(NamedTuple):
    """What the members of a household share."""

    pool_index: int
    family: str
    city: City
    line1: str
    postal_code: str
    tier: str


# --- Search keys, computed once per name --------------------------------------------------


@dataclass(frozen=True)
class NameKeys:
    """A name with the derived columns ``services.customer_search_fields`` stores,
    in the text forms COPY reads."""

    display_name: str
    sort_name: str
    name_phonetic: str  # a PostgreSQL array literal
    search_vector: str  # tsvector input, as to_tsvector('simple', ...) prints it
    slug: str  # folded, for e-mail addresses


def name_keys(given: str = "", family: str = "", organization: str = "") -> NameKeys:
    tokens = name_tokens(given, family, organization)
    return NameKeys(
        display_name=display_name(given, family, organization),
        sort_name=sort_name(family, given, organization),
        name_phonetic="{" + ",".join(phonetic_keys(tokens)) + "}",
        search_vector=tsvector_literal(tokens),
        slug=".".join(tokens),
    )


def tsvector_literal(tokens: list[str]) -> str:
    """What ``to_tsvector('simple', ' '.join(tokens))`` returns, as text: each token
    with its 1-based positions. Tokens are [a-z0-9]+, so they need no quoting."""
    positions: dict[str, list[str]] = {}
    for position, token in enumerate(tokens, start=1):
        positions.setdefault(token, []).append(str(position))
    return " ".join(f"'{token}':{','.join(where)}" for token, where in sorted(positions.items()))


def phone_number(customer_id: int, *, work: bool = False) -> str:
    """A number no other customer has, derived from the id (unique below ~100M ids).

    Exchanges 600-999 for mobiles and 200-499 for work lines never meet the
    555-01XX fiction range ``seed_demo`` uses."""
    area = CITIES[customer_id % len(CITIES)].area_code
    rest = customer_id // len(CITIES)
    exchange = 200 + (rest // 10_000) % 300 if work else 600 + (rest // 10_000) % 400
    return f"+1{area}{exchange}{rest % 10_000:04d}"


# --- The command --------------------------------------------------------------------------


class Command(BaseCommand):
    help = (
        "Append N customers (households, accounts, M interactions each) with COPY and SQL; "
        "for benchmarks. Locks the loaded tables while it runs."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--customers", type=int, required=True)
        parser.add_argument("--interactions-per-customer", type=int, required=True)
        parser.add_argument(
            "--households-share", type=float, default=0.4,
            help="Share of the customers living in households of 2-4 (default 0.4).",
        )  # fmt: skip
        parser.add_argument("--accounts-per-customer", type=int, default=2)
        parser.add_argument("--seed", type=int, default=SEED)
        parser.add_argument(
            "--rebuild-indexes", choices=("auto", "always", "never"), default="auto",
            help="Drop the loaded tables' secondary indexes and constraints before the load and "
                 "rebuild them after (auto: when the load is large next to the table).",
        )  # fmt: skip
        parser.add_argument("--no-progress", action="store_true", help="No progress bars on stderr.")

    def handle(self, *args: Any, **options: Any) -> None:
        customers: int = options["customers"]
        per_customer: int = options["interactions_per_customer"]
        share: float = options["households_share"]
        accounts: int = options["accounts_per_customer"]
        if customers < 1:
            raise CommandError("--customers must be at least 1.")
        if per_customer < 0 or accounts < 0:
            raise CommandError("--interactions-per-customer and --accounts-per-customer cannot be negative.")
        if not 0 <= share <= 1:
            raise CommandError("--households-share is a fraction between 0 and 1, e.g. 0.4.")
        check_pools()
        loader = BulkLoader(
            customers=customers, per_customer=per_customer, households_share=share,
            accounts_per_customer=accounts, seed=options["seed"], rebuild=options["rebuild_indexes"],
            progress=not options["no_progress"], log=self.stdout.write,
        )  # fmt: skip
        loader.run()


class BulkLoader:
    def __init__(
        self, *, customers: int, per_customer: int, households_share: float, accounts_per_customer: int,
        seed: int, rebuild: str, progress: bool, log: Any,
    ) -> None:  # fmt: skip
        self.customers = customers
        self.per_customer = per_customer
        self.households_share = households_share
        self.accounts_per_customer = accounts_per_customer
        self.seed = seed
        self.rebuild = rebuild
        self.progress = progress
        self.log = log
        self.now = timezone.now()
        self.timings: dict[str, float] = {}

    def run(self) -> None:
        started = time.monotonic()
        with transaction.atomic():
            sources, agents = self._reference_data()
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {', '.join(LOADED_TABLES)} IN SHARE ROW EXCLUSIVE MODE")
                cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
                first = {t: self._max_id(cursor, t) + 1 for t in LOADED_TABLES}
                existing = {t: self._row_estimate(cursor, t) for t in LOADED_TABLES}
            adding = {
                "crm_household": int(self.customers * self.households_share / 2.7),
                "crm_customer": self.customers,
                "crm_account": self.customers * self.accounts_per_customer,
                "crm_interaction": self.customers * self.per_customer,
            }
            rebuilt = [t for t in LOADED_TABLES if self._should_rebuild(adding[t], existing[t])]
            with self._timed("drop indexes"):
                saved = self._drop_secondary(rebuilt)
            rng = random.Random(f"{self.seed}:{first['crm_customer']}")
            with self._timed("customers"):
                households = self._copy_customers(rng, first["crm_customer"], first["crm_household"])
            with connection.cursor() as cursor:
                # Deterministic random() for the rows generated in SQL.
                cursor.execute("SELECT setseed(%s)", [rng.uniform(-1, 1)])
            with self._timed("accounts"):
                self._insert_accounts(first["crm_customer"], first["crm_account"])
            with self._timed("interactions"):
                self._insert_interactions(first["crm_customer"], first["crm_interaction"], sources, agents)
            with self._timed("rebuild indexes"):
                self._restore_secondary(saved)
            with connection.cursor() as cursor:
                for table in LOADED_TABLES:
                    cursor.execute(
                        "SELECT setval(pg_get_serial_sequence(%s, 'id'), GREATEST((SELECT max(id) FROM "
                        f"{table}), 1))",
                        [table],
                    )
        with self._timed("vacuum analyze"), connection.cursor() as cursor:
            # Fresh statistics, or the planner guesses from an empty table. Outside a
            # transaction also VACUUM: it sets the hint bits and visibility map now,
            # rather than autovacuum and the first readers doing it while a benchmark runs.
            tables = ", ".join(LOADED_TABLES)
            cursor.execute(
                f"ANALYZE {tables}" if connection.in_atomic_block else f"VACUUM (ANALYZE) {tables}"
            )
        last = first["crm_customer"] + self.customers - 1
        self.log(
            f"Loaded {self.customers:,} customers (ids {first['crm_customer']:,}-{last:,}) in "
            f"{households:,} households, {adding['crm_account']:,} accounts and "
            f"{adding['crm_interaction']:,} interactions in {time.monotonic() - started:.1f} s"
            + (f"; rebuilt the indexes of {', '.join(rebuilt)}" if rebuilt else "")
            + ".\n  "
            + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in self.timings.items())
        )

    # --- Reference data, through the services ----------------------------------------------

    def _reference_data(self) -> tuple[dict[str, int], list[int]]:
        """Source systems, products and a few agents the generated rows point at."""
        have = {code: source.pk for code, source in ensure_sources_and_products().items()}
        agents = list(User.objects.filter(groups__name="agent").order_by("pk").values_list("pk", flat=True))
        if not agents and Group.objects.filter(name="agent").exists():
            # Phone and chat contacts need agents; these are not log-ins for people.
            agents = [
                services.staff_user_create(
                    username=f"floor-agent-{n:02d}",
                    password=secrets.token_urlsafe(24),
                    role="agent",
                    first_name="Floor",
                    last_name=f"Agent {n}",
                    time_zone=CITIES[n].time_zone,
                ).pk
                for n in range(1, FLOOR_AGENTS + 1)
            ]
        return have, agents

    # --- Customers and households: generated in Python, streamed with COPY ------------------

    def _copy_customers(self, rng: random.Random, first_id: int, first_household: int) -> int:
        raw = connection.connection
        columns = ", ".join(CUSTOMER_COLUMNS)
        household_rows: list[str] = []
        bar = tqdm(total=self.customers, unit=" customers", file=sys.stderr, disable=not self.progress,
                   desc="customers", unit_scale=True)  # fmt: skip
        with raw.cursor() as cursor, cursor.copy(f"COPY crm_customer ({columns}) FROM STDIN") as copy:
            for chunk in self._customer_chunks(rng, first_id, first_household, household_rows):
                copy.write("".join(chunk))
                bar.update(len(chunk))
        bar.close()
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY crm_household ({', '.join(HOUSEHOLD_COLUMNS)}) FROM STDIN") as copy,
        ):
            for start in range(0, len(household_rows), CUSTOMER_CHUNK):
                copy.write("".join(household_rows[start : start + CUSTOMER_CHUNK]))
        return len(household_rows)

    def _customer_chunks(
        self, rng: random.Random, first_id: int, first_household: int, household_rows: list[str]
    ) -> Iterator[list[str]]:
        """Rows of COPY text, a chunk at a time. This loop runs a million times:
        everything that can be is looked up in precomputed tables, and random
        picks are ``int(random() * n)`` (five times faster than ``choice``)."""
        rand = rng.random
        givens = [(*p.female, *p.male) for p in NAME_POOLS]
        pool_cumulative = _cumulative(POOL_WEIGHTS)
        tiers, preferred, sizes = _expand(TIERS), _expand(PREFERRED), _expand(HOUSEHOLD_SIZES)
        name_cache: dict[tuple[str, str, str], NameKeys] = {}
        now = self.now.isoformat()
        today = self.now.date().toordinal()
        # Chance that a customer starts a household, so that ``households_share`` of
        # the customers end up in one (households average 2.7 people).
        share = self.households_share
        start_household = share / (2.7 - 1.7 * share)

        household_id = first_household - 1
        members_left, role = 0, ""
        home = Home(0, "", CITIES[0], "", "", "")
        chunk: list[str] = []
        for customer_id in range(first_id, first_id + self.customers):
            if members_left == 0 and rand() < start_household:
                household_id += 1
                members_left = sizes[int(rand() * len(sizes))]
                role = "head"
                pool_index = _pick(pool_cumulative, rand())
                family = NAME_POOLS[pool_index].family[int(rand() * len(NAME_POOLS[pool_index].family))]
                city = CITIES[int(rand() * len(CITIES))]
                line1, postal = _street_address(rand, city)
                home = Home(pool_index, family, city, line1, postal, tiers[int(rand() * len(tiers))])
                household_rows.append(
                    f"{household_id}\tThe {family} household\t{line1}\t\t{city.name}\t{city.region}\t"
                    f"{postal}\tUS\t{fold(f'{line1} {postal} US')}\t{now}\t{now}\n"
                )
            in_household = members_left > 0
            if in_household:
                pool_index, family, city, line1, postal, tier = home
                members_left -= 1
                member_role, household = role, str(household_id)
                role = "partner" if role == "head" else "dependent"
            else:
                pool_index = _pick(pool_cumulative, rand())
                family = NAME_POOLS[pool_index].family[int(rand() * len(NAME_POOLS[pool_index].family))]
                city = CITIES[customer_id % len(CITIES)]  # where the mobile's area code is
                line1, postal = _street_address(rand, city)
                tier = tiers[int(rand() * len(tiers))]
                member_role, household = "", NULL
            business = not in_household and rand() < BUSINESS_SHARE

            if business:
                word = BUSINESS_WORDS[int(rand() * len(BUSINESS_WORDS))]
                suffix = BUSINESS_SUFFIXES[int(rand() * len(BUSINESS_SUFFIXES))]
                key = ("", "", f"{family} {word} {suffix}")
                given, family_name, birth = "", "", NULL
            else:
                options = givens[pool_index]
                given, family_name = options[int(rand() * len(options))], family
                key = (given, family, "")
                years = 16 + int(rand() * 9) if member_role == "dependent" else 25 + int(rand() * 62)
                birth = dt.date.fromordinal(today - years * 365 - int(rand() * 365)).isoformat()
            keys = name_cache.get(key)
            if keys is None:
                keys = name_cache[key] = name_keys(*key)

            phone_keys = phone_number(customer_id)
            phones = (
                f'{{"kind": "{"work" if business else "mobile"}", "number": "{phone_keys}", "primary": true}}'
            )
            if not business and rand() < 0.25:
                work = phone_number(customer_id, work=True)
                phones += f', {{"kind": "work", "number": "{work}", "primary": false}}'
                phone_keys = ",".join(sorted((phone_keys, work)))
            if business:
                email = f"info@{keys.slug.replace('.', '')}{customer_id}.example.com"
            else:
                email = f"{keys.slug}{customer_id}@{EMAIL_DOMAINS[customer_id % len(EMAIL_DOMAINS)]}"
            emails = (
                f'{{"kind": "{"work" if business else "personal"}", "address": "{email}", "primary": true}}'
            )
            addresses = (
                f'{{"kind": "{"work" if business else "home"}", "line1": "{line1}", "line2": "", '
                f'"city": "{city.name}", "region": "{city.region}", "postal_code": "{postal}", '
                '"country": "US"}'
            )
            low, high = LIFETIME_CENTS[tier]
            cents = low + int(rand() * (high - low))
            do_not_call, do_not_email, opt_in = rand() < 0.07, rand() < 0.05, rand() < 0.55
            language = NAME_POOLS[pool_index].language if rand() < 0.5 else "en"
            chunk.append(
                f"{customer_id}\t{'business' if business else 'person'}\t{given}\t{family_name}\t{key[2]}\t"
                f"{keys.display_name}\t{birth}\t[{phones}]\t[{emails}]\t[{addresses}]\t{tier}\t"
                f"{cents // 100}.{cents % 100:02d}\t{language}\t{city.time_zone}\t"
                f"{preferred[int(rand() * len(preferred))]}\t{_pg_bool(do_not_call)}\t"
                f"{_pg_bool(do_not_email)}\t{_pg_bool(opt_in)}\t"
                # services stamp consents_updated_at when a customer is created with any consent set
                f"{now if (do_not_call or do_not_email or opt_in) else NULL}\t"
                f"{'inactive' if rand() < 0.04 else 'active'}\t{member_role}\t{keys.sort_name}\t"
                f"{keys.name_phonetic}\t{keys.search_vector}\t{{{phone_keys}}}\t{{{email.lower()}}}\t1\t"
                f"{now}\t{now}\t{household}\n"
            )
            if len(chunk) >= CUSTOMER_CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    # --- Accounts and interactions: generated in PostgreSQL ----------------------------------

    def _insert_accounts(self, first_customer: int, first_account: int) -> None:
        if not self.accounts_per_customer:
            return
        products = {p.code: p.pk for p in Product.objects.all()}
        specs = {p.code: p for p in PRODUCTS}
        # Slot 1: a person's checking, 2: a business's; then one slot per unit of weight.
        slots = ["everyday-checking", "business-checking", *_expand(OTHER_PRODUCTS)]
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO crm_account (id, account_number, status, balance, currency, opened_on,
                                         closed_on, updated_at, customer_id, product_id)
                SELECT a.id, p.prefix || '-B' || lpad(a.id::text, 9, '0'),
                       CASE WHEN a.closed THEN 'closed' ELSE 'open' END,
                       CASE WHEN a.closed THEN 0
                            ELSE round((p.low + a.r_balance * (p.high - p.low))::numeric, 2) END,
                       'USD', a.opened_on,
                       CASE WHEN a.closed
                            THEN a.opened_on + (a.r_closed * (%(today)s - a.opened_on))::int END,
                       %(now)s, a.customer_id, p.product_id
                FROM (
                    SELECT %(first_account)s + (c.id - %(first_customer)s) * %(per)s + k - 1 AS id,
                           c.id AS customer_id,
                           CASE WHEN k > 1 THEN 3 + floor(random() * %(others)s)::int
                                WHEN c.kind = 'business' THEN 2 ELSE 1 END AS slot,
                           k > 1 AND random() < 0.08 AS closed,
                           %(today)s - (400 + floor(random() * 5000))::int AS opened_on,
                           random() AS r_balance, random() AS r_closed
                    FROM crm_customer c, generate_series(1, %(per)s) k
                    WHERE c.id BETWEEN %(first_customer)s AND %(last_customer)s
                ) a
                JOIN unnest(%(product_ids)s::bigint[], %(prefixes)s::text[],
                            %(lows)s::int[], %(highs)s::int[])
                     WITH ORDINALITY AS p(product_id, prefix, low, high, slot) ON p.slot = a.slot
                """,
                {
                    "today": self.now.date(), "now": self.now, "first_account": first_account,
                    "first_customer": first_customer, "last_customer": first_customer + self.customers - 1,
                    "per": self.accounts_per_customer, "others": len(slots) - 2,
                    "product_ids": [products[code] for code in slots],
                    "prefixes": [specs[code].prefix for code in slots],
                    "lows": [specs[code].balance[0] for code in slots],
                    "highs": [specs[code].balance[1] for code in slots],
                },
            )  # fmt: skip

    def _insert_interactions(
        self, first_customer: int, first_interaction: int, sources: dict[str, int], agents: list[int]
    ) -> None:
        if not self.per_customer:
            return
        # One entry per unit of weight, so a uniform random slot picks a kind with
        # the frequency the pool gives it.
        kinds = [kind for kind in CONTACT_KINDS for _ in range(kind.weight)]
        columns: dict[str, list[Any]] = {
            "channels": [k.channel for k in kinds], "directions": [k.direction for k in kinds],
            "source_ids": [sources[k.source] for k in kinds],
            "external_prefixes": ["" if k.source == "crm" else f"{k.source}-b" for k in kinds],
            "subjects": [k.subject for k in kinds], "notes": [k.notes for k in kinds],
            "dispositions": [k.disposition for k in kinds], "campaigns": [k.campaign for k in kinds],
            "with_agent": [k.agent and bool(agents) for k in kinds],
            "lows": [k.duration[0] if k.duration else None for k in kinds],
            "highs": [k.duration[1] if k.duration else None for k in kinds],
        }  # fmt: skip
        day = dt.datetime.combine(self.now.date(), dt.time(), tzinfo=dt.UTC)
        per_chunk = max(1, INTERACTION_CHUNK // self.per_customer)
        bar = tqdm(total=self.customers * self.per_customer, unit=" interactions", file=sys.stderr,
                   disable=not self.progress, desc="interactions", unit_scale=True)  # fmt: skip
        last_customer = first_customer + self.customers - 1
        with connection.cursor() as cursor:
            for start in range(first_customer, last_customer + 1, per_chunk):
                end = min(start + per_chunk - 1, last_customer)
                cursor.execute(
                    """
                    INSERT INTO crm_interaction (id, channel, direction, occurred_at, agent_id, campaign_code,
                        disposition, subject, notes, script_run_id, duration_seconds, external_id,
                        created_at, customer_id, source_system_id)
                    SELECT g.id, k.channel, k.direction,
                           -- office hours in the US (13:00-23:00 UTC), on a day of the last two years
                           %(day)s - g.days * interval '1 day' + interval '13 hours'
                               + g.r_time * interval '10 hours',
                           CASE WHEN k.with_agent
                                THEN (%(agents)s::bigint[])[1 + floor(g.r_agent * %(n_agents)s)::int] END,
                           k.campaign, k.disposition, k.subject, k.notes, NULL,
                           CASE WHEN k.low IS NOT NULL
                                THEN k.low + floor(g.r_duration * (k.high - k.low + 1))::int END,
                           CASE WHEN k.external_prefix = '' THEN '' ELSE k.external_prefix || g.id END,
                           %(now)s, g.customer_id, k.source_id
                    FROM (
                        SELECT %(first)s + (c - %(first_customer)s) * %(per)s + n - 1 AS id, c AS customer_id,
                               1 + floor(random() * %(n_kinds)s)::int AS slot,
                               1 + floor(random() * %(history_days)s)::int AS days,
                               random() AS r_time, random() AS r_agent, random() AS r_duration
                        FROM generate_series(%(start)s::bigint, %(end)s::bigint) c,
                             generate_series(1, %(per)s) n
                    ) g
                    JOIN unnest(%(channels)s::text[], %(directions)s::text[], %(source_ids)s::bigint[],
                                %(external_prefixes)s::text[], %(subjects)s::text[], %(notes)s::text[],
                                %(dispositions)s::text[], %(campaigns)s::text[], %(with_agent)s::boolean[],
                                %(lows)s::int[], %(highs)s::int[])
                         WITH ORDINALITY AS k(channel, direction, source_id, external_prefix, subject, notes,
                                              disposition, campaign, with_agent, low, high, slot)
                         ON k.slot = g.slot
                    """,
                    {
                        **columns, "day": day, "agents": agents or [0], "n_agents": len(agents) or 1,
                        "now": self.now, "first": first_interaction, "first_customer": first_customer,
                        "per": self.per_customer, "start": start, "end": end, "n_kinds": len(kinds),
                        "history_days": HISTORY_DAYS,
                    },
                )  # fmt: skip
                bar.update((end - start + 1) * self.per_customer)
        bar.close()

    # --- Indexes and constraints around a large load ---------------------------------------

    def _should_rebuild(self, adding: int, existing: int) -> bool:
        if self.rebuild != "auto":
            return self.rebuild == "always"
        return adding >= REBUILD_MIN_ROWS and adding * 4 >= existing

    def _drop_secondary(self, tables: list[str]) -> list[tuple[str, str]]:
        """Drop the tables' secondary indexes, unique and foreign-key constraints;
        return the statements that re-create them."""
        restore: list[tuple[str, str]] = []
        if not tables:
            return restore
        with connection.cursor() as cursor:
            cursor.execute(
                """
                SELECT c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid)
                FROM pg_constraint c
                WHERE c.conrelid = ANY(%s::regclass[]) AND c.contype IN ('u', 'f')
                ORDER BY c.contype DESC, c.conname
                """,
                [tables],
            )
            constraints = cursor.fetchall()
            cursor.execute(
                """
                SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
                FROM pg_index i
                WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary
                  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
                ORDER BY 1
                """,
                [tables],
            )
            indexes = cursor.fetchall()
            # Dropping a foreign key alters the referenced table too, which PostgreSQL
            # refuses while that table has deferred checks queued (the users just created).
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for table, name, _, definition in constraints:
                cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
                restore.append((name, f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
            for name, definition in indexes:
                cursor.execute(f'DROP INDEX "{name}"')
                restore.append((name, definition))
        # Unique constraints and indexes before the foreign keys, as they were made.
        restore.sort(key=lambda item: "FOREIGN KEY" in item[1])
        return restore

    def _restore_secondary(self, restore: list[tuple[str, str]]) -> None:
        if not restore:
            return
        bar = tqdm(restore, unit=" indexes", file=sys.stderr, disable=not self.progress, desc="rebuild")
        with connection.cursor() as cursor:
            for name, statement in bar:
                bar.set_postfix_str(name)
                cursor.execute(statement)
        bar.close()

    # --- Helpers ---------------------------------------------------------------------------

    def _max_id(self, cursor: Any, table: str) -> int:
        cursor.execute(f"SELECT COALESCE(max(id), 0) FROM {table}")
        return int(cursor.fetchone()[0])

    def _row_estimate(self, cursor: Any, table: str) -> int:
        # The planner's estimate is enough to decide, and free on a ten-million-row table.
        cursor.execute(
            "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass", [table]
        )
        return int(cursor.fetchone()[0])

    def _timed(self, step: str) -> _Timer:
        return _Timer(self.timings, step)


class _Timer:
    def __init__(self, timings: dict[str, float], step: str) -> None:
        self.timings, self.step = timings, step

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.step] = time.monotonic() - self.started


def _expand(pairs: tuple[tuple[Any, int], ...]) -> list[Any]:
    """A lookup table where each value appears as often as its weight."""
    return [value for value, weight in pairs for _ in range(weight)]


def _cumulative(weights: tuple[int, ...]) -> list[float]:
    total, running, result = sum(weights), 0, []
    for weight in weights:
        running += weight
        result.append(running / total)
    return result


def _pick(cumulative: list[float], r: float) -> int:
    for index, bound in enumerate(cumulative):
        if r < bound:
            return index
    return len(cumulative) - 1


def _street_address(rand: Callable[[], float], city: City) -> tuple[str, str]:
    number = 10 + int(rand() * 9890)
    street = f"{STREETS[int(rand() * len(STREETS))]} {STREET_KINDS[int(rand() * len(STREET_KINDS))]}"
    return f"{number} {street}", f"{city.zip_prefix}{1 + int(rand() * 99):02d}"


def _pg_bool(value: bool) -> str:
    return "t" if value else "f"
