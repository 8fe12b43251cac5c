"""The supervisors' pages: the list of scripts, the designer (steps, questions,
branches and actions of the draft, the flow diagram, validation per step,
preview against a customer), publish / clone / retire, compare two versions,
assignments and the analytics of a version. Agents get a 403."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, cast

from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from crm import selectors as crm_selectors
from policies.conditions import CUSTOMER_FIELDS
from scripting import diagram, rendering, selectors, services, validation
from scripting.actions import REGISTRY
from scripting.models import Assignment, Direction, Script, ScriptVersion, VersionStatus
from scripting.views.common import messages_of, page_context, staff_with, user_of

EDIT = "scripting.change_script"
_FORM_ID = re.compile(r"^[a-z][a-z0-9_]{0,39}-[qba](new|\d{1,4})$")
ANALYTICS = "scripting.view_script_analytics"


@staff_with(EDIT)
def script_list(request: HttpRequest) -> HttpResponse:
    return render(request, "scripting/list.html", page_context(request, scripts=selectors.scripts_listed()))


@staff_with(EDIT)
@require_POST
def script_new(request: HttpRequest) -> HttpResponse:
    try:
        script = services.script_create(
            code=request.POST.get("code", ""), name=request.POST.get("name", ""), actor=user_of(request)
        )
    except ValidationError as exc:
        context = page_context(request, scripts=selectors.scripts_listed(), errors=messages_of(exc),
                               posted=request.POST)  # fmt: skip
        return render(request, "scripting/list.html", context, status=400)
    return redirect("script-designer", script.pk)


def _designer_context(request: HttpRequest, script: Script, **extra: Any) -> dict[str, Any]:
    draft = services.working_version(script_id=script.pk)
    if draft is None:  # a script always has a version; made afresh if someone deleted its draft
        draft = services.draft_for(script_id=script.pk)
    problems = validation.publish_problems(draft.graph)
    by_step: dict[str, list[str]] = {}
    for problem in problems:
        by_step.setdefault(problem.step, []).append(problem.message)
    edit_errors: dict[str, list[str]] = extra.pop("edit_errors", {})
    questions = validation.question_index(draft.graph)
    steps = [_step_view(step, questions, by_step.get(step["key"], []), edit_errors.get(step["key"], []))
             for step in draft.graph["steps"]]  # fmt: skip
    step_keys = {s["key"] for s in draft.graph["steps"]}
    return page_context(
        request,
        script=script,
        draft=draft,
        steps=steps,
        step_keys=[s["key"] for s in draft.graph["steps"]],
        start=draft.graph.get("start", ""),
        script_problems=by_step.get("", []),
        edit_errors={k: v for k, v in edit_errors.items() if k not in step_keys},
        problem_count=len(problems),
        diagram=diagram.svg(draft.graph, problem_steps=by_step),
        versions=selectors.versions_of(script),
        merge_fields=sorted(rendering.KNOWN),
        question_types=validation.QUESTION_TYPES,
        all_questions=list(questions.values()),
        cel_answers=[(k, validation.CEL_TYPE.get(q.get("type", ""), "")) for k, q in questions.items()],
        cel_customer=sorted(CUSTOMER_FIELDS.items()),
        actions=[(name, spec, [(s, s.options()) for s in spec.settings]) for name, spec in REGISTRY.items()],
        **extra,
    )


def _step_view(
    step: dict[str, Any], questions: dict[str, dict[str, Any]], problems: list[str], errors: list[str]
) -> dict[str, Any]:
    """A step as its forms show it: each question, branch and action with the
    values its form is filled with, and the answers a branch may match."""
    own = [q["key"] for q in step.get("questions") or []]
    named = [b.get("question") for b in step.get("branches") or [] if b.get("kind") == "match"]
    matchable = [questions[k] for k in dict.fromkeys([*own, *named]) if k in questions]
    return {
        **step,
        "problems": problems,
        "edit_errors": errors,
        "parts": [
            (
                "questions",
                "question",
                "Questions",
                [
                    {
                        **q,
                        "summary": _summary("questions", q),
                        "choices_text": "\n".join(q.get("choices") or []),
                    }
                    for q in step.get("questions") or []
                ],
            ),
            (
                "branches",
                "branch",
                "Branches",
                [
                    {**b, "summary": _summary("branches", b), **_match_of(b, questions)}
                    for b in step.get("branches") or []
                ],
            ),
            (
                "actions",
                "action",
                "Actions",
                [{**a, "summary": _summary("actions", a)} for a in step.get("actions") or []],
            ),
        ],
        "match_options": [(q.get("label") or q["key"], _answers_of(q)) for q in matchable],
    }


def _answers_of(question: dict[str, Any]) -> list[tuple[str, str]]:
    """The answers a branch can match, as (form value, label): yes/no and the
    options are listed; a typed answer (number, date, text) is written in."""
    key = question["key"]
    if question.get("type") == "yes_no":
        return [(f"{key}|yes", "yes"), (f"{key}|no", "no")]
    if question.get("type") in ("single", "multi"):
        return [(f"{key}|{c}", c) for c in question.get("choices") or []]
    return [(f"{key}|", "the value written below")]


def _match_of(branch: dict[str, Any], questions: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The branch's answer as its form's choice (question|answer) or, for a typed
    answer (number, date, text), the value written beside it."""
    if branch.get("kind") != "match":
        return {"match": "", "typed": ""}
    key, value = branch.get("question", ""), branch.get("value")
    if isinstance(value, list):  # a several-choices answer matches one choice
        value = value[0] if value else ""
    kind = questions.get(key, {}).get("type")
    if kind == "yes_no":
        return {"match": f"{key}|{selectors.answer_shown(value).lower()}", "typed": ""}
    if kind in ("single", "multi"):
        return {"match": f"{key}|{value}", "typed": ""}
    return {"match": f"{key}|", "typed": "" if value is None else str(value)}


