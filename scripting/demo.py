"""The demo's call script (seed_demo runs ``seed`` through CRM_DEMO_SEEDERS).

One published script, assigned to the demo's queues by code (they live in the
agents app, which scripting does not import: listed through SCRIPTING_QUEUES),
or to every queue when none of them exists yet, so a call popped in ``make
demo`` shows it in the panel. Idempotent: found by code, published once."""

from __future__ import annotations

from typing import Any

from crm.models import User
from scripting import services
from scripting.models import Assignment, Script, ScriptVersion, VersionStatus

# The queues seed_floor makes for the demo.
DEMO_QUEUES = ("service", "sales")

CODE = "service-call"
GRAPH: dict[str, Any] = {
    "start": "greet",
    "steps": [
        {"key": "greet", "title": "Greeting and identity", "end": False, "next": "reason",
         "text": 'Good day {{ customer.first_name | "and welcome" }}, '
                 'you are through to {{ call.queue | "the bank" }}. '
                 "Before we start, can you confirm your date of birth?",
         "questions": [{"key": "verified", "label": "Identity confirmed", "type": "yes_no", "required": True},
                       {"key": "moving", "label": "Moving home soon?", "type": "yes_no", "required": True}],
         "branches": [{"kind": "match", "question": "verified", "value": False, "to": "unverified",
                       "label": "not verified"},
                      {"kind": "match", "question": "moving", "value": True, "to": "moving",
                       "label": "moving"}],
         "actions": []},
        {"key": "unverified", "title": "Identity not confirmed", "end": True, "next": "",
         "text": "I am sorry, I cannot discuss the account without confirming who you are. "
                 "Please call back with your card at hand.",
         "questions": [], "branches": [],
         "actions": [{"action": "record_disposition", "settings": {"code": "not_verified"}}]},
        {"key": "moving", "title": "Moving home", "end": False, "next": "reason",
         "text": "Congratulations on the move, {{ customer.first_name }}! Where are you moving to? "
                 '{{ offer.name | "" }}',
         "questions": [{"key": "new_city", "label": "New city", "type": "text", "required": True,
                        "min_length": 2, "max_length": 80},
                       {"key": "mortgage_interest", "label": "Interested in a mortgage?", "type": "yes_no"}],
         "branches": [],
         "actions": [{"action": "raise_event", "settings": {"type": "script.answered"}},
                     {"action": "record_offer_response",
                      "settings": {"offer": "home-mortgage", "question": "mortgage_interest"}}]},
        {"key": "reason", "title": "Reason for the call", "end": False, "next": "resolve",
         "text": "How can I help you today?",
         "questions": [{"key": "reason", "label": "Reason", "type": "single", "required": True,
                        "choices": ["card", "billing", "complaint", "other"]}],
         "branches": [{"kind": "cel", "to": "billing", "label": "billing (not platinum)",
                       "condition": 'answers.reason == "billing" && customer.tier != "platinum"'},
                      {"kind": "match", "question": "reason", "value": "complaint", "to": "complaint",
                       "label": "complaint"}],
         "actions": []},
        {"key": "billing", "title": "Billing question", "end": False, "next": "resolve",
         "text": 'Let me open your {{ account.product | "account" }} ({{ account.number }}). '
                 "Which amount is in question?",
         "questions": [{"key": "amount", "label": "Amount in question", "type": "number", "min": 0,
                        "max": 100000}],
         "branches": [], "actions": []},
        {"key": "complaint", "title": "Complaint", "end": False, "next": "resolve",
         "text": "I am sorry to hear that. Tell me what happened; I will make sure it is followed up.",
         "questions": [{"key": "complaint_text", "label": "What happened", "type": "text", "required": True,
                        "min_length": 5, "max_length": 500}],
         "branches": [],
         "actions": [{"action": "create_task", "settings": {"title": "Follow up a complaint taken on a call",
                                                             "kind": "follow_up", "priority": 2,
                                                             "in_hours": 24}}]},
        {"key": "resolve", "title": "Resolution", "end": False, "next": "close",
         "text": "Is there anything else I can help you with today?",
         "questions": [{"key": "resolved", "label": "Resolved on this call", "type": "yes_no",
                        "required": True}],
         "branches": [], "actions": []},
        {"key": "close", "title": "Close", "end": True, "next": "",
         "text": 'Thank you for calling, {{ customer.first_name | "" }}. Have a good day.',
         "questions": [], "branches": [],
         "actions": [{"action": "record_disposition", "settings": {"code": "resolved"}}]},
    ],
}  # fmt: skip


def seed(*, author: User | None = None) -> list[str]:
    """Create and publish the demo script and assign it to the demo queues (to
    every queue while they do not exist yet: seed_floor, which makes them, runs
    this again), unless there."""
    author = author or User.objects.filter(username="supervisor").first()
    script = Script.objects.filter(code=CODE).first()
    if script is None:
        script = services.script_create(
            code=CODE, name="Service call", actor=author,
            description="Greeting, identity, moving home, the reason for the call and its resolution.",
        )  # fmt: skip
        services.draft_save(script_id=script.pk, graph=GRAPH)
    made = False
    if not ScriptVersion.objects.filter(script=script, status=VersionStatus.PUBLISHED).exists():
        services.version_publish(script_id=script.pk, actor=author)
        made = True
    queues = [code for code, _ in services.queue_choices() or [] if code in DEMO_QUEUES]
    where = f"runs on queue{'s' * (len(queues) > 1)} {', '.join(queues)}" if queues else "runs on every queue"
    for queue in queues or [""]:
        if not Assignment.objects.filter(queue_code=queue, campaign_code="", direction="").exists():
            services.assignment_set(script_id=script.pk, queue_code=queue)
            made = True
    if queues:
        # The stand-in for every queue was only there until the demo's queues existed.
        fallback = Assignment.objects.filter(script=script, queue_code="", campaign_code="", direction="")
        made |= fallback.delete()[0] > 0
    return [f"  Call script “{script.name}” (published, {where})"] if made else []
