"""The access log becomes a table partitioned by month on ``at``.

It grows by a row per customer read (billions over the years it must be kept).
Monthly partitions let retention drop a whole month at once (DETACH, then DROP
TABLE: no DELETE, so the append-only rule for rows stands), keep each month's
indexes small, and let a query over a time range read only its months.

1. The old table steps aside under another name, with its indexes and sequence.
2. The partitioned table is created with the same columns and indexes (the
   foreign key to the user follows the copy, checked in one pass). Its primary key must include the partition key, so it is (id, at);
   Django keeps ``id`` as the model's primary key (ids come from one sequence,
   so they stay unique). PostgreSQL 16 allows no identity column on a
   partitioned table: a sequence owned by the column stands in for it.
3. ``crm_accesslog_ensure_partitions`` (below) creates the monthly partitions
   covering the existing rows through three months ahead, and a DEFAULT
   partition so that an insert never fails for want of one.
4. The rows are copied, the sequence moved past them, the old table dropped.
5. The append-only row trigger is created on the partitioned table (PostgreSQL
   13+ clones it onto every partition, present and future), and the old
   table's grants are given to the new one (an application role that did not
   own the table keeps exactly what it had, and USAGE on the sequence where it
   could insert).

The function is SECURITY DEFINER: the application runs as a role that does not
own the tables (see README), yet its daily Celery task must create next months'
partitions. The function can only create partitions named after their month and
move rows out of the DEFAULT partition into them; it drops and deletes nothing
that holds a row. Dropping old months (``manage.py access_log_retention``) needs
the owner.

The copy runs in the migration's transaction: fine for the log's size when this
ships; at billions of rows one would attach the old table as a partition instead.
"""

from __future__ import annotations

from django.db import migrations

ENSURE_PARTITIONS = """
CREATE FUNCTION crm_accesslog_ensure_partitions(months_ahead integer, since timestamptz DEFAULT NULL)
RETURNS TABLE (partition_name text, rows_moved bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
SET timezone = 'UTC'
-- Creating a partition takes a lock that makes inserts wait: give up rather
-- than stall every screen pop behind a long read of the log (a retry follows).
SET lock_timeout = '5s'
AS $$
DECLARE
    this_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
    first_month timestamp := least(this_month, date_trunc('month', coalesce(since, now()) AT TIME ZONE 'UTC'));
    wanted timestamp[];
    month timestamp;
    stuck bigint := 0;
    user_fk name;
BEGIN
    IF months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be between 0 and 120, not %', months_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Two callers at once (beat and an operator) would race on CREATE TABLE.
    PERFORM pg_advisory_xact_lock(hashtext('crm_accesslog_ensure_partitions'));
    IF to_regclass('crm_accesslogentry_default') IS NULL THEN
        CREATE TABLE crm_accesslogentry_default PARTITION OF crm_accesslogentry DEFAULT;
    END IF;
    -- Months wanted: from ``since`` (or this month) to months_ahead ahead, and every
    -- month with rows that landed in the DEFAULT partition for want of their own.
    SELECT array_agg(m ORDER BY m) INTO wanted
    FROM (
        SELECT generate_series(first_month, this_month + make_interval(months => months_ahead),
                               interval '1 month') AS m
        UNION
        SELECT date_trunc('month', d.at AT TIME ZONE 'UTC') FROM crm_accesslogentry_default AS d
    ) AS months
    WHERE to_regclass(format('%I', 'crm_accesslogentry_' || to_char(m, 'YYYY_MM'))) IS NULL;
    IF wanted IS NULL THEN
        RETURN;
    END IF;
    -- A month cannot be created while the DEFAULT partition holds rows of it: set
    -- the DEFAULT partition aside, create the months, and route its rows again.
    -- The rows move; none is deleted.
    SELECT count(*) INTO stuck FROM crm_accesslogentry_default;
    IF stuck > 0 THEN
        -- Rows written earlier in this transaction still owe their deferred
        -- foreign-key check, and a table with pending checks cannot be dropped:
        -- check them now (and defer the constraint again at the end).
        SELECT conname INTO user_fk FROM pg_constraint
        WHERE conrelid = 'crm_accesslogentry'::regclass AND contype = 'f' AND condeferred;
        IF user_fk IS NOT NULL THEN
            EXECUTE format('SET CONSTRAINTS %I IMMEDIATE', user_fk);
        END IF;
        ALTER TABLE crm_accesslogentry DETACH PARTITION crm_accesslogentry_default;
        ALTER TABLE crm_accesslogentry_default RENAME TO crm_accesslogentry_default_moving;
    END IF;
    FOREACH month IN ARRAY wanted LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF crm_accesslogentry FOR VALUES FROM (%L) TO (%L)',
            'crm_accesslogentry_' || to_char(month, 'YYYY_MM'),
            month AT TIME ZONE 'UTC',
            (month + interval '1 month') AT TIME ZONE 'UTC'
        );
    END LOOP;
    IF stuck = 0 THEN
        RETURN QUERY SELECT 'crm_accesslogentry_' || to_char(w.m, 'YYYY_MM'), 0::bigint
                     FROM unnest(wanted) AS w(m) ORDER BY w.m;
        RETURN;
    END IF;
    CREATE TABLE crm_accesslogentry_default PARTITION OF crm_accesslogentry DEFAULT;
    INSERT INTO crm_accesslogentry (id, user_id, customer_id, channel, path, at)
        SELECT id, user_id, customer_id, channel, path, at FROM crm_accesslogentry_default_moving;
    RETURN QUERY
        SELECT 'crm_accesslogentry_' || to_char(w.m, 'YYYY_MM'), count(d.id)
        FROM unnest(wanted) AS w(m)
        LEFT JOIN crm_accesslogentry_default_moving AS d
            ON date_trunc('month', d.at AT TIME ZONE 'UTC') = w.m
        GROUP BY w.m ORDER BY w.m;
    DROP TABLE crm_accesslogentry_default_moving;
    IF user_fk IS NOT NULL THEN
        EXECUTE format('SET CONSTRAINTS %I DEFERRED', user_fk);
    END IF;
END;
$$;
"""

