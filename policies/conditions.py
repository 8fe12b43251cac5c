"""Policy conditions: CEL expressions over ``{event, customer, history}``.

A condition is compiled and checked when its policy is saved, so a supervisor
sees a mistake then, with its line and column, and the engine never meets one:

1. syntax: the ``common-expression-language`` parser (its message and position);
2. names: every ``event.<field>`` must be a payload field of *every* trigger
   type of the policy (or ``type`` / ``source``), every ``customer.<field>`` one
   of ``CUSTOMER_FIELDS``, every ``history.<function>(...)`` one of
   ``HISTORY_FUNCTIONS`` naming a catalog event type;
3. types: a field compared with a literal of another type
   (``customer.tier == 5``, ``event.amount > "10000"``) is refused, because CEL
   never converts and such a comparison is silently false forever;
4. the condition is run once on a sample of the right types, which catches the
   remaining type errors (``event.amount + "x"``) and a result that is not
   true or false.

The library wraps the Rust CEL interpreter, which has no static type checker:
steps 2 and 3 are ours, done on the expression's tokens (a name check and the
common comparison of a field with a literal); step 4 covers the rest except
inside a branch the sample short-circuits away.

``history`` offers two functions, called on it:
``history.count("offer.declined", 30)`` (events of that type in the last 30
days) and ``history.days_since("offer.declined")`` (whole days since the last
one; ``NEVER_DAYS`` when none is kept). CEL has no named arguments, so the
issue's ``days=30`` is written as the second argument.

Fields absent from an event (optional ones) read as their type's empty value
(``""``, ``0``, ``0.0``, ``false``), so a condition never fails on a missing
field. Dates and date-times are ISO 8601 text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cel
from django.core.exceptions import ValidationError

from crm import events

CelType = str  # "string" | "double" | "int" | "bool"

PAYLOAD_TO_CEL: dict[str, CelType] = {
    "string": "string",
    "number": "double",
    "integer": "int",
    "boolean": "bool",
    "date": "string",
    "datetime": "string",
}
ZERO: dict[CelType, Any] = {"string": "", "double": 0.0, "int": 0, "bool": False}

# Every event, whatever its type, also carries these.
EVENT_META_FIELDS: dict[str, CelType] = {"type": "string", "source": "string"}

CUSTOMER_FIELDS: dict[str, CelType] = {
    "id": "int",
    "kind": "string",
    "tier": "string",
    "lifetime_value": "double",
    "status": "string",
    "language": "string",
    "time_zone": "string",
    "preferred_channel": "string",
    "do_not_call": "bool",
    "do_not_email": "bool",
    "marketing_opt_in": "bool",
    "age": "int",
    "country": "string",
    "in_household": "bool",
}

NEVER_DAYS = 100_000
HISTORY_FUNCTIONS: dict[str, str] = {
    "count": 'history.count("<event type>", <days>): how many such events in the last <days> days',
    "days_since": 'history.days_since("<event type>"): whole days since the last one '
    f"({NEVER_DAYS} when there is none)",
}
ROOTS = ("event", "customer", "history")

# Names CEL itself gives meaning to: literals, operators, standard functions and macros.
_BUILTINS = frozenset(
    "true false null in has size int uint double string bool bytes type timestamp duration dyn "
    "matches contains startsWith endsWith all exists exists_one map filter max min "
    "getFullYear getMonth getDayOfMonth getDayOfWeek getHours".split()
)
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})

_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<string>[rRbB]?"(?:[^"\\\n]|\\.)*"|[rRbB]?'(?:[^'\\\n]|\\.)*')
    |(?P<double>\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\.\d+(?:[eE][+-]?\d+)?)
    |(?P<uint>(?:0x[0-9a-fA-F]+|\d+)[uU])
    |(?P<int>0x[0-9a-fA-F]+|\d+)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}])
    """,
    re.VERBOSE,
)
_SYNTAX = re.compile(r"<input>:(\d+):(\d+): (?:Syntax error: )?(.*)")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    offset: int


