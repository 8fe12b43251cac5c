"""Reads of call scripting: the agent's panel (at most two queries), the
supervisor's lists, the diagram's layout and the analytics of a version."""

from __future__ import annotations

import itertools
import statistics
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import Count, F, Model, Q, QuerySet
from django.utils.dateparse import parse_datetime

from crm.models import Customer, User
from crm.services.events import server_bound_cursor
from scripting import rendering, validation
from scripting.models import Answer, Run, RunStatus, Script, ScriptVersion, VersionStatus

# --- The agent's panel ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuestionView:
    spec: dict[str, Any]
    value: Any  # the saved answer, typed; None when unanswered
    error: str = ""

    @property
    def key(self) -> str:
        return str(self.spec["key"])

    @property
    def shown(self) -> str:
        return answer_shown(self.value)


@dataclass(frozen=True)
class Panel:
    run: Run | None
    script_name: str = ""
    step: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    questions: list[QuestionView] = field(default_factory=list)
    path: list[tuple[str, str]] = field(default_factory=list)  # (key, title) of the steps taken
    done: int = 0  # steps taken
    total: int = 0  # steps taken plus the fewest still to go
    # Answers of past runs shown in the contact history, by run id: [(question, answer)].
    history: dict[int, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100

    @property
    def to_go(self) -> int:
        return self.total - self.done

    @property
    def completed(self) -> bool:
        return self.run is not None and self.run.status == RunStatus.COMPLETED


def answer_shown(value: Any) -> str:
    if value is True:
        return "Yes"
    if value is False:
        return "No"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def steps_to_end(graph: dict[str, Any], start: str) -> int:
    """The fewest steps from ``start`` to an end step (for the progress bar)."""
    steps = validation.steps_by_key(graph)
    frontier, seen, distance = [start], {start}, 0
    while frontier:
        if any(steps.get(k, {}).get("end") for k in frontier):
            return distance
        following = [t for k in frontier for t in validation.targets(steps.get(k, {})) if t not in seen]
        seen.update(following)
        frontier = following
        distance += 1
    return distance


def _answers_by_run(run_ids: set[int]) -> dict[int, list[Answer]]:
    answers: dict[int, list[Answer]] = defaultdict(list)
    if run_ids:
        for answer in Answer.objects.filter(run_id__in=run_ids).order_by("at", "id"):
            answers[answer.run_id].append(answer)
    return answers


def history_answers(run_ids: Iterable[int]) -> Panel:
    """The script answers of contact-history entries (a page of the history past
    the screen's first), shaped as the panel's ``history``: one query."""
    answers = _answers_by_run(set(run_ids))
    history = {
        run_id: [(a.label or a.question, answer_shown(a.value)) for a in rows]
        for run_id, rows in answers.items()
    }
    return Panel(run=None, history=history)


_RUN_MODELS: tuple[type[Model], ...] = (Run, ScriptVersion, Script)
_run_sql: str | None = None
_run_sql_lock = threading.Lock()


def _shown_run_sql() -> str:
    """The agent's run shown on a customer's screen, with its version and script
    (their columns in the models' field order, for ``Model.from_db``). Every screen
    runs it, and mostly finds nothing: the ORM's compilation of the equivalent
    query was most of the panel's cost, so it is built once per process."""
    global _run_sql  # noqa: PLW0603  (built once per process from the models)
    if _run_sql is not None:
        return _run_sql
    with _run_sql_lock:
        quote = connection.ops.quote_name
        selected = ", ".join(
            f"{alias}.{quote(f.column)}"
            for alias, model in zip(("r", "v", "s"), _RUN_MODELS, strict=True)
            for f in model._meta.concrete_fields
        )
        run = {f.name: quote(f.column) for f in Run._meta.concrete_fields}
        _run_sql = (
            f"SELECT {selected} FROM {quote(Run._meta.db_table)} r "
            f"JOIN {quote(ScriptVersion._meta.db_table)} v ON v.{quote('id')} = r.{run['version']} "
            f"JOIN {quote(Script._meta.db_table)} s "
            f"ON s.{quote('id')} = v.{quote(ScriptVersion._meta.get_field('script').column)} "
            f"WHERE r.{run['customer']} = %s AND r.{run['agent']} = %s "
            # In progress, or completed on a call not yet wrapped up (the agent still sees how it ended).
            f"AND (r.{run['status']} = %s OR (r.{run['status']} = %s "
            f"AND r.{run['call_id']} IS NOT NULL AND r.{run['interaction']} IS NULL)) "
            f"ORDER BY r.{run['started_at']} DESC LIMIT 1"
        )
        return _run_sql


def _from_row(model: type[Model], values: Sequence[Any]) -> Any:
    """An instance of ``model`` from its columns as the cursor gave them, through
    the fields' converters as the ORM applies them (JSON arrives as text)."""
    fields: Sequence[Any] = model._meta.concrete_fields
    converted = list(values)
    for index, f in enumerate(fields):
        for converter in f.get_db_converters(connection):
            converted[index] = converter(converted[index], f.cached_col, connection)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def shown_run(*, customer_id: int, agent_id: int) -> Run | None:
    """This agent's run in progress for the customer (or completed on a call not
    yet wrapped up), the newest, with its version and script: one statement."""
    with server_bound_cursor() as cursor:  # the same statement on every screen: prepared
        cursor.execute(
            _shown_run_sql(), [customer_id, agent_id, RunStatus.ACTIVE.value, RunStatus.COMPLETED.value]
        )
        row = cursor.fetchone()
    if row is None:
        return None
    instances = []
    start = 0
    for model in _RUN_MODELS:
        width = len(model._meta.concrete_fields)
        instances.append(_from_row(model, row[start : start + width]))
        start += width
    run, version, script = instances
    ScriptVersion.script.field.set_cached_value(version, script)
    Run.version.field.set_cached_value(run, version)
    return run  # type: ignore[no-any-return]


def panel(
    *,
    customer: Customer,
    agent: User,
    accounts: Sequence[Any] = (),
    offers: Sequence[Any] = (),
    history_run_ids: Iterable[int] = (),
) -> Panel:
    """The script panel of a customer screen, in at most two queries: this agent's
    run in progress for the customer (with its version), and the answers of that
    run and of the runs the shown contact history names. The merge fields are
    filled from rows the screen already read (customer, household, accounts, the
    first offer) and the call facts the run copied when it started."""
    run = shown_run(customer_id=customer.pk, agent_id=agent.pk)
    answers = _answers_by_run({*history_run_ids, *([run.pk] if run else [])})
    history = {
        run_id: [(a.label or a.question, answer_shown(a.value)) for a in rows]
        for run_id, rows in answers.items()
        if run is None or run_id != run.pk
    }
    if run is None:
        return Panel(run=None, history=history)
    graph = run.version.graph
    steps = validation.steps_by_key(graph)
    step = steps[run.current_step]
    saved = {a.question: a.value for a in answers.get(run.pk, [])}
    values = rendering.merge_values(
        customer=customer, accounts=accounts, offer=offers[0].offer if offers else None,
        call=run.call_facts, campaign_code=run.campaign_code,
    )  # fmt: skip
    done = len(run.path) - 1  # steps left behind; the shortest way on gives the rest
    return Panel(
        run=run,
        script_name=run.version.script.name,
        step=step,
        text=rendering.render(step.get("text", ""), values),
        questions=[QuestionView(q, saved.get(q["key"])) for q in step.get("questions") or []],
        path=[(k, steps[k].get("title") or k) for k in run.path],
        done=done,
        total=done + steps_to_end(graph, run.current_step),
        history=history,
    )


# --- Supervisors ----------------------------------------------------------------------------------------


def scripts_listed() -> QuerySet[Script]:
    return Script.objects.annotate(
        published=Count("versions", filter=Q(versions__status=VersionStatus.PUBLISHED)),
        has_draft=Count("versions", filter=Q(versions__status=VersionStatus.DRAFT)),
        runs=Count("versions__runs"),
    ).order_by("name")


def versions_of(script: Script) -> list[ScriptVersion]:
    """The draft first, then the published and retired versions, newest first."""
    return list(script.versions.order_by(F("number").desc(nulls_first=True)))


# --- Analytics --------------------------------------------------------------------------------------------


PATHS_SHOWN = 20


@dataclass(frozen=True)
class StepStats:
    key: str
    title: str
    reached: int  # runs that arrived at it at least once
    dropped: int  # abandoned runs that stopped here
    median_seconds: float | None  # time spent per visit, when left


@dataclass(frozen=True)
class QuestionStats:
    key: str
    label: str
    answered: int
    counts: list[tuple[str, int]]  # the value shown, how many (most first)


@dataclass(frozen=True)
class PathStats:
    path: tuple[str, ...]
    runs: int
    completed: int
    dispositions: list[tuple[str, int]]
    offers_accepted: int


@dataclass(frozen=True)
class Analytics:
    runs: int
    completed: int
    abandoned: int
    active: int
    steps: list[StepStats]
    questions: list[QuestionStats]
    paths: list[PathStats]  # the most taken first, at most PATHS_SHOWN
    other_paths: int = 0  # how many rarer paths are not listed

    @property
    def completion_rate(self) -> int:
        finished = self.completed + self.abandoned
        return round(100 * self.completed / finished) if finished else 0


def version_analytics(version: ScriptVersion) -> Analytics:
    """Runs, completion, drop-off and time per step, answer distribution per
    question, and outcomes per path, for one version: two queries (runs, answers)."""
    runs = list(Run.objects.filter(version=version).values("id", "status", "current_step", "path", "visits",
                                                         "disposition", "offers_accepted"))  # fmt: skip
    status = Counter(r["status"] for r in runs)
    reached: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    durations: dict[str, list[float]] = defaultdict(list)
    paths: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    for r in runs:
        visits = [(k, parse_datetime(t)) for k, t in r["visits"]]
        reached.update({k for k, _ in visits})
        for (key, at), (_, left) in itertools.pairwise(visits):
            if at and left:
                durations[key].append((left - at).total_seconds())
        if r["status"] == RunStatus.ABANDONED:
            dropped[r["current_step"]] += 1
        paths[tuple(r["path"])].append(r)
    graph = version.graph
    steps = [
        StepStats(s["key"], s.get("title") or s["key"], reached[s["key"]], dropped[s["key"]],
                  statistics.median(durations[s["key"]]) if durations[s["key"]] else None)
        for s in graph.get("steps", [])
    ]  # fmt: skip
    by_question: dict[str, Counter[str]] = defaultdict(Counter)
    for question, value in Answer.objects.filter(run__version=version).values_list("question", "value"):
        by_question[question][answer_shown(value)] += 1
    questions = [
        QuestionStats(
            key, q.get("label") or key, sum(by_question[key].values()), by_question[key].most_common()
        )
        for key, q in validation.question_index(graph).items()
    ]
    path_stats = sorted(
        (
            PathStats(
                path, len(rows), sum(1 for r in rows if r["status"] == RunStatus.COMPLETED),
                Counter(r["disposition"] for r in rows if r["disposition"]).most_common(),
                sum(len(r["offers_accepted"]) for r in rows),
            )
            for path, rows in paths.items()
        ),
        key=lambda p: -p.runs,
    )  # fmt: skip
    return Analytics(
        runs=len(runs), completed=status[RunStatus.COMPLETED], abandoned=status[RunStatus.ABANDONED],
        active=status[RunStatus.ACTIVE], steps=steps, questions=questions, paths=path_stats[:PATHS_SHOWN],
        other_paths=len(path_stats[PATHS_SHOWN:]),
    )  # fmt: skip
