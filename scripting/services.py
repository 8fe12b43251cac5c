"""Every write of call scripting: authoring (drafts, publish, clone, retire,
assignments) and the runner (start, answer, next, back, link to the call's
contact-history entry), plus the actions a step runs through crm and policies
services. Plain functions with keyword-only arguments, one transaction each.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from crm import services as crm_services
from crm.models import Customer, Interaction, User
from policies import selectors as policies_selectors
from policies import services as policies_services
from policies.engine import customer_map
from scripting import actions, validation
from scripting.models import Answer, Assignment, Run, RunStatus, Script, ScriptVersion, VersionStatus

# --- Authoring ------------------------------------------------------------------------------------


def script_create(*, code: str, name: str, description: str = "", actor: User | None = None) -> Script:
    """A new script with a draft holding one greeting step."""
    script = Script(code=code.strip(), name=name.strip(), description=description, created_by=actor)
    script.full_clean()
    with transaction.atomic():
        script.save()
        ScriptVersion.objects.create(script=script, graph=validation.empty_graph())
    return script


def draft_for(*, script_id: int) -> ScriptVersion:
    """The script's draft, made from its newest version when there is none (so
    editing a published script never touches the published rows)."""
    with transaction.atomic():
        Script.objects.select_for_update().get(pk=script_id)  # one draft at a time, per script
        draft = ScriptVersion.objects.filter(script_id=script_id, status=VersionStatus.DRAFT).first()
        if draft is not None:
            return draft
        newest = ScriptVersion.objects.filter(script_id=script_id).order_by("-number").first()
        graph = copy.deepcopy(newest.graph) if newest else validation.empty_graph()
        return ScriptVersion.objects.create(script_id=script_id, graph=graph)


def working_version(*, script_id: int) -> ScriptVersion | None:
    """What the designer shows: the draft, else the newest version (read only
    until the first change opens a draft from it)."""
    return (
        ScriptVersion.objects.filter(script_id=script_id).order_by(F("number").desc(nulls_first=True)).first()
    )


def draft_save(*, script_id: int, graph: dict[str, Any]) -> ScriptVersion:
    """Store an edited draft; it must be well formed (publish checks the rest)."""
    problems = validation.shape_problems(graph)
    if problems:
        raise validation.problems_error(problems)
    draft = draft_for(script_id=script_id)
    with transaction.atomic():
        draft = ScriptVersion.objects.select_for_update().get(pk=draft.pk)
        draft.graph = graph
        draft.updated_at = timezone.now()
        draft.save(update_fields=["graph", "updated_at"])
    return draft


def draft_edit(*, script_id: int, change: Callable[[dict[str, Any]], None]) -> ScriptVersion:
    """Apply ``change`` to a copy of the draft's graph and store it when it is
    still well formed (one designer action: add a step, move it, ...)."""
    graph = copy.deepcopy(draft_for(script_id=script_id).graph)
    change(graph)
    return draft_save(script_id=script_id, graph=graph)


def version_publish(*, script_id: int, actor: User | None) -> ScriptVersion:
    """1. lock the draft; 2. refuse it with every problem, by step, unless it is
    sound; 3. give it the next number and freeze it (the database keeps it so)."""
    with transaction.atomic():
        draft = (
            ScriptVersion.objects.select_for_update()
            .filter(script_id=script_id, status=VersionStatus.DRAFT)
            .first()
        )
        if draft is None:
            raise ValidationError({"script": "There is no draft to publish: edit the script first."})
        problems = validation.publish_problems(draft.graph)
        if problems:
            raise validation.problems_error(problems)
        latest = ScriptVersion.objects.filter(script_id=script_id).aggregate(n=Max("number"))["n"] or 0
        draft.number = latest + 1
        draft.status = VersionStatus.PUBLISHED
        draft.published_at = timezone.now()
        draft.published_by = actor
        draft.save(update_fields=["number", "status", "published_at", "published_by"])
    return draft


def version_retire(*, version_id: int) -> ScriptVersion:
    """No new run starts on it; runs already on it finish on it."""
    with transaction.atomic():
        version = ScriptVersion.objects.select_for_update().get(pk=version_id)
        if version.status != VersionStatus.PUBLISHED:
            raise ValidationError(
                {"status": f"Only a published version can be retired; this one is {version.status}."}
            )
        version.status = VersionStatus.RETIRED
        version.retired_at = timezone.now()
        version.save(update_fields=["status", "retired_at"])
    return version


def script_clone(*, script_id: int, code: str, name: str, actor: User | None) -> Script:
    """A new script whose draft is a copy of what the designer shows of this one
    (its draft, else its newest version)."""
    newest = working_version(script_id=script_id)
    with transaction.atomic():
        clone = script_create(code=code, name=name, actor=actor)
        if newest is not None:
            ScriptVersion.objects.filter(script=clone, status=VersionStatus.DRAFT).update(
                graph=copy.deepcopy(newest.graph)
            )
    return clone


def assignment_set(
    *, script_id: int, queue_code: str = "", campaign_code: str = "", direction: str = ""
) -> Assignment:
    """Run this script for the queue / campaign / direction (blank: any); replaces
    the script assigned to the same target. The queue must be one the agents app
    lists (SCRIPTING_QUEUES)."""
    queue_code = queue_code.strip()
    queues = queue_choices()
    if queue_code and queues is not None and queue_code not in dict(queues):
        known = ", ".join(code for code, _ in queues) or "none yet"
        raise ValidationError({"queue_code": f"There is no queue “{queue_code}”: choose one of {known}."})
    assignment, _ = Assignment.objects.update_or_create(
        queue_code=queue_code, campaign_code=campaign_code.strip(), direction=direction,
        defaults={"script_id": script_id},
    )  # fmt: skip
    return assignment


# --- Comparing versions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StepDiff:
    key: str
    change: str  # "added" | "removed" | "changed" | "same"
    fields: tuple[str, ...]  # what changed: title, text, questions, ...
    old: dict[str, Any] | None
    new: dict[str, Any] | None


def versions_compare(*, old: dict[str, Any], new: dict[str, Any]) -> list[StepDiff]:
    """Step by step, in the newer version's order then the removed ones."""
    before = validation.steps_by_key(old)
    after = validation.steps_by_key(new)
    diffs = []
    for key, step in after.items():
        if key not in before:
            diffs.append(StepDiff(key, "added", (), None, step))
            continue
        fields = tuple(f for f in ("title", "text", "end", "next", "questions", "branches", "actions")
                       if before[key].get(f) != step.get(f))  # fmt: skip
        diffs.append(StepDiff(key, "changed" if fields else "same", fields, before[key], step))
    diffs.extend(StepDiff(k, "removed", (), s, None) for k, s in before.items() if k not in after)
    return diffs


