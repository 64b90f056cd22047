"""RuleSet documents: YAML import/export of a connection's rules, used by the
management commands, the admin and the presets.

Schema (every key except ``name`` and ``effect`` is optional on import; export
writes all of them)::

    apiVersion: airlock.dev/v1
    kind: RuleSet
    metadata:
      connection: prod              # informational; import targets --connection
    rules:
      - name: no-secrets            # unique within the connection, [a-z0-9-]
        order: 10                   # default: 10 x position in the list (1-based)
        description: ""
        enabled: true
        effect: deny                # allow | deny | review
        subjects: ["*"]             # globs on username / subject
        groups: []                  # globs on IdP groups
        verbs: [get, list, watch]
        apiGroups: [""]             # resource rules: apiGroups, resources,
        resources: [secrets]        #   namespaces and names (all required)
        namespaces: ["*"]
        names: ["*"]
        nonResourceURLs: []         # or non-resource rules: paths like /version
        dryRun: any                 # any | only (dry runs only) | never (real requests only)
        maskSecrets: true
        requiresLease: false
        review:
          minApprovals: 1
          reviewerGroups: []
          hold: open                # open: hold the request up to AIRLOCK_REVIEW_HOLD_SECONDS;
                                    # retry: answer at once with a Status naming the review,
                                    #   the agent runs the request again once it is approved
        budget:                     # per agent and connection, for the requests this rule decides
          rate: 5/second            #   (policy.budgets): N/unit or "N per M units"
          quota: 10/hour
          concurrent: 3             #   at once (exec, attach, port-forward, watch)
          loop: 5/minute            #   the same refused or failing request; off: never slowed

A dry run (``dryRun=All``, kube.dryrun) is never held for review: a review rule
that matches one denies it; a rule with ``dryRun: only`` placed before it allows
dry runs (both presets start with one).

Import validates the whole document before writing anything and then writes
in one transaction, so a failed import leaves the connection's rules as they
were.  Errors name the rule and the field.
"""

from __future__ import annotations

import difflib
import json

import yaml
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from policy.models import Rule

API_VERSION = "airlock.dev/v1"
KIND = "RuleSet"

# YAML key -> model field, in export order.
FIELDS = {
    "name": "name",
    "order": "order",
    "description": "description",
    "enabled": "enabled",
    "effect": "effect",
    "subjects": "subjects",
    "groups": "groups",
    "verbs": "verbs",
    "apiGroups": "api_groups",
    "resources": "resources",
    "namespaces": "namespaces",
    "names": "names",
    "nonResourceURLs": "non_resource_urls",
    "dryRun": "dry_run",
    "maskSecrets": "mask_secrets",
    "maskingDetectors": "masking_detectors",
    "requiresLease": "requires_lease",
    "budget": "budget",
}
REVIEW_FIELDS = {"minApprovals": "min_approvals", "reviewerGroups": "reviewer_groups", "hold": "review_hold"}
YAML_KEY = {field: key for key, field in FIELDS.items()} | {
    field: f"review.{key}" for key, field in REVIEW_FIELDS.items()
}
_SCALAR_TYPES = {
    "name": (str, "a string"),
    "order": (int, "an integer"),
    "description": (str, "a string"),
    "enabled": (bool, "true or false"),
    "effect": (str, "a string"),
    "maskSecrets": (bool, "true or false"),
    "requiresLease": (bool, "true or false"),
    "minApprovals": (int, "an integer"),
    "dryRun": (str, "any, only or never"),
    "hold": (str, "retry or open"),
    "budget": (dict, "a mapping with rate, quota, concurrent and/or loop"),
}
MAX_DOCUMENT_BYTES = 1024 * 1024