def _summary(part: str, item: dict[str, Any]) -> str:
    """One line for an item of a step, as the author reads it."""
    if part == "questions":
        required = ", required" if item.get("required") else ""
        kind = validation.QUESTION_TYPES.get(item.get("type", ""), item.get("type", "")).lower()
        return f"{item.get('label') or item.get('key')} ({kind}{required})"
    if part == "branches":
        value = selectors.answer_shown(item.get("value")).lower()
        when = item.get("condition") if item.get("kind") == "cel" else f"{item.get('question')} = {value}"
        return f"{when} → {item.get('to')}"
    spec = REGISTRY.get(item.get("action", ""))
    settings = ", ".join(f"{k} {v}" for k, v in (item.get("settings") or {}).items())
    return f"{spec.label if spec else item.get('action')}{': ' + settings if settings else ''}"


@staff_with(EDIT)
def designer(request: HttpRequest, script_id: int) -> HttpResponse:
    script = get_object_or_404(Script, pk=script_id)
    return render(request, "scripting/designer.html", _designer_context(request, script))


def _step_of(graph: dict[str, Any], key: str) -> dict[str, Any]:
    for step in graph["steps"]:
        if step["key"] == key:
            return step
    raise ValidationError({key or "step": f"There is no step “{key}” in the draft: reload the page."})


def _edit(op: str, post: Any) -> Callable[[dict[str, Any]], None]:
    """One designer action on the draft's graph, from the posted form."""
    key = post.get("step", "")

    def change(graph: dict[str, Any]) -> None:
        steps = graph["steps"]
        if op == "add":
            new_key = post.get("new_key", "").strip()
            if not validation.KEY.match(new_key):
                raise ValidationError(
                    {"new_key": "A step key is lower-case letters, digits and _, e.g. ask_reason."}
                )
            if any(s["key"] == new_key for s in steps):
                raise ValidationError(
                    {"new_key": f"There is already a step “{new_key}”: choose another key."}
                )
            steps.append(validation.new_step(new_key, title=post.get("new_title", "")))
        elif op in ("up", "down"):
            step = _step_of(graph, key)
            index = steps.index(step)
            other = index - 1 if op == "up" else index + 1
            if 0 <= other < len(steps):
                steps[index], steps[other] = steps[other], steps[index]
        elif op == "delete":
            steps.remove(_step_of(graph, key))
            if graph.get("start") == key and steps:
                graph["start"] = steps[0]["key"]
        elif op == "start":
            graph["start"] = key
        elif op == "remove":
            items = _step_of(graph, key).get(post.get("part", ""))
            index = _index_in(items, key, post.get("index", ""))
            cast("list[Any]", items).pop(index)
        elif op in _BUILDERS:
            part, build = _BUILDERS[op]
            items = _step_of(graph, key)[part]
            index = _index_in(items, key, post["index"]) if post.get("index", "") != "" else None
            item = build(graph, key, post, None if index is None else items[index])
            if index is None:
                items.append(item)
            else:
                items[index] = item
        elif op == "save":
            step = _step_of(graph, key)
            step.update(title=post.get("title", "").strip(), text=post.get("text", ""),
                        end=post.get("end") == "on", next=post.get("next", ""))  # fmt: skip
        else:
            raise ValidationError({"op": "Unknown designer action."})

    return change