# --- The runner -------------------------------------------------------------------------------------


def version_assigned(
    *, queue_code: str = "", campaign_code: str = "", direction: str = ""
) -> ScriptVersion | None:
    """The newest published version of the most specific assignment that matches."""
    matching = Assignment.objects.filter(
        Q(queue_code=queue_code) | Q(queue_code=""),
        Q(campaign_code=campaign_code) | Q(campaign_code=""),
        Q(direction=direction) | Q(direction=""),
    )
    ranked = sorted(matching, key=lambda a: (bool(a.queue_code), bool(a.campaign_code), bool(a.direction)),
                    reverse=True)  # fmt: skip
    for assignment in ranked:
        version = (
            ScriptVersion.objects.filter(script_id=assignment.script_id, status=VersionStatus.PUBLISHED)
            .select_related("script")
            .order_by("-number")
            .first()
        )
        if version is not None:
            return version
    return None


def queue_choices() -> list[tuple[str, str]] | None:
    """The queues as (code, name), as the agents app lists them (a dotted path in
    SCRIPTING_QUEUES: scripting does not import agents); None when unset."""
    path = getattr(settings, "SCRIPTING_QUEUES", "")
    return [(str(code), str(name)) for code, name in import_string(path)()] if path else None


def call_facts_for(user: User) -> dict[str, Any]:
    """The agent's current call, as the agents app tells it (a dotted path in
    SCRIPTING_CALL_FACTS: scripting does not import agents)."""
    path = getattr(settings, "SCRIPTING_CALL_FACTS", "")
    return dict(import_string(path)(user) or {}) if path else {}


