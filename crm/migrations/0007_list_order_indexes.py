"""Indexes in the order the API lists accounts (newest first) and households (by name).

Built CONCURRENTLY, outside a transaction: at a million customers the account
table holds millions of rows, and a plain CREATE INDEX would block every write
to it (opening an account, a touchpoint's balance update) while it builds.
"""

from __future__ import annotations

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("crm", "0006_event_keys_per_source_and_change_history")]
    operations = [
        AddIndexConcurrently(
            model_name="account",
            index=models.Index(fields=["-opened_on", "id"], name="account_opened_on_id"),
        ),
        AddIndexConcurrently(
            model_name="household",
            index=models.Index(fields=["name", "id"], name="household_name_id"),
        ),
    ]
