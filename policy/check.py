"""Rule validation: every write path (admin, import, presets, shell) checks a rule here first."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from masking.config import check_detectors
from policy.budgets import check_budget
from policy.vocabulary import (
    DRY_RUN_ANY, DRY_RUN_CHOICES, DRY_RUN_ONLY, EFFECTS, HOLD_CHOICES, HOLD_OPEN, NON_RESOURCE_VERBS, RESOURCE_VERBS,
    REVIEW,
)

_VERB_HINTS = {
    "exec": 'exec is a subresource, not a verb: use resources ["pods/exec"] with verbs ["create"]',
    "attach": 'attach is a subresource, not a verb: use resources ["pods/attach"] with verbs ["create"]',
    "portforward": (
        'port-forward is a subresource, not a verb: use resources ["pods/portforward"] with verbs ["create"]'
    ),
    "port-forward": (
        'port-forward is a subresource, not a verb: use resources ["pods/portforward"] with verbs ["create"]'
    ),
    "log": 'logs are a subresource: use resources ["pods/log"] with verbs ["get"]',
    "logs": 'logs are a subresource: use resources ["pods/log"] with verbs ["get"]',
    "scale": 'scale is a subresource: use resources ["*/scale"] with verbs ["update", "patch"]',
    "read": 'use verbs ["get", "list", "watch"]',
    "write": 'use verbs ["create", "update", "patch", "delete", "deletecollection"]',
    "edit": 'use verbs ["update", "patch"]',
    "post": 'resource requests use "create" for POST',
    "put": 'resource requests use "update" for PUT',
}

_SLUG = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_LOWER_TOKEN = re.compile(r"[a-z0-9.*?-]+")
_NO_SPACE = re.compile(r"[^\s/\x00-\x1f\x7f]+")
_URL = re.compile(r"/[^\s?#]*")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
_MAX_ITEM = 253


class InvalidRule(ValueError):
    """A rule definition failed validation; ``errors`` maps field -> messages."""

    def __init__(self, errors: Mapping[str, list[str]]):
        self.errors = {field: list(messages) for field, messages in errors.items()}
        super().__init__("; ".join(f"{f}: {' '.join(m)}" for f, m in self.errors.items()))


def _string_list(field: str, value, errors: dict[str, list[str]]) -> list[str] | None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        errors.setdefault(field, []).append("must be a list of strings")
        return None
    too_long = [v for v in value if len(v) > _MAX_ITEM]
    if too_long:
        errors.setdefault(field, []).append(f"entries must be at most {_MAX_ITEM} characters")
        return None
    return list(value)


def _check_each(field, values, ok: Callable[[str], bool], what: str, errors) -> None:
    bad = [v for v in values if not ok(v)]
    if bad:
        shown = ", ".join(json.dumps(v) for v in bad[:5])
        errors.setdefault(field, []).append(f"invalid {what}: {shown}")


def _resource_ok(pattern: str) -> bool:
    if pattern == "*":
        return True
    segments = pattern.split("/")
    return len(segments) <= 2 and all(_LOWER_TOKEN.fullmatch(s) for s in segments)


def _check_verbs(values: list[str], allowed: frozenset[str], kind: str, errors) -> None:
    for verb in values:
        if verb == "*" or verb in allowed:
            continue
        hint = _VERB_HINTS.get(verb.lower())
        if hint is None and verb.lower() in allowed:
            hint = f'verbs are lower case: use "{verb.lower()}"'
        if hint is None:
            hint = "known verbs are " + ", ".join(sorted(allowed)) + ", or *"
        errors.setdefault("verbs", []).append(
            f"unknown verb {json.dumps(verb)} for {kind}: {hint}"
        )


def check_rule(fields: Mapping) -> dict[str, list[str]]:
    """Validate a rule given as model-field mapping; return field -> messages."""
    errors: dict[str, list[str]] = {}

    name = fields.get("name")
    if not isinstance(name, str) or not _SLUG.fullmatch(name):
        errors["name"] = [
            "must be 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit"
        ]
    order = fields.get("order")
    if isinstance(order, bool) or not isinstance(order, int):
        errors["order"] = ["must be an integer"]
    if fields.get("effect") not in EFFECTS:
        errors["effect"] = [f"must be one of {', '.join(EFFECTS)}"]
    for flag in ("enabled", "mask_secrets", "requires_lease"):
        if flag in fields and not isinstance(fields[flag], bool):
            errors[flag] = ["must be true or false"]
    dry_run = fields.get("dry_run", DRY_RUN_ANY)
    if dry_run not in DRY_RUN_CHOICES:
        errors["dry_run"] = [f"must be one of {', '.join(DRY_RUN_CHOICES)}"]
    elif dry_run == DRY_RUN_ONLY and fields.get("effect") == REVIEW:
        errors["dry_run"] = ["a dry run is never held for review: a rule for dry runs only allows or denies them"]
    elif dry_run == DRY_RUN_ONLY and fields.get("non_resource_urls"):
        errors["dry_run"] = ["only resource requests (writes) can be dry runs"]
    if fields.get("review_hold", HOLD_OPEN) not in HOLD_CHOICES:
        errors["review_hold"] = [f"must be one of {', '.join(HOLD_CHOICES)}"]
    detector_error = check_detectors(fields.get("masking_detectors"))
    if detector_error:
        errors["masking_detectors"] = [detector_error]
    budget_errors = check_budget(fields.get("budget"))
    if budget_errors:
        errors["budget"] = budget_errors
    min_approvals = fields.get("min_approvals", 1)
    if isinstance(min_approvals, bool) or not isinstance(min_approvals, int) or min_approvals < 1:
        errors["min_approvals"] = ["must be an integer of at least 1"]

    lists = {}
    for field in (
        "subjects", "groups", "verbs", "api_groups", "resources", "namespaces", "names",
        "non_resource_urls", "reviewer_groups",
    ):
        lists[field] = _string_list(field, fields.get(field, []), errors)

    for field in ("subjects", "groups", "reviewer_groups"):
        if lists[field] is not None:
            _check_each(field, lists[field], lambda v: bool(_PRINTABLE.fullmatch(v)), "entry", errors)
    if lists["api_groups"] is not None:
        _check_each(
            "api_groups", lists["api_groups"], lambda v: v == "" or bool(_LOWER_TOKEN.fullmatch(v)),
            'API group (use "" for the core group, lower case)', errors,
        )
    if lists["resources"] is not None:
        _check_each(
            "resources", lists["resources"], _resource_ok,
            'resource (lower-case plural like "pods", "pods/exec", "*/scale" or "*")', errors,
        )
    if lists["namespaces"] is not None:
        _check_each(
            "namespaces", lists["namespaces"], lambda v: v == "" or bool(_LOWER_TOKEN.fullmatch(v)),
            'namespace (lower case; "" matches cluster-scoped requests)', errors,
        )
    if lists["names"] is not None:
        _check_each(
            "names", lists["names"], lambda v: v == "" or bool(_NO_SPACE.fullmatch(v)),
            'name (no spaces or "/"; "" matches collection requests)', errors,
        )
    if lists["non_resource_urls"] is not None:
        _check_each(
            "non_resource_urls", lists["non_resource_urls"], lambda v: v == "*" or bool(_URL.fullmatch(v)),
            'URL path (must start with "/" or be "*"; query strings are not matched)', errors,
        )

    if lists["subjects"] == [] and lists["groups"] == []:
        errors.setdefault("subjects", []).append(
            'a rule needs subjects or groups; use ["*"] to match every authenticated principal'
        )

    verbs = lists["verbs"]
    resource_fields = ("api_groups", "resources", "namespaces", "names")
    if lists["non_resource_urls"]:
        set_fields = [f for f in resource_fields if lists[f]]
        if set_fields:
            errors.setdefault("non_resource_urls", []).append(
                "a rule applies either to resource requests or to non-resource URLs, not both "
                f"(remove {', '.join(set_fields)} or non_resource_urls)"
            )
        if verbs is not None:
            _check_verbs(verbs, NON_RESOURCE_VERBS, "non-resource URLs", errors)
    elif all(lists[f] is not None for f in resource_fields):
        if not lists["resources"]:
            errors.setdefault("resources", []).append(
                "a rule needs resources (or non_resource_urls); use [\"*\"] for all"
            )
        for field, hint in (
            ("api_groups", '[""] for the core group or ["*"] for all'),
            ("namespaces", '["*"] for all, [""] for cluster-scoped only'),
            ("names", '["*"] for all'),
        ):
            if not lists[field]:
                errors.setdefault(field, []).append(f"must not be empty for resource rules; use {hint}")
        if verbs is not None:
            _check_verbs(verbs, RESOURCE_VERBS, "resource requests", errors)
    if verbs == []:
        errors.setdefault("verbs", []).append('must not be empty; use ["*"] for all')
    return errors
