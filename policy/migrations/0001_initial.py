"""Rule moves from the gateway app to the policy app in Django's state only.

The table (``gateway_rule``), its rows and its constraint names stay as the gateway app's
migrations made them: this migration needs the table at its last gateway shape (gateway 0003)
and creates the model in state only; gateway 0004 then deletes it from the gateway app's state.
"""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('connections', '0001_initial'),
        ('gateway', '0003_rule_dry_run_and_review_hold'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Rule',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('order', models.IntegerField(default=100, help_text='Evaluation order: lower first; ties are broken by name.')),
                        ('name', models.SlugField(help_text='Unique within the connection; shown in denials.', max_length=63)),
                        ('description', models.TextField(blank=True)),
                        ('enabled', models.BooleanField(default=True)),
                        ('effect', models.CharField(choices=[('allow', 'Allow'), ('deny', 'Deny'), ('review', 'Review (a human must approve)')], max_length=8)),
                        ('subjects', models.JSONField(blank=True, default=list, help_text='Glob patterns matched against the principal\'s username and subject, e.g. ["*"], ["agent-*@example.com"]. With no subjects and no groups the rule matches nobody.')),
                        ('groups', models.JSONField(blank=True, default=list, help_text='IdP group names or globs, e.g. ["sre", "agents-*"].')),
                        ('verbs', models.JSONField(blank=True, default=list, help_text='e.g. ["get", "list", "watch"] or ["*"]. For resource rules: get list watch create update patch delete deletecollection proxy. For non-resource URLs: the lower-case HTTP method. exec/attach/portforward/proxy are decided by the subresource: get or create match both transports.')),
                        ('api_groups', models.JSONField(blank=True, default=list, help_text='e.g. [""] (core), ["apps"], ["*"].')),
                        ('resources', models.JSONField(blank=True, default=list, help_text='e.g. ["pods"], ["pods/exec"], ["*/scale"], ["*"]. "pods" does not match "pods/exec".')),
                        ('namespaces', models.JSONField(blank=True, default=list, help_text='Globs; ["*"] matches all incl. cluster-scoped, [""] cluster-scoped only.')),
                        ('names', models.JSONField(blank=True, default=list, help_text='Object name globs; ["*"] matches all, [""] only collection requests.')),
                        ('non_resource_urls', models.JSONField(blank=True, default=list, help_text='Path globs for non-resource requests, e.g. ["/version", "/apis/*"]. A rule has either resources or non-resource URLs.')),
                        ('dry_run', models.CharField(choices=[('any', 'Dry runs and real requests alike'), ('only', 'Dry runs only (dryRun=All, kubectl diff)'), ('never', 'Real requests only')], default='any', help_text='Which requests the rule matches: dry runs (dryRun=All, as kube-apiserver reads it), real requests, or both. A dry run is never held: a review rule that matches one denies it.', max_length=8)),
                        ('requires_lease', models.BooleanField(default=False)),
                        ('review_hold', models.CharField(choices=[('open', 'Hold the request open until a decision (up to AIRLOCK_REVIEW_HOLD_SECONDS)'), ('retry', 'Answer at once; the agent retries once approved')], default='open', help_text='Review rules: hold the request open until a decision, or answer at once with a Status naming the review (the agent runs it again once approved). kubectl prints nothing while a request is held open (exec and attach with stderr show a note there); the presets answer writes at once.', max_length=8)),
                        ('min_approvals', models.PositiveSmallIntegerField(default=1, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(20)])),
                        ('reviewer_groups', models.JSONField(blank=True, default=list, help_text='IdP groups whose members may approve requests held by this rule.')),
                        ('mask_secrets', models.BooleanField(default=True, help_text='Secret values are shown only when this is off and the rule allows.')),
                        ('masking_detectors', models.JSONField(blank=True, default=dict, help_text='Free-text detectors for requests this rule allows, e.g. {"disabled": ["jwt"]} or {"extra": [{"name": "ticket", "pattern": "TCK-[0-9]{8}"}]}; empty = the connection\'s setting.')),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('connection', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='rules', to='connections.connection')),
                    ],
                    options={
                        'db_table': 'gateway_rule',
                        'ordering': ['connection__name', 'order', 'name'],
                        'constraints': [models.UniqueConstraint(fields=('connection', 'name'), name='gateway_rule_unique_name')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
