"""Every shared read of the customer record: pages and the API use these."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

from django.contrib.postgres.search import SearchQuery, SearchRank
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Exists, F, Model, OuterRef, Prefetch, Q, QuerySet

from crm.models import (
    Account,
    Customer,
    CustomerChange,
    Household,
    Interaction,
    Product,
    SourceSystem,
    Task,
    User,
)
from crm.models.choices import TaskStatus
from crm.search_keys import name_tokens, query_key_sets, tsquery_for
from crm.services.events import server_bound_cursor
from crm.validation import normalize_email, normalize_phone

M = TypeVar("M", bound=Model)
SCREEN_HISTORY = 50
OPEN_TASK_STATUSES = (TaskStatus.OPEN, TaskStatus.IN_PROGRESS)
# Derived search columns: indexed for lookups, never shown, costly to parse.
SEARCH_COLUMNS = ("search_vector", "name_phonetic", "phone_keys", "email_keys", "sort_name")
HISTORY_FIELDS = (
    "id", "customer_id", "channel", "direction", "occurred_at", "campaign_code", "disposition",
    "subject", "notes", "duration_seconds", "script_run_id", "external_id",
    "agent__id", "agent__username", "agent__first_name", "agent__last_name",
    "source_system_id",
)  # fmt: skip
_SOURCES_TTL = 60.0
_sources: tuple[float, dict[int, SourceSystem]] = (0.0, {})


def source_systems(*, max_age: float = _SOURCES_TTL) -> dict[int, SourceSystem]:
    """Every source system by id, cached per process: a few dozen rows that every
    history line names, cheaper to keep than to join 50 times per screen."""
    global _sources  # noqa: PLW0603  (a process-wide cache by design)
    loaded_at, systems = _sources
    if time.monotonic() - loaded_at >= max_age:
        systems = {s.pk: s for s in SourceSystem.objects.all()}
        _sources = (time.monotonic(), systems)
    return systems


def forget_source_systems() -> None:
    global _sources  # noqa: PLW0603
    _sources = (0.0, {})


def attach_source_systems(interactions: list[Interaction]) -> None:
    systems = source_systems()
    if any(i.source_system_id not in systems for i in interactions):
        systems = source_systems(max_age=0)  # one added since the cache was filled
    for interaction in interactions:
        interaction.source_system = systems[interaction.source_system_id]


_CUSTOMER_NUMBER_RE = re.compile(r"^\s*C-?0*(\d{1,12})\s*$", re.IGNORECASE)
# A one-letter prefix matches a twentieth of all names: a list nobody reads, at
# the price of ranking tens of thousands of rows.
MIN_NAME_LETTERS = 2
NAME_TOO_SHORT = "Type at least two letters of the name."


# --- Who sees what -------------------------------------------------------------------


def _visible(queryset: QuerySet[M], user: User, *, own: str, permission: str) -> QuerySet[M]:
    """``queryset`` cut down to what ``user`` may read: a customer the rows whose
    ``own`` lookup is their customer id, an integration or staff with
    ``permission`` every row, anyone else none."""
    if not user.is_authenticated or not user.is_active:
        return queryset.none()
    if user.customer_id is not None:
        return queryset.filter(**{own: user.customer_id})
    if user.is_integration or user.has_perm(permission):
        return queryset
    return queryset.none()


def customers_visible_to(user: User) -> QuerySet[Customer]:
    return _visible(Customer.objects.all(), user, own="pk", permission="crm.view_customer")


def households_visible_to(user: User) -> QuerySet[Household]:
    return _visible(Household.objects.all(), user, own="members__pk", permission="crm.view_household")


def accounts_visible_to(user: User) -> QuerySet[Account]:
    accounts = Account.objects.select_related("product")
    return _visible(accounts, user, own="customer_id", permission="crm.view_account")


# --- Lookup and search -----------------------------------------------------------------


def customers_by_phone(raw: str) -> QuerySet[Customer]:
    """Customers reachable at a number given in E.164 or as dialled (several may
    share a household line).

    Read the result whole: never slice it or call ``.first()``. Numbers are
    nearly unique, so PostgreSQL keeps no statistics on them and guesses 0.5% of
    the table; under a LIMIT it then prefers a sequential scan (1.3 s at a
    million customers, against 0.05 ms through the GIN index)."""
    return Customer.objects.filter(phone_keys__contains=[normalize_phone(raw)])


_IDS_BY_PHONE_SQL = (
    f"SELECT id FROM {Customer._meta.db_table} WHERE phone_keys @> ARRAY[%s]::varchar(16)[] ORDER BY id"
)


def customer_ids_by_phone(number: str) -> list[int]:
    """The ids of the customers reachable at ``number`` (E.164), in id order: what
    the phone system's every inbound call asks, in SQL written once (the ORM's
    building of the same question cost more than PostgreSQL's answer through the
    GIN index). Not narrowed to what a user may see: for routing, not display."""
    with connection.cursor() as cursor:
        cursor.execute(_IDS_BY_PHONE_SQL, [number])
        return [row[0] for row in cursor.fetchall()]


def _ids_matching(lookup: Q) -> list[int]:
    # Resolved on its own, without the caller's ORDER BY and LIMIT, so the
    # planner keeps to the GIN index (see customers_by_phone).
    return list(Customer.objects.filter(lookup).values_list("pk", flat=True))


def customer_search(
    *,
    queryset: QuerySet[Customer],
    q: str = "",
    phone: str = "",
    email: str = "",
    account_number: str = "",
    source_key: str = "",
) -> QuerySet[Customer]:
    """Filter ``queryset`` by any of: a name (typos and accents forgiven), a phone
    number as dialled, an e-mail, an account number, a source system's own key
    (``ivr:48213``), or a customer number in ``q``.

    Raises ValidationError naming the parameter when a phone or e-mail cannot be
    read, or when ``q`` is a name of fewer than two letters.
    """
    if phone:
        try:
            number = normalize_phone(phone)
        except ValidationError as exc:
            raise ValidationError({"phone": exc.messages}) from None
        queryset = queryset.filter(pk__in=_ids_matching(Q(phone_keys__contains=[number])))
    if email:
        try:
            address = normalize_email(email).lower()
        except ValidationError as exc:
            raise ValidationError({"email": exc.messages}) from None
        queryset = queryset.filter(pk__in=_ids_matching(Q(email_keys__contains=[address])))
    if account_number:
        queryset = queryset.filter(accounts__account_number=account_number.strip().upper())
    if source_key:
        code, sep, key = source_key.partition(":")
        if not sep or not code or not key:
            raise ValidationError({"source_key": "Write it as <source code>:<key>, e.g. ivr:48213."})
        queryset = queryset.filter(source_records__source_system__code=code, source_records__external_key=key)
    q = q.strip()
    if not q:
        return queryset.order_by("sort_name", "id")
    customer_number = _CUSTOMER_NUMBER_RE.match(q)
    if customer_number:
        return queryset.filter(pk=int(customer_number.group(1))).order_by("id")
    tokens = name_tokens(q)
    # "J" or "J." is refused; a name in a script the keys cannot fold ("Иван")
    # has no tokens and simply finds nobody, as before.
    if len(q) < MIN_NAME_LETTERS or (tokens and max(map(len, tokens)) < MIN_NAME_LETTERS):
        raise ValidationError({"q": NAME_TOO_SHORT})
    prefix = tsquery_for(q)
    if not tokens or prefix is None:
        return queryset.none()
    query = SearchQuery(prefix, search_type="raw", config="simple")
    # Prefix matches on the folded name, or every token alike by sound or by its
    # letters (typos, swapped letters).
    matches = Q(search_vector=query)
    for keys in query_key_sets(tokens):
        matches |= Q(name_phonetic__contains=keys)
    return (
        queryset.filter(matches)
        .annotate(rank=SearchRank(F("search_vector"), query))
        .order_by("-rank", "sort_name", "id")
    )


def count_up_to(queryset: QuerySet[Any], *, cap: int) -> int:
    """How many rows ``queryset`` holds, counting no further than ``cap + 1``
    (so that a caller can tell "exactly cap" from "more than cap").

    Only primary keys are read, without the caller's ORDER BY and without its
    annotations in the SELECT: otherwise a ranked name search would rank and sort
    every match just to count them. The LIMIT stops the scan at ``cap + 1`` rows:
    ``SELECT COUNT(*) FROM (SELECT id FROM ... WHERE ... LIMIT cap + 1)``."""
    return queryset.order_by().values("pk")[: cap + 1].count()


# --- The unified customer screen ----------------------------------------------------


# The screen's reads past the customer's own row have the same shape on every
# screen: their SQL is written once per process from the models (the ORM spent
# longer building each than PostgreSQL answering it) and sent with server-side
# binding, prepared after a few runs on a connection.


@dataclass(frozen=True)
class _Columns:
    """One model's columns in a hand-written SELECT, and how to make instances of them."""

    model: type[Model]
    alias: str
    fields: tuple[Any, ...]

    @classmethod
    def of(cls, model: type[Model], alias: str, names: Sequence[str] | None = None) -> _Columns:
        concrete = model._meta.concrete_fields
        wanted = concrete if names is None else [f for f in concrete if f.name in names or f.attname in names]
        return cls(model, alias, tuple(wanted))

    def sql(self) -> str:
        quote = connection.ops.quote_name
        return ", ".join(f"{self.alias}.{quote(f.column)}" for f in self.fields)

    def instance(self, values: Sequence[Any]) -> Any:
        """The values through the fields' converters, as the ORM applies them
        (JSON arrives as text), then ``Model.from_db`` (fields not read are deferred)."""
        values = list(values)
        for index, f in enumerate(self.fields):
            for converter in f.get_db_converters(connection):
                values[index] = converter(values[index], f.cached_col, connection)
        return self.model.from_db(connection.alias, [f.attname for f in self.fields], values)