def run_start(*, customer_id: int, agent: User, call: dict[str, Any] | None = None) -> Run:
    """Start (or resume) this agent's run for this customer.

    1. A run in progress for the customer by this agent is resumed (a reload, a
       second tab): never two at once.
    2. The version is the one assigned to the call's queue, campaign and direction.
    3. The run starts at the first step; an end step there closes it at once."""
    call = call or {}
    with transaction.atomic():
        Customer.objects.select_for_update().only("pk").get(pk=customer_id)  # one start at a time
        existing = Run.objects.filter(customer_id=customer_id, agent=agent, status=RunStatus.ACTIVE).first()
        if existing is not None:
            return existing
        queue, campaign, direction = (
            call.get("queue_code", ""),
            call.get("campaign_code", ""),
            call.get("direction", ""),
        )
        version = version_assigned(queue_code=queue, campaign_code=campaign, direction=direction)
        if version is None:
            where = f"queue “{queue or 'any'}”" + (f", campaign “{campaign}”" if campaign else "")
            raise ValidationError(
                {"script": f"No published script is assigned to {where}: ask a supervisor to assign one."}
            )
        start = version.graph["start"]
        now = timezone.now()
        run = Run.objects.create(
            version=version, customer_id=customer_id, agent=agent, call_id=call.get("call_id"),
            queue_code=queue, campaign_code=campaign, direction=direction,
            call_facts={k: v for k, v in call.items() if isinstance(v, str | int)},
            current_step=start, path=[start], visits=[[start, now.isoformat()]], started_at=now,
        )  # fmt: skip
        if validation.steps_by_key(version.graph)[start].get("end"):
            _finish(run, agent=agent, answers={}, customer_version=None, now=now)
    return run


def _run_locked(run_id: int, agent: User) -> Run:
    run = (
        Run.objects.select_for_update(of=("self",))
        .select_related("version__script")
        .filter(pk=run_id, agent=agent)
        .first()
    )
    if run is None:
        raise Run.DoesNotExist(f"No run {run_id} of yours.")
    if run.status != RunStatus.ACTIVE:
        raise ValidationError({"run": "This script run has ended: start a new one from the panel."})
    return run


def answers_of(run: Run) -> dict[str, Any]:
    return dict(Answer.objects.filter(run=run).values_list("question", "value"))


def run_answer(*, run_id: int, agent: User, question: str, raw: Any) -> Answer | None:
    """Save one answer as it is given (a changed answer replaces it; an emptied
    one is removed). Only a question of the current step can be answered."""
    with transaction.atomic():
        run = _run_locked(run_id, agent)
        step = validation.steps_by_key(run.version.graph)[run.current_step]
        spec = next((q for q in step.get("questions") or [] if q["key"] == question), None)
        if spec is None:
            raise ValidationError({question: f"“{question}” is not a question of the current step."})
        value = validation.answer_value(spec, raw)
        if value is None:
            Answer.objects.filter(run=run, question=question).delete()
            return None
        answer, _ = Answer.objects.update_or_create(
            run=run,
            question=question,
            defaults={
                "value": value,
                "step": step["key"],
                "label": spec.get("label", ""),
                "at": timezone.now(),
            },
        )
    return answer


