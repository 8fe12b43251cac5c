from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0010_account_opened_on_defaults_to_utc"),
    ]

    operations = [
        migrations.AddField(
            model_name="businessevent",
            name="dispatch_attempts",
            field=models.PositiveSmallIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="businessevent",
            name="dispatch_error",
            field=models.TextField(
                blank=True, db_default="", default="", help_text="Why the last dispatch of this event failed."
            ),
        ),
        # Events recorded before the outbox existed had no listeners to wait for:
        # they count as dispatched (at the epoch), and new rows start empty. A
        # constant default is a catalog change in PostgreSQL, not a table rewrite,
        # so this stays instant on a table of millions of events.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddField(
                    model_name="businessevent",
                    name="dispatched_at",
                    field=models.DateTimeField(
                        blank=True,
                        help_text="When every deferred listener had run; empty until then.",
                        null=True,
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "ALTER TABLE crm_businessevent ADD COLUMN dispatched_at timestamp with time zone NULL"
                    " DEFAULT '1970-01-01T00:00:00Z';"
                    " ALTER TABLE crm_businessevent ALTER COLUMN dispatched_at DROP DEFAULT;",
                    reverse_sql="ALTER TABLE crm_businessevent DROP COLUMN dispatched_at;",
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="businessevent",
            index=models.Index(
                condition=models.Q(("dispatched_at__isnull", True)),
                fields=["recorded_at", "id"],
                name="event_undispatched",
            ),
        ),
    ]
