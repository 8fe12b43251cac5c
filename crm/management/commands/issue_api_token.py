"""Issue a bearer token for a source system's integration or a staff user.

The secret is printed once; only its digest is stored.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from crm import services
from crm.models import ApiToken, SourceSystem, User


class Command(BaseCommand):
    help = "Issue an API token for a source system (--source-system CODE) or a user (--user NAME)."

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--source-system", help="Code of the source system, e.g. ivr.")
        who.add_argument("--user", help="Username of a staff member.")
        parser.add_argument("--name", default="", help="What the token is for.")
        parser.add_argument(
            "--rotate", action="store_true", help="Revoke the holder's other tokens once this one exists."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["source_system"]:
            source = SourceSystem.objects.filter(code=options["source_system"]).first()
            if source is None:
                known = ", ".join(SourceSystem.objects.values_list("code", flat=True))
                raise CommandError(f"No source system “{options['source_system']}”. Known: {known}.")
            user = User.objects.filter(source_system=source).first()
            if user is None:
                raise CommandError(f"{source.name} has no integration user; create it with the admin.")
        else:
            user = User.objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"No user “{options['user']}”.")
        token, secret = services.api_token_create(user=user, name=options["name"] or "issued by command")
        if options["rotate"]:
            ApiToken.objects.filter(user=user, revoked_at__isnull=True).exclude(pk=token.pk).update(
                revoked_at=timezone.now()
            )
        self.stdout.write(f"Token for {user.username} (shown once, store it now):\n{secret}")