def _index_in(items: Any, step: str, index: str) -> int:
    if not isinstance(items, list) or not index.isdigit() or int(index) >= len(items):
        raise ValidationError({step: "That item is no longer there: reload the page."})
    return int(index)


def _number(post: Any, name: str, what: str, *, whole: bool = False) -> int | float | None:
    raw = post.get(name, "").strip().replace(",", "")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(f"{what} must be a number, e.g. 10; “{raw}” is not.") from None
    if whole and (not value.is_integer() or value < 0):
        raise ValidationError(f"{what} must be a whole number, 0 or more.")
    return int(value) if value.is_integer() else value


def _question(graph: dict[str, Any], step: str, post: Any, old: dict[str, Any] | None) -> dict[str, Any]:
    key = post.get("q_key", "").strip()
    if not validation.KEY.match(key):
        raise ValidationError({step: "Question key: lower-case letters, digits and _, e.g. new_city."})
    existing = validation.question_index(graph).get(key)
    if existing is not None and existing is not old:
        raise ValidationError({step: f"There is already a question “{key}”: answers are kept by key."})
    kind = post.get("q_type", "")
    if kind not in validation.QUESTION_TYPES:
        raise ValidationError({step: f"Question “{key}”: choose its type."})
    question: dict[str, Any] = {"key": key, "label": post.get("q_label", "").strip() or key, "type": kind,
                                "required": post.get("q_required") == "on"}  # fmt: skip
    try:
        if kind in ("single", "multi"):
            choices = list(
                dict.fromkeys(c.strip() for c in post.get("q_choices", "").splitlines() if c.strip())
            )
            if not choices:
                raise ValidationError("list its options, one per line.")
            question["choices"] = choices
        elif kind == "number":
            rules = {"min": _number(post, "q_min", "Min"), "max": _number(post, "q_max", "Max")}
            question.update({k: v for k, v in rules.items() if v is not None})
        elif kind == "date":
            for name in ("min", "max"):
                raw = post.get(f"q_{name}_date", "").strip()
                if raw and not validation.is_date(raw):
                    raise ValidationError(f"{name.capitalize()} date must be a date, YYYY-MM-DD.")
                if raw:
                    question[name] = raw
        elif kind == "text":
            rules = {"min_length": _number(post, "q_min_length", "Min length", whole=True),
                     "max_length": _number(post, "q_max_length", "Max length", whole=True)}  # fmt: skip
            question.update({k: v for k, v in rules.items() if v is not None})
            pattern = post.get("q_pattern", "").strip()
            if pattern:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValidationError(f"the pattern is not a valid regular expression ({exc}).") from None
                question["pattern"] = pattern
        low, high = (
            question.get("min", question.get("min_length")),
            question.get("max", question.get("max_length")),
        )
        if low is not None and high is not None and low > high:
            raise ValidationError("the minimum is above the maximum.")
    except ValidationError as exc:
        raise ValidationError({step: f"Question “{key}”: {' '.join(exc.messages)}"}) from None
    return question


def _branch(graph: dict[str, Any], step: str, post: Any, old: dict[str, Any] | None) -> dict[str, Any]:
    target, label = post.get("b_to", ""), post.get("b_label", "").strip()
    if target not in {s["key"] for s in graph["steps"]} or target == step:
        raise ValidationError({step: "Branch: choose the step it goes to."})
    questions = validation.question_index(graph)
    if post.get("b_kind") == "cel":
        condition = post.get("b_condition", "").strip()
        problems = validation.cel_problems(condition, questions)
        if problems:
            raise ValidationError({step: f"Branch condition: {' '.join(problems)}"})
        return {"kind": "cel", "condition": condition, "to": target, "label": label}
    key, _, value = post.get("b_match", "").partition("|")
    question = questions.get(key)
    if question is None:
        raise ValidationError({step: "Branch: choose the answer it matches, or write a CEL condition."})
    try:
        matched = validation.answer_value(question, value or post.get("b_value", ""))
    except ValidationError as exc:
        raise ValidationError({step: f"Branch, the value to match: {' '.join(exc.messages)}"}) from None
    if matched is None:
        raise ValidationError({step: f"Branch: write the answer to “{question['label']}” it matches."})
    return {"kind": "match", "question": key, "value": matched, "to": target, "label": label}