def _save_step_answers(run: Run, step: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """Type every answer given for the step, then check the required ones; every
    problem is named by question at once, and nothing is saved unless all are good."""
    saved = answers_of(run)
    errors: dict[str, list[str]] = {}
    typed: dict[str, Any] = {}
    for question in step.get("questions") or []:
        key = question["key"]
        if key in raw:
            try:
                typed[key] = validation.answer_value(question, raw[key])
            except ValidationError as exc:
                errors.setdefault(key, []).extend(exc.messages)
                continue
        value = typed[key] if key in typed else saved.get(key)
        if question.get("required") and value is None:
            errors.setdefault(key, []).append(
                f"“{question.get('label') or key}” needs an answer before you go on."
            )
    if errors:
        raise ValidationError(errors)
    now = timezone.now()
    labels = {q["key"]: q.get("label", "") for q in step.get("questions") or []}
    for key, value in typed.items():
        if value is None:
            Answer.objects.filter(run=run, question=key).delete()
            saved.pop(key, None)
        else:
            Answer.objects.update_or_create(
                run=run,
                question=key,
                defaults={"value": value, "step": step["key"], "label": labels[key], "at": now},
            )
            saved[key] = value
    return saved


def next_step(
    graph: dict[str, Any], step: dict[str, Any], answers: dict[str, Any], customer: dict[str, Any] | None
) -> str:
    """The first branch that holds decides; else the default next step."""
    questions = validation.question_index(graph)
    context = None
    for branch in step.get("branches") or []:
        if branch["kind"] == "match":
            if answers.get(branch["question"]) == validation.answer_value(
                questions[branch["question"]], branch["value"]
            ):
                return str(branch["to"])
            continue
        if context is None:
            context = validation.cel_context(answers=answers, questions=questions, customer=customer)
        if validation.program_for(branch["condition"]).execute(context) is True:
            return str(branch["to"])
    return str(step["next"])


def run_next(
    *, run_id: int, agent: User, answers: dict[str, Any], customer_version: int | None = None
) -> Run:
    """The agent goes on from the current step.

    1. Save the step's answers (typed, required ones enforced), in their own
       transaction: an action that fails later loses none of them.
    2. Choose the next step (branches, then the default).
    3. Run the step's actions (through crm and policies services).
    4. Move on; arriving at an end step runs its actions and closes the run."""
    with transaction.atomic():
        run = _run_locked(run_id, agent)
        graph = run.version.graph
        step = validation.steps_by_key(graph)[run.current_step]
        saved = _save_step_answers(run, step, answers)
    with transaction.atomic():
        run = _run_locked(run_id, agent)
        if run.current_step != step["key"]:  # a second click already moved on
            return run
        customer = Customer.objects.get(pk=run.customer_id)
        target = next_step(graph, step, saved, customer_map(customer, timezone.localdate()))
        _run_actions(run, step, agent=agent, answers=saved, customer_version=customer_version)
        now = timezone.now()
        run.current_step = target
        run.path = [*run.path, target]
        run.visits = [*run.visits, [target, now.isoformat()]]
        run.save(update_fields=["current_step", "path", "visits", "disposition", "offers_accepted"])
        if validation.steps_by_key(graph)[target].get("end"):
            _finish(run, agent=agent, answers=saved, customer_version=None, now=now)
    return run


def run_back(*, run_id: int, agent: User) -> Run:
    """Back to the step before (answers stay; actions already run are not undone)."""
    with transaction.atomic():
        run = _run_locked(run_id, agent)
        if len(run.path) > 1:
            run.path = run.path[:-1]
            run.current_step = run.path[-1]
            run.visits = [*run.visits, [run.current_step, timezone.now().isoformat()]]
            run.save(update_fields=["current_step", "path", "visits"])
    return run


def _finish(
    run: Run, *, agent: User, answers: dict[str, Any], customer_version: int | None, now: dt.datetime
) -> None:
    step = validation.steps_by_key(run.version.graph)[run.current_step]
    _run_actions(run, step, agent=agent, answers=answers, customer_version=customer_version)
    run.status = RunStatus.COMPLETED
    run.finished_at = now
    if run.call_id is None:
        # No call to wrap up: the run is its own entry in the contact history.
        interaction, _ = crm_services.interaction_record(
            customer_id=run.customer_id, channel="phone", direction=run.direction or "outbound",
            occurred_at=run.started_at, agent=agent, disposition=run.disposition,
            subject=f"Script · {run.version.script.name}", script_run_id=run.pk,
        )  # fmt: skip
        run.interaction = interaction
    run.save()


def run_for_call(*, call_id: int) -> int | None:
    """The run of a call (the newest), for its contact-history entry."""
    return Run.objects.filter(call_id=call_id).order_by("-started_at").values_list("pk", flat=True).first()


def runs_link_interaction(*, call_id: int, interaction: Interaction) -> int:
    """The call was wrapped up: its runs point at its contact-history entry, and
    one still in progress was dropped (counted as drop-off at its step)."""
    now = timezone.now()
    runs = Run.objects.filter(call_id=call_id)
    runs.filter(status=RunStatus.ACTIVE).update(status=RunStatus.ABANDONED, finished_at=now)
    return runs.update(interaction=interaction)


# --- Actions (scripting.actions.REGISTRY names these) ------------------------------------------------


@dataclass
class ActionRun:
    run: Run
    agent: User
    answers: dict[str, Any]
    customer_version: int | None
    step: str


def _run_actions(run: Run, step: dict[str, Any], *, agent: User, answers: dict[str, Any],
                 customer_version: int | None) -> None:  # fmt: skip
    context = ActionRun(run, agent, answers, customer_version, step["key"])
    for action in step.get("actions") or []:
        spec = actions.REGISTRY[action["action"]]  # a published graph names only registered actions
        import_string(spec.function)(context, action.get("settings") or {})


def action_record_disposition(context: ActionRun, settings: dict[str, Any]) -> None:
    context.run.disposition = str(settings["code"])[:40]


def _customer_version(context: ActionRun) -> int:
    if context.customer_version is not None:
        return context.customer_version
    return Customer.objects.values_list("version", flat=True).get(pk=context.run.customer_id)


def action_update_customer_field(context: ActionRun, settings: dict[str, Any]) -> None:
    value = (
        settings["value"]
        if settings.get("value") not in (None, "")
        else context.answers.get(settings.get("question", ""))
    )
    if value is None:
        return
    customer = crm_services.customer_update(
        customer_id=context.run.customer_id, expected_version=_customer_version(context),
        changes={settings["field"]: value}, actor=context.agent,
    )  # fmt: skip
    context.customer_version = customer.version


def action_schedule_callback(context: ActionRun, settings: dict[str, Any]) -> None:
    crm_services.task_create(
        customer_id=context.run.customer_id, kind="callback",
        title=settings.get("title") or f"Call back ({context.run.version.script.name})",
        due_at=timezone.now() + dt.timedelta(hours=float(settings["in_hours"])),
        assigned_to=context.agent, created_by=context.agent, origin=f"script:{context.run.pk}",
    )  # fmt: skip


def action_create_task(context: ActionRun, settings: dict[str, Any]) -> None:
    hours = settings.get("in_hours")
    crm_services.task_create(
        customer_id=context.run.customer_id, kind=settings.get("kind", "follow_up"), title=settings["title"],
        description=settings.get("description", ""), priority=int(settings.get("priority", 3)),
        due_at=timezone.now() + dt.timedelta(hours=float(hours)) if hours else None,
        created_by=context.agent, origin=f"script:{context.run.pk}", queue=settings.get("queue", ""),
    )  # fmt: skip


def action_record_offer_response(context: ActionRun, settings: dict[str, Any]) -> None:
    """The customer's yes or no to the offer on screen, if one is presented."""
    said = context.answers.get(settings["question"])
    if said is None:
        return
    presentation = (
        policies_selectors.offers_current(customer_id=context.run.customer_id)
        .filter(offer__code=settings["offer"])
        .first()
    )
    if presentation is None:
        return
    policies_services.offer_respond(presentation_id=presentation.pk, accepted=bool(said), actor=context.agent)
    if said:
        context.run.offers_accepted = [*context.run.offers_accepted, settings["offer"]]


def action_add_do_not_call(context: ActionRun, settings: dict[str, Any]) -> None:
    if settings.get("question") and context.answers.get(settings["question"]) is not True:
        return
    if Customer.objects.filter(pk=context.run.customer_id, do_not_call=True).exists():
        return
    customer = crm_services.customer_update(
        customer_id=context.run.customer_id, expected_version=_customer_version(context),
        changes={"do_not_call": True}, actor=context.agent,
    )  # fmt: skip
    context.customer_version = customer.version


def action_raise_event(context: ActionRun, settings: dict[str, Any]) -> None:
    run = context.run
    answers = {k: (", ".join(v) if isinstance(v, list) else v) for k, v in context.answers.items()}
    crm_services.business_event_record(
        type=settings["type"], customer_id=run.customer_id, occurred_at=timezone.now(),
        payload={**answers, "script": run.version.script.code, "version": run.version.number,
                 "run_id": run.pk, "step": context.step},
        source=crm_services.crm_source(),
        idempotency_key=f"script:{run.pk}:{context.step}:{settings['type']}",
        actor=context.agent,
    )  # fmt: skip
