"""The demo's contact-center floor: queues, dispositions, a phone system's
integration, and every agent log-in given both queues. Idempotent: run it
after seed_demo as often as you like."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from agents import services
from agents.models import Disposition, Queue
from crm import services as crm_services
from crm.models import SourceSystem, User
from scripting import demo as scripting_demo

PBX_SOURCE = "pbx"
QUEUES = [
    ("service", "Customer service", 15, 90),
    ("sales", "Sales", 15, 120),
]
# (queue or None for every queue, code, label, contact, sale, do-not-call)
DISPOSITIONS: list[tuple[str | None, str, str, bool, bool, bool]] = [
    (None, "resolved", "Resolved", True, False, False),
    (None, "info_given", "Information given", True, False, False),
    (None, "callback_requested", "Callback requested", True, False, False),
    (None, "not_resolved", "Not resolved: escalated", True, False, False),
    (None, "wrong_number", "Wrong number", False, False, False),
    (None, "do_not_call", "Asked not to be called", True, False, True),
    ("sales", "sale", "Sale made", True, True, False),
    ("sales", "no_sale", "No sale", True, False, False),
]


class Command(BaseCommand):
    help = "Create the demo's queues, dispositions and phone-system integration; give agents their queues."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            queues = {}
            for code, name, ring, wrap in QUEUES:
                queues[code], _ = Queue.objects.update_or_create(
                    code=code, defaults={"name": name, "ring_seconds": ring, "wrap_up_seconds": wrap}
                )
            for position, (queue, code, label, contact, sale, dnc) in enumerate(DISPOSITIONS):
                Disposition.objects.update_or_create(
                    queue=queues[queue] if queue else None, code=code,
                    defaults={"label": label, "counts_as_contact": contact, "is_sale": sale,
                              "sets_do_not_call": dnc, "position": position},
                )  # fmt: skip
            if not SourceSystem.objects.filter(code=PBX_SOURCE).exists():
                crm_services.source_system_create(
                    code=PBX_SOURCE, name="Phone system (PBX bridge)", kind="ivr"
                )
            agents = User.objects.filter(groups__name="agent", is_active=True).distinct()
            for user in agents:
                services.agent_for(user=user).queues.set(queues.values())
        self.stdout.write(
            f"Floor ready: queues {', '.join(queues)}, {len(DISPOSITIONS)} dispositions, "
            f"{agents.count()} agents, phone system '{PBX_SOURCE}'."
        )
        # seed_demo published the demo script before these queues existed (on every queue).
        for line in scripting_demo.seed():
            self.stdout.write(line)