def split_row(row: Sequence[Any], parts: Sequence[_Columns]) -> list[Any]:
    """One instance per part of the SELECT (None for a LEFT JOIN that found nothing)."""
    instances = []
    start = 0
    for part in parts:
        values = row[start : start + len(part.fields)]
        start += len(part.fields)
        instances.append(None if values[0] is None else part.instance(values))
    return instances


_statements: dict[Any, str] = {}
_statements_lock = threading.Lock()


def _statement(key: Any, build: Callable[[], str]) -> str:
    sql = _statements.get(key)
    if sql is None:
        with _statements_lock:
            sql = _statements[key] = build()
    return sql


@dataclass(frozen=True)
class _Read:
    sql: str
    params: Sequence[Any]
    convert: Callable[[list[Any]], Any]  # the rows -> what the caller wants


def _run(*reads: _Read) -> list[Any]:
    """Each read's result, the reads sent together: in pipeline mode, one round
    trip to PostgreSQL for all of them rather than one each (a busy database
    server makes each wait for a wake-up of its own)."""
    with ExitStack() as stack:
        cursors = [stack.enter_context(server_bound_cursor()) for _ in reads]
        if len(reads) > 1:
            stack.enter_context(connection.connection.pipeline())
        for cursor, read in zip(cursors, reads, strict=True):
            cursor.execute(read.sql, read.params)
        return [read.convert(list(cursor.fetchall())) for cursor, read in zip(cursors, reads, strict=True)]


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _column(model: type[Model], name: str) -> str:
    return _q(str(model._meta.get_field(name).column))  # type: ignore[union-attr]


