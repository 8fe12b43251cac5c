"""Log-in lock-outs are recorded, and tokens issued before every token expired get an end.

1. ``LoginLockout``: one row each time failed log-ins lock an account or a
   client address (crm.services.logins).
2. Staff and customer tokens issued without an expiry (staff tokens from the
   password grant used to live forever) now end where their kind's lifetime
   from issue would have ended them, so an old one stops working today; an
   integration's tokens keep living until revoked.
"""

from __future__ import annotations

import datetime as dt

import django.utils.timezone
from django.conf import settings
from django.db import migrations, models
from django.db.models import F


def end_open_ended_tokens(apps, schema_editor):  # type: ignore[no-untyped-def]
    ApiToken = apps.get_model("crm", "ApiToken")
    open_ended = ApiToken.objects.filter(expires_at__isnull=True, user__source_system__isnull=True)
    for customers, hours in (
        (True, settings.CRM_CUSTOMER_TOKEN_TTL_HOURS),
        (False, settings.CRM_STAFF_TOKEN_TTL_HOURS),
    ):
        open_ended.filter(user__customer__isnull=not customers).update(
            expires_at=F("created_at") + dt.timedelta(hours=hours)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0004_admin_names_for_tokens_and_access_log"),
    ]

    operations = [
        migrations.CreateModel(
            name="LoginLockout",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "username",
                    models.CharField(help_text="As typed in the failed log-in that locked.", max_length=150),
                ),
                ("client_address", models.GenericIPAddressField(blank=True, null=True, unpack_ipv4=True)),
                (
                    "scope",
                    models.CharField(
                        choices=[("account", "Account"), ("address", "Client address")], max_length=8
                    ),
                ),
                ("attempts", models.PositiveIntegerField(help_text="Failures counted when the lock began.")),
                ("locked_until", models.DateTimeField()),
                (
                    "entry_point",
                    models.CharField(
                        choices=[
                            ("api", "API token endpoint"),
                            ("page", "Staff log-in page"),
                            ("admin", "Admin log-in"),
                        ],
                        max_length=8,
                    ),
                ),
                ("at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
            ],
            options={
                "verbose_name": "log-in lock-out",
                "verbose_name_plural": "log-in lock-outs",
                "indexes": [
                    models.Index(fields=["-at"], name="loginlockout_time"),
                    models.Index(fields=["username", "-at"], name="loginlockout_username_time"),
                ],
            },
        ),
        migrations.RunPython(end_open_ended_tokens, migrations.RunPython.noop, elidable=True),
    ]
