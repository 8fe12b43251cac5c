"""The validator: each problem tied to its step; the answers' types; a property
test that whatever graph it accepts, every reachable step can still reach an end."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from scripting import demo, validation
from scripting.validation import publish_problems
from tests.scripting.conftest import graph


def problems_by_step(g: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for problem in publish_problems(g):
        found.setdefault(problem.step, []).append(problem.message)
    return found


def step(g: dict[str, Any], key: str) -> dict[str, Any]:
    return next(s for s in g["steps"] if s["key"] == key)


def test_the_example_script_is_sound() -> None:
    assert publish_problems(graph()) == []


def test_an_unreachable_step_is_named() -> None:
    g = graph()
    step(g, "greet")["branches"] = []
    assert any("Unreachable" in m for m in problems_by_step(g)["moving"])


def test_a_step_with_no_way_forward_is_named() -> None:
    g = graph()
    step(g, "billing")["next"] = ""
    assert any("No way forward" in m for m in problems_by_step(g)["billing"])


def test_a_loop_with_no_exit_is_named_on_each_of_its_steps() -> None:
    g = graph()
    step(g, "billing")["next"] = "reason"
    step(g, "reason")["next"] = "billing"
    step(g, "reason")["branches"] = []
    found = problems_by_step(g)
    assert any("loop with no exit" in m for m in found["reason"])
    assert any("loop with no exit" in m for m in found["billing"])


def test_a_loop_with_a_branch_out_is_fine() -> None:
    g = graph()
    step(g, "billing")["next"] = "reason"  # back to the reason; its branch and default still lead out
    assert publish_problems(g) == []


def test_an_unknown_merge_field_is_named_with_the_fields_offered() -> None:
    g = graph()
    step(g, "close")["text"] = (
        "Bye {{ customer.password }} and {{ customer.first_name.__class__ }} {{ customer.__class__ }}"
    )
    messages = problems_by_step(g)["close"]
    assert any("Unknown merge field customer.password" in m and "customer.{first_name" in m for m in messages)
    assert any("is not a merge field" in m for m in messages)
    assert any("Unknown merge field customer.__class__" in m for m in messages)


def test_a_cel_condition_that_does_not_compile_is_named() -> None:
    g = graph()
    step(g, "reason")["branches"][0]["condition"] = 'answers.reason == "billing" &&'
    assert any("does not compile" in m for m in problems_by_step(g)["reason"])


def test_a_cel_condition_naming_an_unknown_answer_is_named() -> None:
    g = graph()
    step(g, "reason")["branches"][0]["condition"] = "answers.reasonn == 'billing'"
    assert any("answers.reasonn names no question" in m for m in problems_by_step(g)["reason"])


def test_an_action_with_missing_settings_is_named() -> None:
    g = graph()
    step(g, "billing")["actions"] = [
        {"action": "create_task", "settings": {}},
        {"action": "update_customer_field", "settings": {"field": "password", "question": "amount"}},
    ]
    messages = problems_by_step(g)["billing"]
    assert "Action create_task: set “Task title” (title)." in messages
    assert any("field must be one of" in m for m in messages)


def test_a_date_question_s_range_is_dates() -> None:
    g = graph()
    step(g, "reason")["questions"].append({"key": "when", "type": "date", "min": 5, "max": "2026-02-30"})
    messages = problems_by_step(g)["reason"]
    assert "Question “when”: min must be a date, YYYY-MM-DD." in messages
    assert "Question “when”: max must be a date, YYYY-MM-DD." in messages


def test_a_script_without_an_end_step_is_refused() -> None:
    g = graph()
    step(g, "close")["end"] = False
    step(g, "close")["next"] = "greet"
    assert any("No step ends" in m for m in problems_by_step(g)[""])


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [("yes_no", "yes", True), ("yes_no", False, False), ("number", "12.5", 12.5),
     ("date", "2026-01-31", "2026-01-31"), ("single", "card", "card"),
     ("multi", ["other", "card"], ["card", "other"]), ("text", "  Paris ", "Paris")],
)  # fmt: skip
def test_answers_are_typed(kind: str, raw: Any, expected: Any) -> None:
    question = {"key": "q", "label": "Q", "type": kind, "choices": ["card", "other"]}
    assert validation.answer_value(question, raw) == expected


@pytest.mark.parametrize(
    ("spec", "raw", "words"),
    [({"type": "number", "min": 0, "max": 10}, "twelve", "is not a number"),
     ({"type": "number", "min": 0, "max": 10}, "11", "at most 10"),
     ({"type": "yes_no"}, "maybe", "answer yes or no"),
     ({"type": "text", "pattern": r"[A-Z]{2}\d{3}"}, "ab123", "expected form"),
     ({"type": "text", "max_length": 3}, "abcd", "at most 3 characters"),
     ({"type": "date"}, "31/01/2026", "YYYY-MM-DD"),
     ({"type": "date", "min": "2026-01-01"}, "2025-12-31", "on or after 2026-01-01"),
     ({"type": "date", "max": "2026-06-30"}, "2026-07-01", "on or before 2026-06-30"),
     ({"type": "single", "choices": ["a"]}, "b", "not a choice"),
     ({"type": "number"}, ["1"], "expects number")],
)  # fmt: skip
def test_a_wrong_answer_is_refused_naming_the_question(spec: dict[str, Any], raw: Any, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validation.answer_value({"key": "ref", "label": "Booking reference", **spec}, raw)
    (message,) = caught.value.message_dict["ref"]
    assert message.startswith("“Booking reference”") and words in message


# --- The property: an accepted graph never traps a run ------------------------------------------

KEYS = [f"s{i}" for i in range(8)]


@st.composite
def random_graphs(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(min_value=1, max_value=len(KEYS)))
    keys = KEYS[:count]
    steps = []
    for key in keys:
        end = draw(st.booleans())
        targets = st.sampled_from(keys)
        branches = [] if end else [
            {"kind": "match", "question": f"q_{key}", "value": v, "to": draw(targets)}
            for v in draw(st.lists(st.booleans(), max_size=2, unique=True))
        ]  # fmt: skip
        steps.append({"key": key, "title": key, "text": "", "end": end,
                      "next": "" if end else draw(st.sampled_from([*keys, ""])),
                      "questions": [{"key": f"q_{key}", "label": key, "type": "yes_no"}],
                      "branches": branches, "actions": []})  # fmt: skip
    return {"start": keys[0], "steps": steps}


def walk_ends(g: dict[str, Any]) -> bool:
    """Independently of the validator: from every step a run can arrive at, with
    any answers, some choice of answers leads to an end step."""
    steps = {s["key"]: s for s in g["steps"]}

    def moves(key: str) -> set[str]:
        s = steps[key]
        return set() if s["end"] else {b["to"] for b in s["branches"]} | {s["next"]}

    seen, todo = {g["start"]}, [g["start"]]
    while todo:
        for t in moves(todo.pop()):
            if t not in seen:
                seen.add(t)
                todo.append(t)
    for key in seen:
        found, frontier = {key}, [key]
        while frontier and not any(steps[k]["end"] for k in frontier):
            frontier = [t for k in frontier for t in moves(k) if t not in found]
            found.update(frontier)
        if not any(steps[k]["end"] for k in found):
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(random_graphs())
def test_every_graph_the_validator_accepts_reaches_an_end_along_every_path(g: dict[str, Any]) -> None:
    if not publish_problems(g):
        assert walk_ends(g)
        # ...and a run that follows its defaults and branches never meets a missing step.
        for s in g["steps"]:
            assert s["end"] or s["next"]


def test_the_demo_script_is_sound() -> None:
    assert publish_problems(demo.GRAPH) == []
