"""What a script's graph must be: its shape (checked on every save of a draft)
and its soundness (checked before publish), and the typing of answers.

A graph::

    {"start": "greet",
     "steps": [{"key": "greet", "title": "Greeting", "text": "Hello {{ customer.first_name | \\"there\\" }}",
                "end": false, "next": "reason",
                "questions": [{"key": "moving", "label": "Moving soon?", "type": "yes_no", "required": true}],
                "branches": [{"kind": "match", "question": "moving", "value": true, "to": "mortgage",
                              "label": "moving"},
                             {"kind": "cel", "condition": "answers.moving && customer.tier == \\"gold\\"",
                              "to": "gold", "label": "gold mover"}],
                "actions": [{"action": "raise_event", "settings": {"type": "script.answered"}}]}]}

The steps' order is the designer's order. Branches are tried in order and the
first that holds decides; ``next`` is the default. Question keys are unique in
the whole script (answers are keyed by them; CEL reads ``answers.<key>``).

Publish problems are tied to their step (``Problem.step``; empty for the
script as a whole): unreachable steps, a step with no way forward, a loop with
no exit, an unknown merge field, a CEL condition that does not compile or names
an unknown answer, an action with missing settings.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cel
from django.core.exceptions import ValidationError

from policies.conditions import CUSTOMER_FIELDS, ZERO, tokens
from scripting import actions, rendering

KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
QUESTION_TYPES: dict[str, str] = {
    "yes_no": "Yes / no",
    "single": "One choice",
    "multi": "Several choices",
    "text": "Free text",
    "number": "Number",
    "date": "Date",
}
# Each answer's type in CEL, and the value an unanswered (optional) question reads as.
CEL_TYPE = {"yes_no": "bool", "single": "string", "multi": "list", "text": "string", "number": "double",
            "date": "string"}  # fmt: skip
EMPTY: dict[str, Any] = {**ZERO, "list": []}
_CEL_ROOTS = ("answers", "customer")
_BUILTINS = frozenset(
    "true false null in has size int uint double string bool type dyn matches contains startsWith "
    "endsWith all exists exists_one map filter".split()
)


@dataclass(frozen=True)
class Problem:
    step: str  # the step's key; "" for the script as a whole
    message: str

    def __str__(self) -> str:
        return f"Step “{self.step}”: {self.message}" if self.step else self.message


def problems_error(problems: Iterable[Problem]) -> ValidationError:
    by_step: dict[str, list[str]] = {}
    for problem in problems:
        by_step.setdefault(problem.step or "script", []).append(problem.message)
    return ValidationError(by_step)


# --- Shape ----------------------------------------------------------------------------------


def empty_graph() -> dict[str, Any]:
    return {"start": "start", "steps": [new_step("start", title="Greeting", text="Hello.", end=False)]}


def new_step(key: str, *, title: str = "", text: str = "", end: bool = False) -> dict[str, Any]:
    return {"key": key, "title": title or key.replace("_", " ").capitalize(), "text": text, "end": end,
            "next": "", "questions": [], "branches": [], "actions": []}  # fmt: skip


def shape_problems(graph: Any) -> list[Problem]:
    """Is ``graph`` a well-formed document (keys, types, known kinds)? A draft
    must be, to be stored at all; soundness waits for publish."""
    if not isinstance(graph, dict) or not isinstance(graph.get("steps"), list):
        return [Problem("", "A script is an object with a list of steps.")]
    problems: list[Problem] = []
    steps: set[str] = set()
    questions: set[str] = set()
    for index, step in enumerate(graph["steps"]):
        if not isinstance(step, dict) or not isinstance(step.get("key"), str) or not KEY.match(step["key"]):
            problems.append(Problem("", f"Step {index + 1} needs a key: lower-case letters, digits and _, "
                                    "starting with a letter, at most 40."))  # fmt: skip
            continue
        key = step["key"]
        if key in steps:
            problems.append(Problem(key, "Another step has this key: give each step its own."))
        steps.add(key)
        for name in ("title", "text", "next"):
            if not isinstance(step.get(name, ""), str):
                problems.append(Problem(key, f"{name} must be text."))
        if not isinstance(step.get("end", False), bool):
            problems.append(Problem(key, "end must be true or false."))
        for name in ("questions", "branches", "actions"):
            if not isinstance(step.get(name, []), list):
                problems.append(Problem(key, f"{name} must be a list."))
        for question in step.get("questions") or []:
            problems.extend(_question_shape(key, question, questions))
        for branch in step.get("branches") or []:
            problems.extend(_branch_shape(key, branch))
        for action in step.get("actions") or []:
            if not isinstance(action, dict) or action.get("action") not in actions.REGISTRY:
                problems.append(Problem(key, f"Unknown action: use one of {', '.join(actions.REGISTRY)}."))
            elif not isinstance(action.get("settings", {}), dict):
                problems.append(Problem(key, f"The settings of {action['action']} must be an object."))
    if not isinstance(graph.get("start"), str) or graph.get("start") not in steps:
        problems.append(Problem("", "Choose the first step (start) among the steps."))
    return problems


def _question_shape(step: str, question: Any, seen: set[str]) -> list[Problem]:
    if (
        not isinstance(question, dict)
        or not isinstance(question.get("key"), str)
        or not KEY.match(question["key"])
    ):
        return [Problem(step, "Each question needs a key: lower-case letters, digits and _.")]
    key = question["key"]
    problems = []
    if key in seen:
        problems.append(Problem(step, f"Question key “{key}” is used twice: answers are kept by key."))
    seen.add(key)
    if question.get("type") not in QUESTION_TYPES:
        problems.append(Problem(step, f"Question “{key}”: type must be one of {', '.join(QUESTION_TYPES)}."))
    if question.get("type") in ("single", "multi"):
        choices = question.get("choices")
        if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
            problems.append(Problem(step, f"Question “{key}”: list its choices."))
    for name in ("min", "max", "min_length", "max_length"):
        value = question.get(name)
        if value is None:
            continue
        if question.get("type") == "date" and name in ("min", "max"):
            if not isinstance(value, str) or not is_date(value):
                problems.append(Problem(step, f"Question “{key}”: {name} must be a date, YYYY-MM-DD."))
        elif isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(Problem(step, f"Question “{key}”: {name} must be a number."))
    pattern = question.get("pattern") or ""
    try:
        re.compile(pattern)
    except (re.error, TypeError):
        problems.append(Problem(step, f"Question “{key}”: the pattern is not a valid regular expression."))
    return problems


def is_date(value: str) -> bool:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _branch_shape(step: str, branch: Any) -> list[Problem]:
    if not isinstance(branch, dict) or branch.get("kind") not in ("match", "cel"):
        return [Problem(step, 'A branch is {"kind": "match", "question", "value", "to"} or '
                        '{"kind": "cel", "condition", "to"}.')]  # fmt: skip
    if not isinstance(branch.get("to"), str):
        return [Problem(step, "Each branch names the step it goes to (to).")]
    return []


# --- Soundness (before publish) ---------------------------------------------------------------


def steps_by_key(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["key"]: step for step in graph["steps"]}


def question_index(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {q["key"]: q for step in graph["steps"] for q in step.get("questions") or []}


def targets(step: dict[str, Any]) -> list[str]:
    """Where a step can go: each branch's step, then the default."""
    found = [b["to"] for b in step.get("branches") or [] if b.get("to")]
    if step.get("next"):
        found.append(step["next"])
    return found