@dataclass(frozen=True)
class Problem:
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        if self.line == 0:
            return self.message
        return f"Line {self.line}, column {self.column}: {self.message}"


def event_fields(trigger_types: Iterable[str]) -> dict[str, CelType]:
    """The ``event`` fields a policy triggered by all of ``trigger_types`` may read:
    those every one of them has, with one type."""
    shared: dict[str, CelType] | None = None
    for name in trigger_types:
        fields = {f: PAYLOAD_TO_CEL[kind] for f, kind in events.get(name).fields.items()}
        if shared is None:
            shared = fields
        else:
            shared = {f: t for f, t in shared.items() if fields.get(f) == t}
    return {**EVENT_META_FIELDS, **(shared or {})}


def check(condition: str, trigger_types: list[str]) -> cel.Program | None:
    """Compile ``condition`` for a policy triggered by ``trigger_types``; raise a
    ValidationError on ``condition`` listing each problem with its position.
    An empty condition always holds (None)."""
    program, problems = diagnose(condition, trigger_types)
    if problems:
        raise ValidationError({"condition": [str(p) for p in problems]})
    return program


def diagnose(condition: str, trigger_types: list[str]) -> tuple[cel.Program | None, list[Problem]]:
    """The compiled program and every problem found, each with its position (the
    supervisor's editor marks them while they type); a problem of the whole
    expression (it cannot be evaluated) has line and column 0."""
    if not condition.strip():
        return None, []
    try:
        program = cel.compile(condition)
    except Exception as exc:  # noqa: BLE001  (the parser raises ValueError, or its own kinds)
        return None, [_syntax_problem(condition, str(exc))]
    problems = _name_and_type_problems(condition, trigger_types)
    if problems:
        return program, problems
    sample_problem = _sample_run(program, trigger_types)
    if sample_problem:
        return program, [Problem(0, 0, sample_problem)]
    return program, []


def _syntax_problem(condition: str, message: str) -> Problem:
    match = _SYNTAX.search(message)
    if not match:
        return Problem(1, 1, f"This is not a valid CEL expression: {message.splitlines()[0]}")
    line, column, text = int(match.group(1)), int(match.group(2)), match.group(3)
    text = text.split(" expecting ")[0]
    if "<EOF>" in text:
        text += " (the expression ends too early: something is missing at the end)"
    return Problem(line, column, f"Syntax error: {text}.")


def tokens(condition: str) -> list[Token]:
    out: list[Token] = []
    position = 0
    while position < len(condition):
        match = _TOKEN.match(condition, position)
        if match is None:  # the parser accepted it, so this is a form we do not read: stop here
            break
        kind = match.lastgroup or "op"
        if kind != "space":
            out.append(Token(kind, match.group(), position))
        position = match.end()
    return out


def _position(condition: str, offset: int) -> tuple[int, int]:
    before = condition[:offset]
    line = before.count("\n") + 1
    return line, offset - (before.rfind("\n") + 1) + 1