_MEMBER_FIELDS = ("id", "given_name", "family_name", "organization_name", "display_name",
                  "household_role", "tier", "status", "household_id")  # fmt: skip
_MEMBERS = (_Columns.of(Customer, "c", _MEMBER_FIELDS),)
_ACCOUNTS = (_Columns.of(Account, "a"), _Columns.of(Product, "p"))
_HISTORY = (
    _Columns.of(Interaction, "i", [*(f for f in HISTORY_FIELDS if "__" not in f), "agent"]),
    _Columns.of(User, "u", [f.split("__")[1] for f in HISTORY_FIELDS if f.startswith("agent__")]),
)


def _members(*, household_id: int, customer_id: int) -> _Read:
    """The other members of a household, by name: only what the screen shows of them."""

    def build() -> str:
        return (
            f"SELECT {_MEMBERS[0].sql()} FROM {_q(Customer._meta.db_table)} c "
            f"WHERE c.{_column(Customer, 'household')} = %s AND c.{_q('id')} <> %s "
            f"ORDER BY c.{_column(Customer, 'sort_name')}"
        )

    def convert(rows: list[Any]) -> list[Customer]:
        return [_MEMBERS[0].instance(row) for row in rows]

    return _Read(_statement("members", build), [household_id, customer_id], convert)


