"""People and systems that use the CRM: staff, integrations and self-service customers."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone

from crm.validation import validate_time_zone


class Role(models.TextChoices):
    """Staff roles; each is a Django group holding the role's permissions."""

    AGENT = "agent", "Agent"
    SUPERVISOR = "supervisor", "Supervisor"
    ADMINISTRATOR = "administrator", "Administrator"


class User(AbstractUser):
    """A log-in. Exactly one of three kinds:

    - staff: belongs to role groups (agent, supervisor, administrator);
    - integration: ``source_system`` is set, authenticates with an API token;
    - self-service customer: ``customer`` is set, sees only that customer.
    """

    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_time_zone],
        help_text="Times are shown to this user in this zone (IANA name, e.g. America/Chicago).",
    )
    customer = models.OneToOneField(
        "crm.Customer",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="login",
        help_text="Set for a self-service customer log-in: it sees only this customer.",
    )
    source_system = models.OneToOneField(
        "crm.SourceSystem",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_user",
        help_text="Set for a source system's integration user.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                name="user_is_customer_or_integration_not_both",
                condition=models.Q(customer__isnull=True) | models.Q(source_system__isnull=True),
            ),
        ]

    @property
    def is_customer(self) -> bool:
        return self.customer_id is not None

    @property
    def is_integration(self) -> bool:
        return self.source_system_id is not None

    @property
    def roles(self) -> frozenset[str]:
        cached: frozenset[str] | None = getattr(self, "_roles_cache", None)
        if cached is None:
            cached = frozenset(self.groups.values_list("name", flat=True))
            self._roles_cache = cached
        return cached

    @property
    def is_staff_member(self) -> bool:
        """An agent, supervisor or administrator (not a customer nor an integration)."""
        if self.is_customer or self.is_integration:
            return False
        return self.is_superuser or bool(self.roles & {r.value for r in Role})


class ApiToken(models.Model):
    """A bearer token. Only its SHA-256 digest is stored; the secret is shown once."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for.")
    prefix = models.CharField(max_length=8, help_text="First characters, to recognise it.")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "revoked_at"], name="apitoken_user_revoked")]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self, now: object | None = None) -> bool:
        moment = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > moment  # type: ignore[operator]