def publish_problems(graph: Any) -> list[Problem]:
    """Everything that stops a draft from being published, each tied to its step."""
    shape = shape_problems(graph)
    if shape:
        return shape
    steps = steps_by_key(graph)
    questions = question_index(graph)
    problems: list[Problem] = []
    if not any(step.get("end") for step in steps.values()):
        problems.append(Problem("", "No step ends the script: mark at least one step as an end step."))
    for key, step in steps.items():
        for target in targets(step):
            if target not in steps:
                problems.append(Problem(key, f"Goes to “{target}”, which is not a step."))
        if step.get("end"):
            if targets(step):
                problems.append(
                    Problem(key, "An end step closes the run: remove its next step and branches.")
                )
        elif not step.get("next"):
            problems.append(
                Problem(key, "No way forward: choose a default next step (or make it an end step).")
            )
        for message in rendering.parse(step.get("text", "")).problems:
            problems.append(Problem(key, message))
        problems.extend(_branch_problems(key, step, questions))
        problems.extend(_action_problems(key, step, questions))
    reachable = _reach(graph["start"], lambda k: targets(steps[k]) if k in steps else [])
    for key in steps:
        if key not in reachable:
            problems.append(Problem(key, "Unreachable: no step leads here from the first step."))
    # A reachable step from which no end can be reached sits in a loop with no exit.
    ends = {k for k, s in steps.items() if s.get("end")}
    leads_to_end = _reach_back(steps, ends)
    for key in steps:
        if key in reachable and key not in leads_to_end and not _no_way_forward(steps[key]):
            problems.append(Problem(key, "In a loop with no exit: no path from here reaches an end step."))
    return problems