def _name_and_type_problems(condition: str, trigger_types: list[str]) -> list[Problem]:
    toks = tokens(condition)
    shared = event_fields(trigger_types)
    any_type_fields = {f for name in trigger_types for f in events.get(name).fields}
    problems: list[Problem] = []
    # (start index, end index exclusive) -> CEL type, for the comparison check.
    terms: dict[int, tuple[int, CelType]] = {}

    def problem(token: Token, message: str) -> None:
        problems.append(Problem(*_position(condition, token.offset), message))

    bound = _macro_variables(toks)

    for i, tok in enumerate(toks):
        if tok.kind in ("string", "int", "uint", "double"):
            terms[i] = (
                i + 1,
                {"string": "string", "int": "int", "uint": "int", "double": "double"}[tok.kind],
            )
            continue
        if tok.kind != "ident" or (i > 0 and toks[i - 1].text == "."):
            continue
        if tok.text in ("true", "false"):
            terms[i] = (i + 1, "bool")
            continue
        if tok.text in _BUILTINS or tok.text in bound:
            continue
        if tok.text not in ROOTS:
            problem(tok, f"Unknown name “{tok.text}”: a condition reads event, customer and history.")
            continue
        if i + 2 >= len(toks) or toks[i + 1].text != "." or toks[i + 2].kind != "ident":
            problem(tok, f"Name a field: {tok.text}.<field>, e.g. {_example(tok.text)}.")
            continue
        name = toks[i + 2]
        if tok.text == "event":
            if name.text in shared:
                terms[i] = (i + 3, shared[name.text])
            elif name.text in any_type_fields:
                having = [t for t in trigger_types if name.text in events.get(t).fields]
                problem(
                    name,
                    f"event.{name.text} is a field of {', '.join(having)} but not of every trigger type: "
                    "a policy may read only the fields all its trigger types share "
                    f"({', '.join(sorted(shared))}).",
                )
            else:
                problem(
                    name,
                    f"Unknown field event.{name.text} for {', '.join(trigger_types)}: "
                    f"use one of {', '.join(sorted(shared))}.",
                )
        elif tok.text == "customer":
            if name.text in CUSTOMER_FIELDS:
                terms[i] = (i + 3, CUSTOMER_FIELDS[name.text])
            else:
                problem(
                    name,
                    f"Unknown field customer.{name.text}: use one of {', '.join(sorted(CUSTOMER_FIELDS))}.",
                )
        else:
            end = _history_call(toks, i, problem)
            if end is not None:
                terms[i] = (end, "int")

    problems.extend(_comparison_problems(condition, toks, terms))
    return sorted(problems, key=lambda p: (p.line, p.column))


def _macro_variables(toks: list[Token]) -> set[str]:
    """Names bound by a macro: the ``x`` of ``list.exists(x, x > 1)``."""
    names = set()
    for i in range(len(toks) - 4):
        if (
            toks[i].text == "."
            and toks[i + 1].text in _MACROS
            and toks[i + 2].text == "("
            and toks[i + 3].kind == "ident"
            and toks[i + 4].text == ","
        ):
            names.add(toks[i + 3].text)
    return names


def _example(root: str) -> str:
    return {
        "event": "event.amount",
        "customer": 'customer.tier == "platinum"',
        "history": 'history.count("offer.declined", 30)',
    }[root]


def _history_call(toks: list[Token], i: int, problem: Callable[[Token, str], None]) -> int | None:
    """Check ``history.<function>("<type>"[, <days>])`` starting at token ``i``;
    return the index after its closing parenthesis when it is well formed."""
    name = toks[i + 2]
    usage = "; ".join(HISTORY_FUNCTIONS.values())
    if name.text not in HISTORY_FUNCTIONS:
        problem(name, f"history has no {name.text}: use {usage}.")
        return None
    args_at = i + 3
    if args_at >= len(toks) or toks[args_at].text != "(":
        problem(name, f"Call it: {HISTORY_FUNCTIONS[name.text]}.")
        return None
    first = toks[args_at + 1] if args_at + 1 < len(toks) else name
    if first.kind != "string":
        problem(first, f"Name the event type in quotes: {HISTORY_FUNCTIONS[name.text]}.")
        return None
    event_type = first.text.strip("\"'")
    if event_type not in events.CATALOG:
        problem(first, f"“{event_type}” is not a known event type.")
    after = args_at + 2
    if name.text == "count":
        if after + 1 >= len(toks) or toks[after].text != "," or toks[after + 1].kind != "int":
            problem(first, f"Give the number of days as a whole number: {HISTORY_FUNCTIONS['count']}.")
            return None
        after += 2
    if after >= len(toks) or toks[after].text != ")":
        problem(name, f"Too many arguments: {HISTORY_FUNCTIONS[name.text]}.")
        return None
    return after + 1


