"""Play a phone system for the demo and the tests: inbound calls arrive through
the telephony API (POST /api/v1/calls/), from demo customers' numbers and from
unknown ones, into the queues; the switch hangs up talked-out calls and callers
who waited too long, as a real one would. Agents answer at their desk."""

from __future__ import annotations

import json
import random
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections
from django.utils import timezone

from agents.models import Call, CallState, Queue
from crm import services
from crm.models import Customer, SourceSystem


@dataclass
class Switch:
    url: str
    token: str
    sent: int = 0
    failed: int = 0
    talk: dict[int, float] = field(default_factory=dict)  # call pk -> seconds the caller will talk
    patience: dict[int, float] = field(default_factory=dict)  # call pk -> seconds the caller will wait

    def post(self, path: str, body: dict[str, Any]) -> int:
        request = urllib.request.Request(  # noqa: S310  (the CRM's own address, given by the operator)
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                self.sent += 1
                return int(response.status)
        except urllib.error.HTTPError as exc:
            self.failed += 1
            return int(exc.code)


class Command(BaseCommand):
    help = "Simulate a phone system: inbound calls through the telephony API, hang-ups as a switch would."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Where the CRM listens.")
        parser.add_argument(
            "--source", default="pbx", help="The phone system's source code (seed_floor makes pbx)."
        )
        parser.add_argument(
            "--per-minute", type=float, default=4.0, help="Calls arriving per minute (average)."
        )
        parser.add_argument(
            "--unknown-share", type=float, default=0.2, help="Share of calls from unknown numbers."
        )
        parser.add_argument("--talk", type=int, nargs=2, default=[20, 90], metavar=("MIN", "MAX"))
        parser.add_argument("--patience", type=int, nargs=2, default=[45, 150], metavar=("MIN", "MAX"))
        parser.add_argument(
            "--calls", type=int, default=0, help="Stop after this many calls (0: run until stopped)."
        )
        parser.add_argument("--seed", type=int, default=None, help="Random seed, for a repeatable run.")

    def handle(self, *args: Any, **options: Any) -> None:
        rng = random.Random(options["seed"])
        source = SourceSystem.objects.filter(code=options["source"], active=True).first()
        if source is None:
            raise CommandError(
                f"No active source system “{options['source']}”: run manage.py seed_floor first."
            )
        queues = list(Queue.objects.filter(active=True).values_list("code", flat=True))
        if not queues:
            raise CommandError("No active queue: run manage.py seed_floor first.")
        numbers = [
            c.primary_phone
            for c in Customer.objects.exclude(phones=[]).only("phones")[:500]
            if c.primary_phone
        ]
        user = source.api_user
        token, secret = services.api_token_create(user=user, name="simulate_calls")
        switch = Switch(url=options["url"].rstrip("/"), token=secret)
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self._wait_for(switch)
        self.stdout.write(f"Calling {switch.url} at {options['per_minute']}/min into {', '.join(queues)}.")
        made = 0
        next_call = time.monotonic()
        try:
            while not stopping and (not options["calls"] or made < options["calls"] or self._open(source)):
                now = time.monotonic()
                if now >= next_call and (not options["calls"] or made < options["calls"]):
                    made += 1
                    unknown = not numbers or rng.random() < options["unknown_share"]
                    ani = f"+1312555{rng.randint(0, 9999):04d}" if unknown else rng.choice(numbers)
                    call_id = f"sim-{timezone.now():%Y%m%d%H%M%S}-{made}"
                    switch.post(
                        "/api/v1/calls/", {"call_id": call_id, "ani": ani, "queue": rng.choice(queues)}
                    )
                    next_call = now + rng.expovariate(options["per_minute"] / 60.0)
                self._hang_up(switch, source, rng, options)
                close_old_connections()
                time.sleep(0.5)
        finally:
            services.api_token_revoke(token_id=token.pk, actor=user)
            self.stdout.write(f"Stopped: {made} calls, {switch.sent} requests, {switch.failed} refused.")

    def _open(self, source: SourceSystem) -> bool:
        return Call.objects.filter(source_system=source).exclude(state=CallState.ENDED).exists()

    def _hang_up(
        self, switch: Switch, source: SourceSystem, rng: random.Random, options: dict[str, Any]
    ) -> None:
        now = timezone.now()
        for call in Call.objects.filter(source_system=source).exclude(state=CallState.ENDED):
            if call.state in (CallState.CONNECTED, CallState.HELD) and call.answered_at:
                talk = switch.talk.setdefault(call.pk, rng.uniform(*options["talk"]))
                if (now - call.answered_at).total_seconds() >= talk:
                    switch.post(
                        f"/api/v1/calls/{call.telephony_id}/events/", {"event_id": "hangup", "kind": "ended"}
                    )
            elif call.state in (CallState.QUEUED, CallState.RINGING):
                patience = switch.patience.setdefault(call.pk, rng.uniform(*options["patience"]))
                if (now - call.arrived_at).total_seconds() >= patience:
                    switch.post(
                        f"/api/v1/calls/{call.telephony_id}/events/", {"event_id": "abandon", "kind": "ended"}
                    )

    def _wait_for(self, switch: Switch) -> None:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{switch.url}/login/", timeout=2).close()  # noqa: S310
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        raise CommandError(f"The CRM did not answer at {switch.url}.")