def _action(graph: dict[str, Any], step: str, post: Any, old: dict[str, Any] | None) -> dict[str, Any]:
    name = post.get("a_action", "")
    spec = REGISTRY.get(name)
    if spec is None:
        raise ValidationError({step: "Action: choose what it does."})
    settings: dict[str, Any] = {}
    try:
        for setting in spec.settings:
            field = f"a_{name}__{setting.name}"
            if setting.kind == "number":
                value: Any = _number(post, field, f"“{setting.label}”")
            else:
                value = post.get(field, "").strip()
            if value not in (None, ""):
                settings[setting.name] = value
    except ValidationError as exc:
        raise ValidationError({step: f"{spec.label}: {' '.join(exc.messages)}"}) from None
    problems = spec.problems(settings, validation.question_index(graph))
    if problems:
        raise ValidationError({step: f"{spec.label}: {' '.join(problems)}"})
    return {"action": name, "settings": settings}


# designer action -> (the step's list it edits, the builder of the item from its form)
_BUILDERS: dict[
    str, tuple[str, Callable[[dict[str, Any], str, Any, dict[str, Any] | None], dict[str, Any]]]
] = {
    "question": ("questions", _question),
    "branch": ("branches", _branch),
    "action": ("actions", _action),
}


@staff_with(EDIT)
@require_POST
def designer_edit(request: HttpRequest, script_id: int) -> HttpResponse:
    """Apply one change to the draft and return the designer's body again (its
    steps, problems and diagram), so the flow is redrawn as the author edits."""
    script = get_object_or_404(Script, pk=script_id)
    errors: dict[str, list[str]] = {}
    before = services.working_version(script_id=script.pk)
    try:
        draft = services.draft_edit(
            script_id=script.pk, change=_edit(request.POST.get("op", ""), request.POST)
        )
    except ValidationError as exc:
        errors = messages_of(exc)
    if errors and request.headers.get("HX-Request"):
        # Refused: the message goes to the step's card and the form keeps what
        # the author typed (the draft did not change, so nothing else is redrawn).
        step = request.POST.get("step", "")
        on_step = step in errors and any(s["key"] == step for s in (before.graph["steps"] if before else []))
        form = request.POST.get("errors_to", "")
        response = render(request, "scripting/_edit_errors.html",
                          {"messages": [m for ms in errors.values() for m in ms]})  # fmt: skip
        if on_step and _FORM_ID.match(form) and form.startswith(f"{step}-"):
            response["HX-Retarget"] = f"#{form}-errors"  # beside the button the author pressed
        else:
            response["HX-Retarget"] = f"#errors-{step}" if on_step else "#errors-designer"
        response["HX-Reswap"] = "innerHTML"
        return response
    context = _designer_context(request, script, edit_errors=errors, posted=request.POST)
    if request.headers.get("HX-Request"):
        # 200 even when refused: htmx swaps only successful responses, and the
        # author must see the message on the designer.
        response = render(request, "scripting/_designer_body.html", context)
        if not errors and (before is None or before.pk != draft.pk):
            response["HX-Refresh"] = "true"  # a draft was opened: the versions list changed too
        return response
    return render(request, "scripting/designer.html", context, status=400 if errors else 200)


@staff_with(EDIT)
@require_POST
def script_publish(request: HttpRequest, script_id: int) -> HttpResponse:
    script = get_object_or_404(Script, pk=script_id)
    try:
        version = services.version_publish(script_id=script.pk, actor=user_of(request))
    except ValidationError as exc:
        context = _designer_context(request, script, publish_errors=messages_of(exc))
        return render(request, "scripting/designer.html", context, status=400)
    return render(request, "scripting/designer.html", _designer_context(request, script, published=version))


@staff_with(EDIT)
@require_POST
def script_clone(request: HttpRequest, script_id: int) -> HttpResponse:
    script = get_object_or_404(Script, pk=script_id)
    try:
        clone = services.script_clone(script_id=script.pk, code=request.POST.get("code", ""),
                                      name=request.POST.get("name", ""), actor=user_of(request))  # fmt: skip
    except ValidationError as exc:
        context = _designer_context(request, script, clone_errors=messages_of(exc))
        return render(request, "scripting/designer.html", context, status=400)
    return redirect("script-designer", clone.pk)


