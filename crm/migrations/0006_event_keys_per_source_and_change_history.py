"""Business event keys become unique per source system; events name who acted;
customer records keep an append-only history of every field change.

The history's customer key is declared here, with ON DELETE CASCADE, rather
than by Django: Django would delete the rows itself before the customer, which
the append-only trigger refuses. The trigger lets a row go only once its
customer is gone (the cascade), never while the customer is on file. TRUNCATE
stays out of the application's reach as for the access log (see 0003).
"""

import django.core.serializers.json
import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

FORWARD = """
ALTER TABLE crm_customerchange ADD CONSTRAINT crm_customerchange_customer_fk
    FOREIGN KEY (customer_id) REFERENCES crm_customer (id) ON DELETE CASCADE;

CREATE FUNCTION crm_customerchange_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND NOT EXISTS (SELECT 1 FROM crm_customer WHERE id = OLD.customer_id) THEN
        RETURN OLD;  -- the customer was erased: its history goes with it
    END IF;
    RAISE EXCEPTION 'crm_customerchange is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER crm_customerchange_no_update_delete
    BEFORE UPDATE OR DELETE ON crm_customerchange
    FOR EACH ROW EXECUTE FUNCTION crm_customerchange_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS crm_customerchange_no_update_delete ON crm_customerchange;
DROP FUNCTION IF EXISTS crm_customerchange_append_only();
ALTER TABLE crm_customerchange DROP CONSTRAINT IF EXISTS crm_customerchange_customer_fk;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0005_login_lockouts"),
    ]

    operations = [
        migrations.CreateModel(
            name="CustomerChange",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "version",
                    models.PositiveIntegerField(help_text="The customer's version after this change."),
                ),
                ("field", models.CharField(max_length=40)),
                (
                    "old_value",
                    models.JSONField(
                        blank=True, encoder=django.core.serializers.json.DjangoJSONEncoder, null=True
                    ),
                ),
                (
                    "new_value",
                    models.JSONField(
                        blank=True, encoder=django.core.serializers.json.DjangoJSONEncoder, null=True
                    ),
                ),
                ("at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
            ],
            options={
                "verbose_name": "customer change",
            },
        ),
        migrations.AlterModelOptions(
            name="customer",
            options={
                "permissions": [
                    ("change_customer_standing", "Can change a customer's tier, lifetime value and status")
                ]
            },
        ),
        migrations.AddField(
            model_name="businessevent",
            name="actor",
            field=models.ForeignKey(
                blank=True,
                help_text="The person or integration whose action raised the event; empty for the system.",
                null=True,
                on_delete=django.db.models.deletion.RESTRICT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="businessevent",
            name="idempotency_key",
            field=models.CharField(help_text="Unique per source system.", max_length=200),
        ),
        migrations.AddConstraint(
            model_name="businessevent",
            constraint=models.UniqueConstraint(
                fields=("source_system", "idempotency_key"), name="businessevent_unique_key_per_source"
            ),
        ),
        migrations.AddField(
            model_name="customerchange",
            name="actor",
            field=models.ForeignKey(
                blank=True,
                help_text="Who made the change; empty for the system itself (imports, policies).",
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="customerchange",
            name="customer",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="change_history",
                to="crm.customer",
            ),
        ),
        migrations.AddField(
            model_name="customerchange",
            name="source_system",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="+", to="crm.sourcesystem"
            ),
        ),
        migrations.AddIndex(
            model_name="customerchange",
            index=models.Index(fields=["customer", "-at", "-id"], name="customerchange_customer_time"),
        ),
        migrations.AddIndex(
            model_name="customerchange",
            index=models.Index(
                fields=["customer", "field", "-at", "-id"], name="customerchange_customer_field"
            ),
        ),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