def _no_way_forward(step: dict[str, Any]) -> bool:
    return not step.get("end") and not step.get("next")


def _reach(start: str, following: Any) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for target in following(todo.pop()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _reach_back(steps: dict[str, dict[str, Any]], ends: set[str]) -> set[str]:
    coming: dict[str, set[str]] = {}
    for key, step in steps.items():
        for target in targets(step):
            coming.setdefault(target, set()).add(key)
    found = set(ends)
    todo = list(ends)
    while todo:
        for source in coming.get(todo.pop(), ()):
            if source not in found:
                found.add(source)
                todo.append(source)
    return found


def _branch_problems(key: str, step: dict[str, Any], questions: dict[str, dict[str, Any]]) -> list[Problem]:
    problems = []
    for number, branch in enumerate(step.get("branches") or [], start=1):
        if branch["kind"] == "match":
            question = questions.get(branch.get("question", ""))
            if question is None:
                problems.append(Problem(key, f"Branch {number} matches an unknown question "
                                        f"“{branch.get('question', '')}”: use one of "
                                        f"{', '.join(questions) or '(no questions yet)'}."))  # fmt: skip
                continue
            try:
                answer_value(question, branch.get("value"))
            except ValidationError as exc:
                problems.append(Problem(key, f"Branch {number}: {exc.messages[0]}"))
        else:
            for message in cel_problems(branch.get("condition", ""), questions):
                problems.append(Problem(key, f"Branch {number}: {message}"))
    return problems


def _action_problems(key: str, step: dict[str, Any], questions: dict[str, dict[str, Any]]) -> list[Problem]:
    problems = []
    for action in step.get("actions") or []:
        spec = actions.REGISTRY[action["action"]]
        for message in spec.problems(action.get("settings") or {}, questions):
            problems.append(Problem(key, f"Action {action['action']}: {message}"))
    return problems


# --- CEL conditions ---------------------------------------------------------------------------


def cel_problems(condition: str, questions: dict[str, dict[str, Any]]) -> list[str]:
    """A branch condition over ``answers.<question>`` and ``customer.<field>``:
    syntax, names, and a trial run on empty answers."""
    if not isinstance(condition, str) or not condition.strip():
        return ["Write the condition, e.g. answers.moving == true."]
    try:
        program = program_for(condition)
    except Exception as exc:  # noqa: BLE001  (the parser raises several kinds)
        return [compile_error(str(exc), condition)]
    problems = []
    toks = tokens(condition)
    for i, tok in enumerate(toks):
        if tok.kind != "ident" or (i > 0 and toks[i - 1].text == ".") or tok.text in _BUILTINS:
            continue
        if tok.text not in _CEL_ROOTS:
            problems.append(
                f"Unknown name “{tok.text}”: a condition reads answers.<question> and customer.<field>."
            )
            continue
        name = toks[i + 2].text if i + 2 < len(toks) and toks[i + 1].text == "." else ""
        if tok.text == "answers" and name not in questions:
            problems.append(f"answers.{name} names no question of this script: use one of "
                            f"{', '.join(questions) or '(no questions yet)'}.")  # fmt: skip
        if tok.text == "customer" and name not in CUSTOMER_FIELDS:
            problems.append(
                f"Unknown field customer.{name}: use one of {', '.join(sorted(CUSTOMER_FIELDS))}."
            )
    if problems:
        return problems
    try:
        result = program.execute(cel_context(answers={}, questions=questions, customer=None))
    except Exception as exc:  # noqa: BLE001
        return [f"This condition cannot be evaluated: {str(exc).split('. ')[0]}."]
    if not isinstance(result, bool):
        return [f"The condition must give true or false; it gives {type(result).__name__}."]
    return []


_PARSE_ERROR = re.compile(r"<input>:(\d+):(\d+): (.*)")


def compile_error(text: str, condition: str) -> str:
    """The parser's message as an author reads it: where (with a ▸ marking the
    spot in the condition), then what, without the parser's long list of the
    tokens it expected."""
    found = _PARSE_ERROR.search(text)
    if found is None:
        return f"The condition does not compile: {text.splitlines()[0]}"
    line, column, what = found.groups()
    where = f"line {line}, column {column}" if line != "1" else f"column {column}"
    lines = condition.splitlines() or [""]
    row, col = min(int(line), len(lines)) - 1, int(column) - 1
    marked = f"{lines[row][:col]}▸{lines[row][col:]}".strip()
    return f"The condition does not compile at {where} ({marked}): {what.split(' expecting {')[0]}."


@lru_cache(maxsize=8192)
def program_for(condition: str) -> cel.Program:
    """Compiled once per condition text: a published version's conditions never
    change, so its programs stay cached for as long as it runs."""
    return cel.compile(condition)


def cel_context(
    *, answers: dict[str, Any], questions: dict[str, dict[str, Any]], customer: dict[str, Any] | None
) -> cel.Context:
    typed = {key: EMPTY[CEL_TYPE[q["type"]]] for key, q in questions.items()}
    typed.update({k: v for k, v in answers.items() if k in typed and v is not None})
    facts = customer or {name: ZERO[kind] for name, kind in CUSTOMER_FIELDS.items()}
    return cel.Context({"answers": typed, "customer": facts})


# --- Answers ------------------------------------------------------------------------------------


def answer_value(question: dict[str, Any], raw: Any) -> Any:
    """``raw`` (a form's text or list, or a JSON value) as the question's type;
    None when empty. A wrong type or a broken rule raises naming the question."""
    label = question.get("label") or question["key"]
    kind = question["type"]

    def refuse(message: str) -> ValidationError:
        return ValidationError({question["key"]: f"“{label}”: {message}"})

    if raw is None or raw in ("", []):
        return None
    if kind == "yes_no":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("yes", "true", "y", "1"):
            return True
        if text in ("no", "false", "n", "0"):
            return False
        raise refuse("answer yes or no.")
    if kind == "multi":
        values = raw if isinstance(raw, list) else [raw]
        bad = [str(v) for v in values if v not in question.get("choices", [])]
        if bad:
            raise refuse(f"{', '.join(bad)} is not a choice: choose among {', '.join(question['choices'])}.")
        return [c for c in question["choices"] if c in values]
    if isinstance(raw, list | dict) or (isinstance(raw, bool) and kind != "yes_no"):
        raise refuse(f"expects {QUESTION_TYPES[kind].lower()}, not {type(raw).__name__}.")
    if kind == "single":
        if raw not in question.get("choices", []):
            raise refuse(f"“{raw}” is not a choice: choose one of {', '.join(question.get('choices', []))}.")
        return raw
    if kind == "number":
        try:
            number = float(str(raw).replace(",", ""))
        except ValueError:
            raise refuse(f"“{raw}” is not a number: type digits, e.g. 42 or 12.5.") from None
        if question.get("min") is not None and number < question["min"]:
            raise refuse(f"must be at least {question['min']}.")
        if question.get("max") is not None and number > question["max"]:
            raise refuse(f"must be at most {question['max']}.")
        return number
    if kind == "date":
        try:
            day = dt.date.fromisoformat(str(raw).strip()).isoformat()
        except ValueError:
            raise refuse(f"“{raw}” is not a date: use YYYY-MM-DD.") from None
        if question.get("min") and day < question["min"]:
            raise refuse(f"must be on or after {question['min']}.")
        if question.get("max") and day > question["max"]:
            raise refuse(f"must be on or before {question['max']}.")
        return day
    text = str(raw).strip()
    if question.get("min_length") is not None and len(text) < question["min_length"]:
        raise refuse(f"needs at least {question['min_length']} characters.")
    if question.get("max_length") is not None and len(text) > question["max_length"]:
        raise refuse(f"takes at most {question['max_length']} characters.")
    if question.get("pattern") and not re.fullmatch(question["pattern"], text):
        raise refuse(f"does not match the expected form ({question['pattern']}).")
    return text