def _accounts(*, customer_id: int) -> _Read:
    """A customer's accounts with their products: the open ones first, newest first."""

    def build() -> str:
        return (
            f"SELECT {_ACCOUNTS[0].sql()}, {_ACCOUNTS[1].sql()} FROM {_q(Account._meta.db_table)} a "
            f"JOIN {_q(Product._meta.db_table)} p ON p.{_q('id')} = a.{_column(Account, 'product')} "
            f"WHERE a.{_column(Account, 'customer')} = %s "
            f"ORDER BY a.{_column(Account, 'status')} ASC, a.{_column(Account, 'opened_on')} DESC"
        )

    def convert(rows: list[Any]) -> list[Account]:
        accounts = []
        for row in rows:
            account, product = split_row(row, _ACCOUNTS)
            Account.product.field.set_cached_value(account, product)
            accounts.append(account)
        return accounts

    return _Read(_statement("accounts", build), [customer_id], convert)


def _history(*, customer_id: int, channel: str, before: tuple[dt.datetime, int] | None, limit: int) -> _Read:
    """Contacts of a customer newest first (of ``channel`` only, when given; older
    than ``before``, when given), with their agents and source systems."""

    def build() -> str:
        occurred, pk = f"i.{_column(Interaction, 'occurred_at')}", f"i.{_q('id')}"
        where = [f"i.{_column(Interaction, 'customer')} = %s"]
        if channel:
            where.append(f"i.{_column(Interaction, 'channel')} = %s")
        if before is not None:
            where.append(f"({occurred} < %s OR ({occurred} = %s AND {pk} < %s))")
        return (
            f"SELECT {_HISTORY[0].sql()}, {_HISTORY[1].sql()} FROM {_q(Interaction._meta.db_table)} i "
            f"LEFT JOIN {_q(User._meta.db_table)} u ON u.{_q('id')} = i.{_column(Interaction, 'agent')} "
            f"WHERE {' AND '.join(where)} ORDER BY {occurred} DESC, {pk} DESC "
            # A constant, not a parameter: a prepared statement's generic plan would
            # otherwise guess the LIMIT.
            f"LIMIT {int(limit)}"
        )

    params: list[Any] = [customer_id]
    if channel:
        params.append(channel)
    if before is not None:
        params += [before[0], before[0], before[1]]
    key = ("history", bool(channel), before is not None, limit)

    def convert(rows: list[Any]) -> list[Interaction]:
        interactions = []
        for row in rows:
            interaction, agent = split_row(row, _HISTORY)
            Interaction.agent.field.set_cached_value(interaction, agent)
            interactions.append(interaction)
        attach_source_systems(interactions)
        return interactions

    return _Read(_statement(key, build), params, convert)


