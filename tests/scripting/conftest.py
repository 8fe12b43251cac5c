"""A branching script every scripting test can start from, published and assigned."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agents.models import Queue
from crm.models import User
from scripting import services
from scripting.models import ScriptVersion

GRAPH: dict[str, Any] = {
    "start": "greet",
    "steps": [
        {
            "key": "greet",
            "title": "Greeting",
            "end": False,
            "next": "reason",
            "text": 'Hello {{ customer.first_name | "there" }}, thanks for calling {{ call.queue | "us" }}.',
            "questions": [
                {"key": "moving", "label": "Are you moving soon?", "type": "yes_no", "required": True}
            ],
            "branches": [
                {"kind": "match", "question": "moving", "value": True, "to": "moving", "label": "moving"}
            ],
            "actions": [],
        },
        {
            "key": "moving",
            "title": "Moving",
            "end": False,
            "next": "close",
            "text": "Where to, {{ customer.first_name }}?",
            "questions": [
                {
                    "key": "new_city",
                    "label": "New city",
                    "type": "text",
                    "required": True,
                    "min_length": 2,
                    "max_length": 60,
                }
            ],
            "branches": [],
            "actions": [{"action": "raise_event", "settings": {"type": "script.answered"}}],
        },
        {
            "key": "reason",
            "title": "Reason for the call",
            "end": False,
            "next": "close",
            "text": "How can I help?",
            "questions": [
                {
                    "key": "reason",
                    "label": "Reason",
                    "type": "single",
                    "required": True,
                    "choices": ["billing", "card", "other"],
                }
            ],
            "branches": [
                {
                    "kind": "cel",
                    "condition": 'answers.reason == "billing" && customer.tier != "platinum"',
                    "to": "billing",
                    "label": "billing, not platinum",
                }
            ],
            "actions": [],
        },
        {
            "key": "billing",
            "title": "Billing",
            "end": False,
            "next": "close",
            "text": "Let me look at the bill.",
            "questions": [
                {
                    "key": "amount",
                    "label": "Disputed amount",
                    "type": "number",
                    "required": False,
                    "min": 0,
                    "max": 10000,
                }
            ],
            "branches": [],
            "actions": [{"action": "create_task", "settings": {"title": "Check the disputed bill"}}],
        },
        {
            "key": "close",
            "title": "Close",
            "end": True,
            "next": "",
            "text": "Thank you, goodbye.",
            "questions": [],
            "branches": [],
            "actions": [{"action": "record_disposition", "settings": {"code": "resolved"}}],
        },
    ],
}


def graph() -> dict[str, Any]:
    return copy.deepcopy(GRAPH)


@pytest.fixture
def published(bob: User) -> ScriptVersion:
    script = services.script_create(code="service-call", name="Service call", actor=bob)
    services.draft_save(script_id=script.pk, graph=graph())
    version = services.version_publish(script_id=script.pk, actor=bob)
    Queue.objects.get_or_create(code="service", defaults={"name": "Customer service"})
    services.assignment_set(script_id=script.pk, queue_code="service")
    return version
