from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("policy", "0002_rule_permissions_move_to_policy"),
    ]

    operations = [
        migrations.AddField(
            model_name="rule",
            name="budget",
            field=models.JSONField(
                blank=True, default=dict,
                help_text='What each agent may spend under this rule, e.g. {"quota": "10/hour"}, {"rate": "5/second"}, '
                '{"concurrent": 3} (sessions at once), {"loop": "5/minute"} (the same refused or failing request; '
                '"off" turns loop detection off); empty = no budget, loop detection as AIRLOCK_BUDGET_LOOP says.',
            ),
        ),
    ]