@dataclass(frozen=True)
class CustomerScreen:
    customer: Customer
    household_members: list[Customer]
    accounts: list[Account]
    interactions: list[Interaction]
    open_tasks: list[Task]


def customer_screen(
    *, customer_id: int, queryset: QuerySet[Customer] | None = None, history_channel: str = ""
) -> CustomerScreen:
    """Everything the agent sees about one customer, in at most five queries
    whatever the length of the history: the customer with its household (and
    whether any task is open), the other members, the accounts with their
    products, the last 50 contacts (of ``history_channel`` only, when the agent
    filters the history), the open tasks (only when there are some)."""
    base = queryset if queryset is not None else Customer.objects.all()
    open_tasks = Task.objects.filter(customer_id=OuterRef("pk"), status__in=OPEN_TASK_STATUSES)
    customer = (
        base.select_related("household")
        .defer(*SEARCH_COLUMNS)
        # Most customers have no open task: ask in this row rather than in a query of its own.
        .annotate(has_open_tasks=Exists(open_tasks))
        .get(pk=customer_id)
    )
    # Only what the history shows: not the agents' password hashes and flags.
    reads = [
        _accounts(customer_id=customer.pk),
        _history(customer_id=customer.pk, channel=history_channel, before=None, limit=SCREEN_HISTORY),
    ]
    if customer.household_id is not None:
        reads.append(_members(household_id=customer.household_id, customer_id=customer.pk))
    accounts, interactions, *rest = _run(*reads)
    members: list[Customer] = rest[0] if rest else []
    tasks: list[Task] = []
    if customer.has_open_tasks:  # type: ignore[attr-defined]
        tasks = list(
            Task.objects.filter(customer_id=customer.pk, status__in=OPEN_TASK_STATUSES)
            .select_related("assigned_to")
            .order_by(F("due_at").asc(nulls_last=True), "priority")
        )
    return CustomerScreen(customer, members, accounts, interactions, tasks)


def customer_timeline(
    *,
    customer_id: int,
    channels: list[str] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> QuerySet[Interaction]:
    """The whole contact history, newest first, for cursor pagination."""
    interactions = (
        Interaction.objects.filter(customer_id=customer_id)
        .select_related("agent", "source_system")
        .only(*HISTORY_FIELDS, "source_system__code", "source_system__name")
    )
    if channels:
        interactions = interactions.filter(channel__in=channels)
    if since:
        interactions = interactions.filter(occurred_at__gte=since)
    if until:
        interactions = interactions.filter(occurred_at__lt=until)
    return interactions.order_by("-occurred_at", "-id")


def customer_history_page(
    *,
    customer_id: int,
    channel: str = "",
    before: tuple[dt.datetime, int] | None = None,
    limit: int = SCREEN_HISTORY,
) -> tuple[list[Interaction], tuple[dt.datetime, int] | None]:
    """One page of the contact history, newest first, and the cursor of the next
    (None on the last): keyset pagination on (occurred_at, id) along the
    ``interaction_timeline`` index, so page 200 costs what page 1 does (no OFFSET)."""
    (rows,) = _run(_history(customer_id=customer_id, channel=channel, before=before, limit=limit + 1))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], (last.occurred_at, last.pk)


def household_with_members(*, household_id: int, queryset: QuerySet[Household]) -> Household:
    return queryset.prefetch_related(
        Prefetch("members", queryset=Customer.objects.order_by("sort_name"))
    ).get(pk=household_id)


# --- Change history -------------------------------------------------------------------------


def customer_changes(*, customer_id: int, field: str | None = None) -> QuerySet[CustomerChange]:
    """A customer's field changes, newest first, with who made them and through which source."""
    changes = CustomerChange.objects.filter(customer_id=customer_id)
    if field:
        changes = changes.filter(field=field)
    return changes.select_related("actor", "source_system").order_by("-at", "-id")