# Grants of the table being replaced, given to its replacement.
COPY_GRANTS = """
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS who,
               a.privilege_type AS what
        FROM pg_class AS c
        CROSS JOIN LATERAL aclexplode(c.relacl) AS a
        LEFT JOIN pg_roles AS r ON r.oid = a.grantee
        WHERE c.oid = '{source}'::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON {target} TO %s', g.what, g.who);
        IF g.what = 'INSERT' THEN
            EXECUTE format('GRANT USAGE ON SEQUENCE {sequence} TO %s', g.who);
        END IF;
    END LOOP;
END $$;
"""

FORWARD = (
    """
LOCK TABLE crm_accesslogentry IN EXCLUSIVE MODE;
ALTER TABLE crm_accesslogentry RENAME TO crm_accesslogentry_unpartitioned;
ALTER INDEX crm_accesslogentry_pkey RENAME TO crm_accesslogentry_unpartitioned_pkey;
ALTER INDEX accesslog_customer_time RENAME TO accesslog_customer_time_unpartitioned;
ALTER INDEX accesslog_user_time RENAME TO accesslog_user_time_unpartitioned;
ALTER SEQUENCE crm_accesslogentry_id_seq RENAME TO crm_accesslogentry_unpartitioned_id_seq;

CREATE TABLE crm_accesslogentry (
    id bigint NOT NULL,
    customer_id bigint NOT NULL,
    channel varchar(8) NOT NULL,
    path varchar(300) NOT NULL,
    at timestamptz NOT NULL,
    user_id bigint NOT NULL,
    CONSTRAINT crm_accesslogentry_pkey PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE SEQUENCE crm_accesslogentry_id_seq OWNED BY crm_accesslogentry.id;
ALTER TABLE crm_accesslogentry ALTER COLUMN id SET DEFAULT nextval('crm_accesslogentry_id_seq');
CREATE INDEX accesslog_customer_time ON crm_accesslogentry (customer_id, at DESC);
CREATE INDEX accesslog_user_time ON crm_accesslogentry (user_id, at DESC);
"""
    + ENSURE_PARTITIONS
    + """
SELECT count(*) FROM crm_accesslog_ensure_partitions(3, (SELECT min(at) FROM crm_accesslogentry_unpartitioned));
INSERT INTO crm_accesslogentry (id, user_id, customer_id, channel, path, at)
    SELECT id, user_id, customer_id, channel, path, at FROM crm_accesslogentry_unpartitioned;
-- Rows dated past the months just made (a clock gone wrong) went to DEFAULT: give them months.
SELECT count(*) FROM crm_accesslog_ensure_partitions(3);
SELECT setval('crm_accesslogentry_id_seq',
              greatest((SELECT last_value FROM crm_accesslogentry_unpartitioned_id_seq),
                       (SELECT coalesce(max(id), 0) FROM crm_accesslogentry_unpartitioned)));
-- Added after the copy: checked in one pass, not queued as a deferred check per row.
ALTER TABLE crm_accesslogentry ADD CONSTRAINT crm_accesslogentry_user_id_8bb8300a_fk_crm_user_id
    FOREIGN KEY (user_id) REFERENCES crm_user (id) DEFERRABLE INITIALLY DEFERRED;
CREATE TRIGGER crm_accesslog_no_update_delete
    BEFORE UPDATE OR DELETE ON crm_accesslogentry
    FOR EACH ROW EXECUTE FUNCTION crm_accesslog_append_only();
"""
    + COPY_GRANTS.format(
        source="crm_accesslogentry_unpartitioned",
        target="crm_accesslogentry",
        sequence="crm_accesslogentry_id_seq",
    )
    + """
DROP TABLE crm_accesslogentry_unpartitioned;
"""
)

