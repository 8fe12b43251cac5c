"""A published (or retired) script version can never change: the database refuses.

The designer and the services only ever edit drafts, but an agent mid-call must
never see the step under them change, whatever writes to the table (a shell, a
script, a bug): so the rule lives in PostgreSQL. Allowed on a non-draft row:
published -> retired (with retired_at), nothing else. A draft may be edited,
published or deleted freely. TRUNCATE (the test suite's flush) fires no row
trigger.
"""

from __future__ import annotations

from django.db import migrations

FORWARD = """
CREATE FUNCTION scripting_version_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'script version % (v%) is published: it cannot be deleted', OLD.id, OLD.number
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status <> 'draft' AND (
        NEW.graph IS DISTINCT FROM OLD.graph
        OR NEW.number IS DISTINCT FROM OLD.number
        OR NEW.script_id IS DISTINCT FROM OLD.script_id
        OR NEW.published_at IS DISTINCT FROM OLD.published_at
        OR NEW.status = 'draft'
        OR (OLD.status = 'retired' AND NEW.status <> 'retired')
    ) THEN
        RAISE EXCEPTION 'script version % (v%) is published: its content cannot change; edit a draft', OLD.id, OLD.number
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER scripting_version_frozen
    BEFORE UPDATE OR DELETE ON scripting_scriptversion
    FOR EACH ROW EXECUTE FUNCTION scripting_version_frozen();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS scripting_version_frozen ON scripting_scriptversion;
DROP FUNCTION IF EXISTS scripting_version_frozen();
"""


class Migration(migrations.Migration):
    dependencies = [("scripting", "0001_scripts_versions_runs_and_answers")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