@staff_with(EDIT)
@require_POST
def version_retire(request: HttpRequest, version_id: int) -> HttpResponse:
    version = get_object_or_404(ScriptVersion, pk=version_id)
    try:
        services.version_retire(version_id=version.pk)
    except ValidationError as exc:
        context = _designer_context(request, version.script, publish_errors=messages_of(exc))
        return render(request, "scripting/designer.html", context, status=400)
    return redirect("script-designer", version.script_id)


@staff_with(EDIT)
def script_preview(request: HttpRequest, script_id: int) -> HttpResponse:
    """Every step of the draft as an agent would read it for the chosen customer
    (by customer number, e.g. C-0000042, or id)."""
    script = get_object_or_404(Script, pk=script_id)
    draft = services.working_version(script_id=script.pk) or services.draft_for(script_id=script.pk)
    wanted = request.GET.get("customer", "").strip().upper().removeprefix("C-").lstrip("0")
    customer = None
    if wanted.isdigit():
        customer = (
            crm_selectors.customers_visible_to(user_of(request))
            .select_related("household")
            .filter(pk=int(wanted))
            .first()
        )
    error = "" if customer else "No such customer: give a customer number, e.g. C-0000042."
    rendered = []
    if customer is not None:
        accounts = list(customer.accounts.select_related("product"))
        call = {"queue": "(the call's queue)", "direction": "inbound"}
        values = rendering.merge_values(customer=customer, accounts=accounts, call=call)
        rendered = [(s, rendering.render(s.get("text", ""), values)) for s in draft.graph["steps"]]
    context = page_context(request, script=script, customer=customer, rendered=rendered, preview_error=error,
                           wanted=request.GET.get("customer", ""))  # fmt: skip
    return render(request, "scripting/_preview.html", context, status=200 if customer else 404)


@staff_with(EDIT)
def compare(request: HttpRequest, script_id: int) -> HttpResponse:
    script = get_object_or_404(Script, pk=script_id)
    versions = selectors.versions_of(script)
    by_id = {str(v.pk): v for v in versions}
    old = by_id.get(request.GET.get("a", "")) or (versions[1] if len(versions) > 1 else None)
    new = by_id.get(request.GET.get("b", "")) or (versions[0] if versions else None)
    diffs = services.versions_compare(old=old.graph, new=new.graph) if old and new else []
    context = page_context(request, script=script, versions=versions, old=old, new=new, diffs=diffs)
    return render(request, "scripting/compare.html", context)


@staff_with(ANALYTICS)
def analytics(request: HttpRequest, version_id: int) -> HttpResponse:
    version = get_object_or_404(ScriptVersion.objects.select_related("script"), pk=version_id)
    stats = selectors.version_analytics(version)
    widest = max([s.reached for s in stats.steps] + [1])
    context = page_context(
        request, version=version, script=version.script, stats=stats, widest=widest,
        versions=[v for v in selectors.versions_of(version.script) if v.status != VersionStatus.DRAFT],
        diagram=diagram.svg(version.graph),
    )  # fmt: skip
    return render(request, "scripting/analytics.html", context)


@staff_with(EDIT)
def assignments(request: HttpRequest) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        if request.POST.get("delete"):
            Assignment.objects.filter(pk=request.POST["delete"]).delete()
            return redirect(reverse("script-assignments"))
        script = Script.objects.filter(pk=request.POST.get("script") or 0).first()
        direction = request.POST.get("direction", "")
        if script is None:
            errors["script"] = ["Choose the script to run."]
        if direction not in Direction.values:
            errors["direction"] = ["Choose inbound, outbound or any."]
        if not errors and script is not None:
            try:
                services.assignment_set(
                    script_id=script.pk, queue_code=request.POST.get("queue_code", ""),
                    campaign_code=request.POST.get("campaign_code", ""), direction=direction,
                )  # fmt: skip
                return redirect(reverse("script-assignments"))
            except ValidationError as exc:
                errors.update(messages_of(exc))
            except IntegrityError as exc:
                errors[""] = [str(exc)]
    queues = services.queue_choices()
    context = page_context(
        request, rows=Assignment.objects.select_related("script"), scripts=Script.objects.order_by("name"),
        directions=Direction.choices, errors=errors, posted=request.POST, queues=queues,
        queue_names=dict(queues or []),
    )  # fmt: skip
    return render(request, "scripting/assignments.html", context, status=400 if errors else 200)