BACKWARD = (
    """
LOCK TABLE crm_accesslogentry IN EXCLUSIVE MODE;
ALTER TABLE crm_accesslogentry RENAME TO crm_accesslogentry_partitioned;
ALTER INDEX crm_accesslogentry_pkey RENAME TO crm_accesslogentry_partitioned_pkey;
ALTER INDEX accesslog_customer_time RENAME TO accesslog_customer_time_partitioned;
ALTER INDEX accesslog_user_time RENAME TO accesslog_user_time_partitioned;
ALTER SEQUENCE crm_accesslogentry_id_seq RENAME TO crm_accesslogentry_partitioned_id_seq;

CREATE TABLE crm_accesslogentry (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL,
    channel varchar(8) NOT NULL,
    path varchar(300) NOT NULL,
    at timestamptz NOT NULL,
    user_id bigint NOT NULL
);
INSERT INTO crm_accesslogentry (id, user_id, customer_id, channel, path, at)
    SELECT id, user_id, customer_id, channel, path, at FROM crm_accesslogentry_partitioned;
SELECT setval(pg_get_serial_sequence('crm_accesslogentry', 'id'),
              greatest((SELECT last_value FROM crm_accesslogentry_partitioned_id_seq),
                       (SELECT coalesce(max(id), 0) FROM crm_accesslogentry_partitioned)));
CREATE INDEX accesslog_customer_time ON crm_accesslogentry (customer_id, at DESC);
CREATE INDEX accesslog_user_time ON crm_accesslogentry (user_id, at DESC);
ALTER TABLE crm_accesslogentry ADD CONSTRAINT crm_accesslogentry_user_id_8bb8300a_fk_crm_user_id
    FOREIGN KEY (user_id) REFERENCES crm_user (id) DEFERRABLE INITIALLY DEFERRED;
CREATE TRIGGER crm_accesslog_no_update_delete
    BEFORE UPDATE OR DELETE ON crm_accesslogentry
    FOR EACH ROW EXECUTE FUNCTION crm_accesslog_append_only();
"""
    + COPY_GRANTS.format(
        source="crm_accesslogentry_partitioned",
        target="crm_accesslogentry",
        sequence="crm_accesslogentry_id_seq",
    )
    + """
DROP TABLE crm_accesslogentry_partitioned;
DROP FUNCTION crm_accesslog_ensure_partitions(integer, timestamptz);
"""
)


class Migration(migrations.Migration):
    dependencies = [("crm", "0007_list_order_indexes")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
