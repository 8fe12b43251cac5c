"""A customer named by new contacts, events, change history or inbox rows is no
longer locked FOR KEY SHARE: the check holds one shared advisory lock instead,
and deleting (or renumbering) a customer takes it exclusively at commit.

Why: a row lock is written into the customer's row, so every batch of touchpoint
results dirtied the page of each of its ~700 customers, and the first such write
to a page after a checkpoint puts the whole 8 KB page into the WAL. At 1M
customers (a table larger than shared_buffers) that was most of the ingest's WAL
and most of PostgreSQL's CPU per result; measured on one INSERT of 700 contacts
right after a checkpoint, the reference check took 35.7 ms and 697 full-page
images, 5.3 ms without them. An advisory lock lives in the lock table only.

The guarantee is unchanged: a customer named by a row that commits still exists.
- An inserting statement that names customers takes the lock shared, then (a
  later statement, so a later snapshot under READ COMMITTED) checks that every
  named customer exists.
- A transaction deleting or renumbering a customer takes it exclusively in its
  commit-time check (migration 0018's restrict trigger), so that check runs only
  once every transaction that may have named the customer has committed or
  rolled back, and sees their rows: a customer still named is not deleted. One
  that starts naming it after that waits for the delete to commit, then finds
  the customer gone and is refused.
Shared holders never wait for each other; a delete waits for the batches in
flight (well under a second), and ingest waits while a delete commits. Customers
are deleted rarely (the admin; no service deletes them).

Under REPEATABLE READ or SERIALIZABLE a statement's snapshot is the
transaction's, older than the lock, so there the check locks the rows FOR KEY
SHARE as before.
"""

from importlib import import_module

from django.db import migrations

_0018 = import_module("crm.migrations.0018_hot_tables_check_references_per_statement")

# The advisory lock's key: (0x43524D43, 1), "CRMC".
LOCK = "1129467203, 1"

CHECK = f"""
CREATE OR REPLACE FUNCTION crm_references_check() RETURNS trigger LANGUAGE plpgsql AS $$
-- Arguments: (column, referenced table) pairs. The statement's new rows are new_rows.
DECLARE
    i integer := 0;
    wanted bigint;
    found bigint;
BEGIN
    WHILE i < TG_NARGS LOOP
        IF TG_ARGV[i + 1] = 'crm_customer' AND current_setting('transaction_isolation') = 'read committed' THEN
            -- Customers: when the rows name any, the shared lock, then the count in a
            -- statement of its own (a snapshot taken after the lock was granted).
            EXECUTE format('SELECT count(DISTINCT %1$I) FROM new_rows', TG_ARGV[i]) INTO wanted;
            found := 0;
            IF wanted > 0 THEN
                PERFORM pg_advisory_xact_lock_shared({LOCK});
                EXECUTE format(
                    'SELECT count(*) FROM %2$I p WHERE p.id = ANY(ARRAY('
                    'SELECT DISTINCT %1$I FROM new_rows WHERE %1$I IS NOT NULL))',
                    TG_ARGV[i], TG_ARGV[i + 1]) INTO found;
            END IF;
        ELSE
            -- = ANY(ARRAY(...)): the referenced table is probed by its primary key, whatever
            -- the planner guesses of the (statistics-less) transition table.
            EXECUTE format(
                'WITH v AS MATERIALIZED (SELECT DISTINCT %1$I FROM new_rows WHERE %1$I IS NOT NULL)'
                ' SELECT (SELECT count(*) FROM v), (SELECT count(*) FROM ('
                'SELECT 1 FROM %2$I p WHERE p.id = ANY(ARRAY(SELECT * FROM v)) FOR KEY SHARE OF p) l)',
                TG_ARGV[i], TG_ARGV[i + 1]) INTO wanted, found;
        END IF;
        IF found < wanted THEN
            RAISE EXCEPTION 'insert or update on table "%" violates its reference "%" to "%"',
                TG_TABLE_NAME, TG_ARGV[i], TG_ARGV[i + 1]
                USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME, COLUMN = TG_ARGV[i];
        END IF;
        i := i + 2;
    END LOOP;
    RETURN NULL;
END $$;
"""

# The restrict check as migration 0018 made it, with the wait for the lock first.
_RESTRICT_0018 = _0018.FUNCTIONS[_0018.FUNCTIONS.index("CREATE FUNCTION crm_references_restrict()") :]
RESTRICT = _RESTRICT_0018.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION").replace(
    "BEGIN\n    WHILE",
    "BEGIN\n"
    "    IF TG_TABLE_NAME = 'crm_customer' THEN\n"
    "        -- Wait for every transaction that may be naming customers (migration 0021);\n"
    "        -- the checks below then see what they committed.\n"
    f"        PERFORM pg_advisory_xact_lock({LOCK});\n"
    "    END IF;\n"
    "    WHILE",
    1,
)

if "pg_advisory_xact_lock(" not in RESTRICT:
    raise RuntimeError("migration 0018's restrict function is not as expected: the lock was not added")

# Going back: migration 0018's versions of both functions (its third, unchanged here,
# is replaced by itself).
BACK = _0018.FUNCTIONS.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0020_interaction_agent_index_only_where_set"),
    ]

    operations = [
        migrations.RunSQL(CHECK + RESTRICT, reverse_sql=BACK),
    ]
