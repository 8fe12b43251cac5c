"""The access log refuses UPDATE and DELETE at the database, for every client.

TRUNCATE needs the table owner's privilege; production runs the application as a
role that does not own the tables (see README), which keeps TRUNCATE out of reach
while the test suite can still empty tables between tests.
"""

from __future__ import annotations

from django.db import migrations

FORWARD = """
CREATE FUNCTION crm_accesslog_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'crm_accesslogentry is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER crm_accesslog_no_update_delete
    BEFORE UPDATE OR DELETE ON crm_accesslogentry
    FOR EACH ROW EXECUTE FUNCTION crm_accesslog_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS crm_accesslog_no_update_delete ON crm_accesslogentry;
DROP FUNCTION IF EXISTS crm_accesslog_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("crm", "0002_staff_roles_and_crm_source")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