def _comparison_problems(
    condition: str, toks: list[Token], terms: dict[int, tuple[int, CelType]]
) -> list[Problem]:
    """A field compared with a literal (or another field) of a different type."""
    ends = {end: (start, kind) for start, (end, kind) in terms.items()}
    problems = []
    for k, tok in enumerate(toks):
        if tok.text not in _COMPARISONS or k not in ends or (k + 1) not in terms:
            continue
        left_start, left = ends[k]
        right_end, right = terms[k + 1]
        # Only a bare operand: in ``a + b > c`` the left side of > is not ``b``.
        if left_start > 0 and toks[left_start - 1].text in _ARITHMETIC | {".", "!"}:
            continue
        if right_end < len(toks) and toks[right_end].text in _ARITHMETIC | {".", "[", "("}:
            continue
        numeric = {"int", "double"}
        if left == right or (left in numeric and right in numeric):
            continue
        left_text = condition[toks[left_start].offset : toks[k - 1].offset + len(toks[k - 1].text)]
        right_text = condition[
            toks[k + 1].offset : toks[right_end - 1].offset + len(toks[right_end - 1].text)
        ]
        problems.append(
            Problem(
                *_position(condition, tok.offset),
                f"{left_text} is {_words(left)} and {right_text} is {_words(right)}: "
                f"CEL never converts, so this comparison can never hold. {_fix(left, right_text)}",
            )
        )
    return problems


def _words(kind: CelType) -> str:
    return {"string": "text", "double": "a number", "int": "a whole number", "bool": "true or false"}[kind]


def _fix(kind: CelType, literal: str) -> str:
    if kind == "string":
        return f'Compare with text in quotes, e.g. "{literal.strip(chr(34))}".'
    if kind in ("double", "int"):
        return "Compare with a number without quotes, e.g. 10000.0."
    return "Compare with true or false."


def _sample_run(program: cel.Program, trigger_types: list[str]) -> str | None:
    context = evaluation_context(
        event={name: ZERO[kind] for name, kind in event_fields(trigger_types).items()},
        customer={name: ZERO[kind] for name, kind in CUSTOMER_FIELDS.items()},
        history=None,
    )
    try:
        result = program.execute(context)
    except Exception as exc:  # noqa: BLE001  (the interpreter's errors have several kinds)
        message = str(exc).split(". ")[0]
        return (
            f"This condition cannot be evaluated: {message}. "
            "Check that each operator joins values of one type."
        )
    if not isinstance(result, bool):
        return f"The condition must give true or false; it gives {type(result).__name__} ({result!r})."
    return None


class History:
    """A customer's recent events, for ``history.count`` and ``history.days_since``:
    ``ages`` maps an event type to the ages in days (float) of its events kept."""

    __slots__ = ("ages",)

    def __init__(self, ages: dict[str, list[float]] | None = None) -> None:
        self.ages = ages or {}

    def count(self, _receiver: Any, event_type: str, days: int) -> int:
        return sum(1 for age in self.ages.get(event_type, ()) if age <= days)

    def days_since(self, _receiver: Any, event_type: str) -> int:
        ages = self.ages.get(event_type)
        return int(min(ages)) if ages else NEVER_DAYS


def evaluation_context(
    *, event: dict[str, Any], customer: dict[str, Any], history: History | None
) -> cel.Context:
    """One context per event, shared by every candidate policy's program."""
    history = history or History()
    return cel.Context(
        {"event": event, "customer": customer, "history": {}},
        {"count": history.count, "days_since": history.days_since},
    )


@lru_cache(maxsize=8192)
def compiled(policy_id: int, version: int, condition: str) -> cel.Program | None:
    """The program of one version of a policy's condition (checked when it was saved)."""
    return cel.compile(condition) if condition.strip() else None
