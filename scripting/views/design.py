"""The supervisors' pages: the list of scripts, the designer (steps, questions,
branches and actions of the draft, the flow diagram, validation per step,
preview against a customer), publish / clone / retire, compare two versions,
assignments and the analytics of a version. Agents get a 403."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from crm import selectors as crm_selectors
from scripting import diagram, rendering, selectors, services, validation
from scripting.actions import REGISTRY
from scripting.models import Assignment, Direction, Script, ScriptVersion, VersionStatus
from scripting.views.common import messages_of, page_context, staff_with, user_of

EDIT = "scripting.change_script"
ANALYTICS = "scripting.view_script_analytics"
JSON_PARTS = ("questions", "branches", "actions")


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
    steps = [
        {**step, "problems": by_step.get(step["key"], []),
         **{f"{part}_json": _json(part, step.get(part) or []) for part in JSON_PARTS},
         "items_by_part": [(part, label, [_summary(part, item) for item in step.get(part) or []])
                           for part, label in zip(JSON_PARTS, ("question", "branch", "action"), strict=True)]}
        for step in draft.graph["steps"]
    ]  # fmt: skip
    return page_context(
        request,
        script=script,
        draft=draft,
        steps=steps,
        step_keys=[s["key"] for s in draft.graph["steps"]],
        start=draft.graph.get("start", ""),
        script_problems=by_step.get("", []),
        problem_count=len(problems),
        diagram=diagram.svg(draft.graph, problem_steps=by_step),
        versions=selectors.versions_of(script),
        merge_fields=sorted(rendering.KNOWN),
        question_types=validation.QUESTION_TYPES,
        question_keys=list(validation.question_index(draft.graph)),
        actions=REGISTRY,
        **extra,
    )


# The order an author reads an item's keys in (PostgreSQL's jsonb keeps its own).
_KEY_ORDER = {
    "questions": ("key", "label", "type", "required", "choices", "min", "max", "min_length", "max_length",
                  "pattern"),
    "branches": ("kind", "question", "value", "condition", "to", "label"),
    "actions": ("action", "settings"),
}  # fmt: skip


def _summary(part: str, item: dict[str, Any]) -> str:
    """One line for an item of a step, as the author reads it."""
    if part == "questions":
        required = ", required" if item.get("required") else ""
        return f"{item.get('label') or item.get('key')} ({item.get('type')}{required})"
    if part == "branches":
        value = selectors.answer_shown(item.get("value")).lower()
        when = item.get("condition") if item.get("kind") == "cel" else f"{item.get('question')} = {value}"
        return f"{when} → {item.get('to')}"
    return f"{item.get('action')} {json.dumps(item.get('settings') or {}, ensure_ascii=False)}"


def _json(part: str, items: list[Any]) -> str:
    rank = {k: i for i, k in enumerate(_KEY_ORDER[part])}

    def ordered(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        return dict(sorted(item.items(), key=lambda kv: rank.get(kv[0], len(rank))))

    return json.dumps([ordered(i) for i in items], indent=1, ensure_ascii=False) if items else "[]"


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
            index = post.get("index", "")
            if not isinstance(items, list) or not index.isdigit() or int(index) >= len(items):
                raise ValidationError({key: "That item is no longer there: reload the page."})
            items.pop(int(index))
        elif op in _ADDERS:
            _step_of(graph, key)[_ADDERS[op][0]].append(_ADDERS[op][1](graph, key, post))
        elif op == "save":
            step = _step_of(graph, key)
            step.update(title=post.get("title", "").strip(), text=post.get("text", ""),
                        end=post.get("end") == "on", next=post.get("next", ""))  # fmt: skip
            for part in JSON_PARTS:
                try:
                    value = json.loads(post.get(part) or "[]")
                except json.JSONDecodeError as exc:
                    raise ValidationError(
                        {key: f"{part.capitalize()}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                              f"{exc.msg}). Nothing was saved; fix it and save again."}
                    ) from None  # fmt: skip
                step[part] = value
        else:
            raise ValidationError({"op": "Unknown designer action."})

    return change


def _new_question(graph: dict[str, Any], step: str, post: Any) -> dict[str, Any]:
    key = post.get("q_key", "").strip()
    if not validation.KEY.match(key):
        raise ValidationError({step: "A question key is lower-case letters, digits and _, e.g. new_city."})
    if key in validation.question_index(graph):
        raise ValidationError({step: f"There is already a question “{key}”: answers are kept by key."})
    question: dict[str, Any] = {
        "key": key, "label": post.get("q_label", "").strip() or key, "type": post.get("q_type", "text"),
        "required": post.get("q_required") == "on",
    }  # fmt: skip
    choices = [c.strip() for c in post.get("q_choices", "").split(",") if c.strip()]
    if question["type"] in ("single", "multi"):
        question["choices"] = choices
    return question


def _new_branch(graph: dict[str, Any], step: str, post: Any) -> dict[str, Any]:
    condition = post.get("b_condition", "").strip()
    target, label = post.get("b_to", ""), post.get("b_label", "").strip()
    if condition:
        return {"kind": "cel", "condition": condition, "to": target, "label": label}
    question = validation.question_index(graph).get(post.get("b_question", ""))
    if question is None:
        raise ValidationError({step: "Choose the question the branch matches, or write a CEL condition."})
    try:
        value = validation.answer_value(question, post.get("b_value", ""))
    except ValidationError as exc:
        raise ValidationError({step: f"The value to match: {' '.join(exc.messages)}"}) from None
    return {"kind": "match", "question": question["key"], "value": value, "to": target, "label": label}


def _new_action(graph: dict[str, Any], step: str, post: Any) -> dict[str, Any]:
    try:
        settings = json.loads(post.get("a_settings") or "{}")
    except json.JSONDecodeError as exc:
        raise ValidationError({step: f"The action's settings are not valid JSON: {exc.msg}."}) from None
    return {"action": post.get("a_action", ""), "settings": settings}


# designer action -> (the step's list it adds to, the builder of the new item)
_ADDERS: dict[str, tuple[str, Callable[[dict[str, Any], str, Any], dict[str, Any]]]] = {
    "add_question": ("questions", _new_question),
    "add_branch": ("branches", _new_branch),
    "add_action": ("actions", _new_action),
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
            except (ValidationError, IntegrityError) as exc:
                errors[""] = [str(exc)]
    context = page_context(
        request, rows=Assignment.objects.select_related("script"), scripts=Script.objects.order_by("name"),
        directions=Direction.choices, errors=errors, posted=request.POST,
    )  # fmt: skip
    return render(request, "scripting/assignments.html", context, status=400 if errors else 200)
