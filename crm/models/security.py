"""What the log-in guard did: one row per lock-out, for administrators to review."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class LockoutScope(models.TextChoices):
    ACCOUNT = "account", "Account"
    ADDRESS = "address", "Client address"


class LoginEntryPoint(models.TextChoices):
    API = "api", "API token endpoint"
    PAGE = "page", "Staff log-in page"
    ADMIN = "admin", "Admin log-in"


class LoginLockout(models.Model):
    """Password log-in was refused for an account or a client address after too
    many failures (crm.services.logins). The counters themselves live in the
    shared cache; this row is the lasting record that it happened.

    ``username`` is kept as typed and need not name an existing user: guessing at
    unknown names is exactly what an administrator wants to see.
    """

    username = models.CharField(max_length=150, help_text="As typed in the failed log-in that locked.")
    client_address = models.GenericIPAddressField(null=True, blank=True, unpack_ipv4=True)
    scope = models.CharField(max_length=8, choices=LockoutScope.choices)
    attempts = models.PositiveIntegerField(help_text="Failures counted when the lock began.")
    locked_until = models.DateTimeField()
    entry_point = models.CharField(max_length=8, choices=LoginEntryPoint.choices)
    at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["-at"], name="loginlockout_time"),
            models.Index(fields=["username", "-at"], name="loginlockout_username_time"),
        ]
        verbose_name = "log-in lock-out"
        verbose_name_plural = "log-in lock-outs"

    def __str__(self) -> str:
        who = self.username if self.scope == LockoutScope.ACCOUNT else self.client_address
        return f"{self.get_scope_display()} {who} locked until {self.locked_until:%Y-%m-%d %H:%M} UTC"
