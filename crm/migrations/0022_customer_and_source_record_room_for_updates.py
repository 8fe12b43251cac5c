"""Room on each page of customers and source records for updated rows.

A profile change from a touchpoint (a tier, an address, a consent) changes no
indexed column of the customer, and a source record's remembered profile orders
none of its; yet 60% of those customer updates and half the source record
updates in ``bench/ingest.py`` wrote a new row version on another page (the
pages were full) and so an entry into every index: eight for a customer, four of
them GIN. With 15% of each page free, the new version stays on the page (a HOT
update) and no index is touched.

New pages only: existing rows get the room when their table is next rewritten
(``VACUUM FULL crm_customer, crm_sourcerecord`` in a maintenance window, or
pg_repack without the lock); ``seed_bulk`` and restores load into the new pages.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0021_customer_references_checked_without_row_locks"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE crm_customer SET (fillfactor = 85); ALTER TABLE crm_sourcerecord SET (fillfactor = 85)",
            "ALTER TABLE crm_customer RESET (fillfactor); ALTER TABLE crm_sourcerecord RESET (fillfactor)",
        ),
    ]