class RuleSetError(ValueError):
    """The document is invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# --------------------------------------------------------------------------- export


class _Dumper(yaml.SafeDumper):
    """Safe dumper without &anchors/*aliases: each rule reads on its own."""

    def ignore_aliases(self, data):
        return True


def rule_to_dict(rule: Rule) -> dict:
    item = {key: getattr(rule, field) for key, field in FIELDS.items()}
    item["review"] = {key: getattr(rule, field) for key, field in REVIEW_FIELDS.items()}
    return item


def to_document(rules, connection_name: str) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"connection": connection_name},
        "rules": [rule_to_dict(rule) for rule in rules],
    }


def dump(rules, connection_name: str) -> str:
    """YAML text of ``rules`` (iterable of Rule) in evaluation order."""
    ordered = sorted(rules, key=lambda r: (r.order, r.name))
    return yaml.dump(
        to_document(ordered, connection_name), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
        default_flow_style=None, width=100,
    )


def export_connection(connection) -> str:
    return dump(connection.rules.all(), connection.name)


# --------------------------------------------------------------------------- parse


def _label(index: int, item) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"rule {index + 1}" + (f" {json.dumps(name)}" if isinstance(name, str) else "")


def _is_type(value, expected: type) -> bool:
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def parse_document(document) -> list[dict]:
    """Turn a RuleSet document into a list of model-field dicts, or raise RuleSetError."""
    if not isinstance(document, dict):
        raise RuleSetError(["the document must be a mapping with apiVersion, kind and rules"])
    errors = []
    if document.get("apiVersion") != API_VERSION:
        errors.append(f"apiVersion must be {API_VERSION}")
    if document.get("kind") != KIND:
        errors.append(f"kind must be {KIND}")
    unknown = sorted(set(document) - {"apiVersion", "kind", "metadata", "rules"}, key=str)
    if unknown:
        errors.append("unknown top-level field(s): " + ", ".join(map(str, unknown)))
    rules = document.get("rules")
    if not isinstance(rules, list):
        errors.append("rules must be a list")
        raise RuleSetError(errors)

    parsed = []
    for index, item in enumerate(rules):
        label = _label(index, item)
        if not isinstance(item, dict):
            errors.append(f"{label}: must be a mapping")
            continue
        fields = {"order": 10 * (index + 1)}
        for key, value in item.items():
            if key == "review":
                if not isinstance(value, dict):
                    errors.append(f"{label}: review: must be a mapping")
                    continue
                for sub, sub_value in value.items():
                    if sub not in REVIEW_FIELDS:
                        errors.append(f"{label}: review: unknown field {sub!s}")
                    elif _check_scalar(f"{label}: review.{sub}", sub, sub_value, errors):
                        fields[REVIEW_FIELDS[sub]] = list(sub_value) if isinstance(sub_value, list) else sub_value
            elif key not in FIELDS:
                errors.append(f"{label}: unknown field {key!s}" + _did_you_mean(key))
            elif _check_scalar(f"{label}: {key}", key, value, errors):
                fields[FIELDS[key]] = list(value) if isinstance(value, list) else (
                    dict(value) if isinstance(value, dict) else value)
        for required in ("name", "effect"):
            if required not in item:
                errors.append(f"{label}: {required}: is required")
        parsed.append(fields)
    if errors:
        raise RuleSetError(errors)
    return parsed


def _check_scalar(where: str, key: str, value, errors: list[str]) -> bool:
    expected = _SCALAR_TYPES.get(key)
    if expected and not _is_type(value, expected[0]):
        errors.append(f"{where}: must be {expected[1]}")
        return False
    return True


def _did_you_mean(key) -> str:
    known = {k.lower(): k for k in [*FIELDS, "review"]}
    known |= {field: key for key, field in FIELDS.items()}  # snake_case model names
    close = difflib.get_close_matches(str(key).lower(), list(known), n=1, cutoff=0.75)
    return f" (did you mean {known[close[0]]}?)" if close else ""


def parse_text(text: str | bytes) -> list[dict]:
    """Parse YAML text (safe loader only) into model-field dicts."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise RuleSetError([f"the document is larger than {MAX_DOCUMENT_BYTES} bytes"])
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RuleSetError([f"not valid YAML{where}"]) from None
    return parse_document(document)


# --------------------------------------------------------------------------- apply


def validate_rules(connection, rule_fields: list[dict], *, replace: bool) -> list[Rule]:
    """Build unsaved Rule objects and validate all of them; raise RuleSetError."""
    errors = []
    rules = []
    seen = set()
    existing = set() if replace else set(connection.rules.values_list("name", flat=True))
    for index, fields in enumerate(rule_fields):
        label = _label(index, fields)
        rule = Rule(connection=connection, **fields)
        try:
            rule.full_clean(validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                key = YAML_KEY.get(field, field if field != "__all__" else "rule")
                errors.extend(f"{label}: {key}: {message}" for message in messages)
        name = fields.get("name")
        if name in seen:
            errors.append(f"{label}: name: appears more than once in the document")
        elif name in existing:
            errors.append(
                f"{label}: name: connection {connection.name} already has a rule with this name "
                "(replace all rules to overwrite)"
            )
        seen.add(name)
        rules.append(rule)
    if errors:
        raise RuleSetError(errors)
    return rules


def apply_rules(connection, rule_fields: list[dict], *, replace: bool = False) -> list[Rule]:
    """Validate everything, then write all rules in one transaction (all or nothing)."""
    rules = validate_rules(connection, rule_fields, replace=replace)
    try:
        with transaction.atomic():
            if replace:
                Rule.objects.filter(connection=connection).delete()
            for rule in rules:
                rule.save()
    except (IntegrityError, ValidationError):
        raise RuleSetError(
            [f"connection {connection.name} changed while importing; nothing was written, try again"]
        ) from None
    return rules


def import_text(connection, text: str | bytes, *, replace: bool = False) -> list[Rule]:
    return apply_rules(connection, parse_text(text), replace=replace)
