"""Rule now belongs to the policy app (policy 0001): delete it from the gateway app's state only.

The table ``gateway_rule`` and its rows stay; ``policy.Rule`` uses them (Meta.db_table).
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('gateway', '0003_rule_dry_run_and_review_hold'),
        ('policy', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='Rule')],
            database_operations=[],
        ),
    ]
