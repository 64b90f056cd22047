"""Per-connection policy rules.  Matching semantics are documented in the policy package.

The table is still ``gateway_rule``: the model moved from the gateway app without
touching the data (migrations gateway 0004 and policy 0001 move it in state only).
"""

import logging

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from policy import vocabulary
from policy.check import InvalidRule, check_rule
from policy.compile import CompiledRule, broken_rule, compile_rule

logger = logging.getLogger(__name__)


class Effect(models.TextChoices):
    ALLOW = vocabulary.ALLOW, "Allow"
    DENY = vocabulary.DENY, "Deny"
    REVIEW = vocabulary.REVIEW, "Review (a human must approve)"


class DryRun(models.TextChoices):
    ANY = vocabulary.DRY_RUN_ANY, "Dry runs and real requests alike"
    ONLY = vocabulary.DRY_RUN_ONLY, "Dry runs only (dryRun=All, kubectl diff)"
    NEVER = vocabulary.DRY_RUN_NEVER, "Real requests only"


class Hold(models.TextChoices):
    OPEN = vocabulary.HOLD_OPEN, "Hold the request open until a decision (up to AIRLOCK_REVIEW_HOLD_SECONDS)"
    RETRY = vocabulary.HOLD_RETRY, "Answer at once; the agent retries once approved"


def _list_field(help_text):
    return models.JSONField(default=list, blank=True, help_text=help_text)


# Model fields checked by policy.check.check_rule.
RULE_FIELDS = (
    "name", "order", "enabled", "effect", "subjects", "groups", "verbs", "api_groups", "resources",
    "namespaces", "names", "non_resource_urls", "requires_lease", "min_approvals",
    "reviewer_groups", "mask_secrets", "masking_detectors", "dry_run", "review_hold", "budget",
)


class Rule(models.Model):
    """One policy rule of a connection; the first enabled matching rule (lowest order) decides."""

    connection = models.ForeignKey(
        "connections.Connection", on_delete=models.CASCADE, related_name="rules"
    )
    order = models.IntegerField(
        default=100, help_text="Evaluation order: lower first; ties are broken by name."
    )
    name = models.SlugField(max_length=63, help_text="Unique within the connection; shown in denials.")
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    effect = models.CharField(max_length=8, choices=Effect.choices)
    subjects = _list_field(
        'Glob patterns matched against the principal\'s username and subject, e.g. ["*"], '
        '["agent-*@example.com"]. With no subjects and no groups the rule matches nobody.'
    )
    groups = _list_field('IdP group names or globs, e.g. ["sre", "agents-*"].')
    verbs = _list_field(
        'e.g. ["get", "list", "watch"] or ["*"]. For resource rules: get list watch create update patch '
        "delete deletecollection proxy. For non-resource URLs: the lower-case HTTP method. "
        "exec/attach/portforward/proxy are decided by the subresource: get or create match both transports."
    )
    api_groups = _list_field('e.g. [""] (core), ["apps"], ["*"].')
    resources = _list_field(
        'e.g. ["pods"], ["pods/exec"], ["*/scale"], ["*"]. "pods" does not match "pods/exec".'
    )
    namespaces = _list_field('Globs; ["*"] matches all incl. cluster-scoped, [""] cluster-scoped only.')
    names = _list_field('Object name globs; ["*"] matches all, [""] only collection requests.')
    non_resource_urls = _list_field(
        'Path globs for non-resource requests, e.g. ["/version", "/apis/*"]. '
        "A rule has either resources or non-resource URLs."
    )
    dry_run = models.CharField(
        max_length=8, choices=DryRun.choices, default=DryRun.ANY,
        help_text="Which requests the rule matches: dry runs (dryRun=All, as kube-apiserver reads it), real "
        "requests, or both. A dry run is never held: a review rule that matches one denies it.",
    )
    requires_lease = models.BooleanField(default=False)
    review_hold = models.CharField(
        max_length=8, choices=Hold.choices, default=Hold.OPEN,
        help_text="Review rules: hold the request open until a decision, or answer at once with a Status naming "
        "the review (the agent runs it again once approved). kubectl prints nothing while a request is held "
        "open (exec and attach with stderr show a note there); the presets answer writes at once.",
    )
    min_approvals = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(20)]
    )
    reviewer_groups = _list_field("IdP groups whose members may approve requests held by this rule.")
    mask_secrets = models.BooleanField(
        default=True, help_text="Secret values are shown only when this is off and the rule allows."
    )
    masking_detectors = models.JSONField(
        default=dict, blank=True,
        help_text='Free-text detectors for requests this rule allows, e.g. {"disabled": ["jwt"]} or '
        '{"extra": [{"name": "ticket", "pattern": "TCK-[0-9]{8}"}]}; empty = the connection\'s setting.',
    )
    budget = models.JSONField(
        default=dict, blank=True,
        help_text='What each agent may spend under this rule, e.g. {"quota": "10/hour"}, {"rate": "5/second"}, '
        '{"concurrent": 3} (sessions at once), {"loop": "5/minute"} (the same refused or failing request; '
        '"off" turns loop detection off); empty = no budget, loop detection as AIRLOCK_BUDGET_LOOP says.',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "gateway_rule"  # kept from the gateway app: the model moved, the data did not
        ordering = ["connection__name", "order", "name"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "name"], name="gateway_rule_unique_name"),
        ]

    def __str__(self):
        return self.name

    def rule_fields(self) -> dict:
        return {field: getattr(self, field) for field in RULE_FIELDS}

    def clean_fields(self, exclude=None):
        # Remembered so clean() does not repeat a field's error in other words.
        self._invalid_fields = set()
        try:
            super().clean_fields(exclude)
        except ValidationError as exc:
            self._invalid_fields = set(exc.message_dict)
            raise

    def clean(self):
        skip = getattr(self, "_invalid_fields", set())
        errors = {f: m for f, m in check_rule(self.rule_fields()).items() if f not in skip}
        if errors:
            raise ValidationError(errors)

    def save(self, *args, **kwargs):
        # Every write path (admin, import, presets, shell) is validated: fail closed.
        self.full_clean()
        super().save(*args, **kwargs)

    def compile(self, connection_name: str | None = None) -> CompiledRule:
        """The immutable engine form; a row that no longer validates compiles to deny-all."""
        connection = self.connection.name if connection_name is None else connection_name
        try:
            return compile_rule(self.rule_fields(), id=self.pk, connection=connection)
        except InvalidRule as exc:
            logger.error(
                "rule %s (id %s) of connection %s is invalid (%s); it denies every request until fixed",
                self.name, self.pk, connection, ", ".join(sorted(exc.errors)),
            )
            return broken_rule(
                id=self.pk, name=self.name, order=self.order, connection=connection, enabled=self.enabled
            )

