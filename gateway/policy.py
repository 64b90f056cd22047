"""Per-connection policy: compiled rules, first-match evaluation, default deny.

The engine is pure (no Django import at module level) so the hot path can be
tested and reasoned about without a database.  ``gateway.models.Rule`` rows
are compiled into immutable ``CompiledRule`` objects; ``evaluate`` walks them
in ``order`` and the first enabled rule that matches decides.  Nothing
matching means deny.

Matching semantics (kept close to Kubernetes RBAC so rules read familiarly):

* Every list field is explicit.  An empty list matches nothing; ``*`` is
  needed for "any".  A rule with neither ``subjects`` nor ``groups`` matches
  nobody.
* Globs: ``*`` matches any run of characters (also the empty string, and
  ``/`` inside non-resource URLs), ``?`` exactly one character; everything
  else is literal.  So ``namespaces: ["*"]`` also covers cluster-scoped
  requests (namespace ``""``); use ``?*`` for "any namespace but not
  cluster-scoped", or ``""`` for "cluster-scoped only".  Likewise ``names:
  ["*"]`` covers collection requests (no name) and ``""`` matches only them.
* A Namespace object is cluster-scoped: ``get``, ``patch`` or ``delete`` of
  ``/api/v1/namespaces/dev`` (and its ``status`` and ``finalize``) is matched
  by allow rules as namespace ``""``.  kube-apiserver's RequestInfo gives
  such a request namespace ``dev`` and RBAC lets a RoleBinding in ``dev``
  grant it; here a rule scoped to ``dev`` never lets an agent relabel (say,
  lift the pod-security enforcement of) or delete the namespace it is
  confined to.  Deny and review rules match it under both ``""`` and ``dev``.
* Resources: ``pods`` matches only the ``pods`` resource, never its
  subresources; ``pods/exec``, ``*/scale``, ``pods/*`` name subresources; a
  bare ``*`` matches every resource and every subresource, as in RBAC.
* Exec, attach, port-forward and proxy are decided on resource+subresource,
  not on the HTTP method: kubectl opens them as a WebSocket ``GET`` (verb
  ``get``) and, if that upgrade is refused, retries as a SPDY ``POST`` (verb
  ``create``).  For these subresources a rule's verbs match when they contain
  ``get``, ``create``, ``*`` or the request's own verb, so both transports
  always get the same decision.  The legacy ``/api/v1/proxy/...`` form (verb
  ``proxy``, no subresource) is treated as subresource ``proxy``.
* Non-resource URLs (``/version``, ``/apis``...) are matched on the path with
  verbs that are the lower-cased HTTP method (``get``, ``head``, ``post``...).
* Dry runs (``dryRun=All`` where kube-apiserver reads it, kube.dryrun) are
  requests of their own: ``dry_run`` ``any`` (the default) matches dry runs and
  real requests alike, ``only`` dry runs only, ``never`` real requests only.
  A dry run is never held for review: when the first rule that matches it says
  ``review``, it is denied (fail closed), and the message says that a rule with
  ``dryRun: only`` placed before it can allow dry runs.  Both presets start with
  such a rule.

Deny and review rules match everything a request can reach (``Reach``), so a
forbidden action cannot be spelled another way; allow rules match the
request literally, so nothing is ever granted by these widenings:

* A collection request (no name) of ``list``, ``watch`` or
  ``deletecollection`` covers every name, and without a namespace every
  namespace (unless the resource is a built-in cluster-scoped one): "deny
  delete deployment web in shop" also refuses a deletecollection of shop's
  deployments and of all deployments, "deny get secrets in shop" also refuses
  ``kubectl get secrets -A``.  A collection of ``namespaces`` covers every
  namespace.
* Verbs imply the reads and deletes they perform: ``list`` returns what
  ``get`` would, ``watch`` what ``list`` would, and ``deletecollection``
  deletes and returns the objects (``delete``, ``list``, ``get``).
* Deleting a namespace deletes every object in it: it matches a deny or review
  rule whose verbs include ``delete`` or ``deletecollection`` for any resource
  in that namespace.
* API groups that serve the same objects are one: core ``events`` and
  ``events.k8s.io``; ``extensions`` and the groups its resources moved to.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from kube.vocabulary import COLLECTION_VERBS, CONNECT_SUBRESOURCES, CONNECT_VERBS, DELETE_VERBS
from masking.config import check_detectors, detectors_key
from runtime.cache import ConnectionCache

logger = logging.getLogger(__name__)

ALLOW = "allow"
DENY = "deny"
REVIEW = "review"
EFFECTS = (ALLOW, DENY, REVIEW)

# How a rule treats dry runs (Rule.dry_run).
DRY_RUN_ANY, DRY_RUN_ONLY, DRY_RUN_NEVER = "any", "only", "never"
DRY_RUN_CHOICES = (DRY_RUN_ANY, DRY_RUN_ONLY, DRY_RUN_NEVER)
# How a review rule holds a request (Rule.review_hold): open until a decision or
# AIRLOCK_REVIEW_HOLD_SECONDS, or answered at once with a Status naming the review.
HOLD_OPEN, HOLD_RETRY = "open", "retry"
HOLD_CHOICES = (HOLD_OPEN, HOLD_RETRY)

DEFAULT_DENY = "default-deny"
POLICY_ERROR = "policy-error"

# Verbs kube-apiserver derives for resource requests (RequestInfo).
RESOURCE_VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "proxy"}
)
# Verbs of non-resource requests: the lower-cased HTTP method.
NON_RESOURCE_VERBS = frozenset({"get", "head", "options", "post", "put", "patch", "delete"})

# What deny and review rules see a request do (see Reach).
IMPLIED_VERBS = {
    "list": ("get",),
    "watch": ("list", "get"),
    "deletecollection": ("delete", "list", "get"),
}
# Resources served under several API groups: the same objects, whichever path names them.
SAME_OBJECTS = {
    "events": frozenset({"", "events.k8s.io"}),
    "deployments": frozenset({"apps", "extensions"}),
    "daemonsets": frozenset({"apps", "extensions"}),
    "replicasets": frozenset({"apps", "extensions"}),
    "ingresses": frozenset({"networking.k8s.io", "extensions"}),
    "networkpolicies": frozenset({"networking.k8s.io", "extensions"}),
    "podsecuritypolicies": frozenset({"policy", "extensions"}),
}
# Built-in cluster-scoped resources (kube-apiserver discovery): without a namespace these
# are about cluster-scoped objects, not every namespace.  Anything else (custom resources
# included) is taken to be namespaced, which fails closed.  ``namespaces`` is left out on
# purpose: a collection of namespaces covers every namespace.
CLUSTER_SCOPED = frozenset({
    ("", "componentstatuses"), ("", "nodes"), ("", "persistentvolumes"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ("apiextensions.k8s.io", "customresourcedefinitions"), ("apiregistration.k8s.io", "apiservices"),
    ("authentication.k8s.io", "selfsubjectreviews"), ("authentication.k8s.io", "tokenreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"), ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("certificates.k8s.io", "certificatesigningrequests"), ("certificates.k8s.io", "clustertrustbundles"),
    ("extensions", "podsecuritypolicies"), ("policy", "podsecuritypolicies"),
    ("flowcontrol.apiserver.k8s.io", "flowschemas"),
    ("flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations"),
    ("internal.apiserver.k8s.io", "storageversions"),
    ("networking.k8s.io", "ingressclasses"), ("networking.k8s.io", "ipaddresses"),
    ("networking.k8s.io", "servicecidrs"), ("node.k8s.io", "runtimeclasses"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"), ("rbac.authorization.k8s.io", "clusterroles"),
    ("resource.k8s.io", "deviceclasses"), ("resource.k8s.io", "resourceclasses"),
    ("resource.k8s.io", "resourceslices"), ("scheduling.k8s.io", "priorityclasses"),
    ("storage.k8s.io", "csidrivers"), ("storage.k8s.io", "csinodes"), ("storage.k8s.io", "storageclasses"),
    ("storage.k8s.io", "volumeattachments"), ("storage.k8s.io", "volumeattributesclasses"),
    ("storagemigration.k8s.io", "storageversionmigrations"),
})

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


# --------------------------------------------------------------------------- globs


def _glob_regex(pattern: str) -> re.Pattern[str]:
    # fnmatch.translate avoids catastrophic backtracking for several `*`s;
    # `[` is escaped so only `*` and `?` are special.
    return re.compile(fnmatch.translate(pattern.replace("[", "[[]")))


@dataclass(frozen=True)
class GlobSet:
    """A set of glob patterns compiled for fast membership tests."""

    patterns: tuple[str, ...]
    match_all: bool
    literals: frozenset[str]
    regexes: tuple[re.Pattern[str], ...]

    @classmethod
    def of(cls, patterns: Iterable[str]) -> GlobSet:
        patterns = tuple(patterns)
        literals = frozenset(p for p in patterns if "*" not in p and "?" not in p)
        wild = tuple(_glob_regex(p) for p in patterns if p not in literals and p != "*")
        return cls(patterns, "*" in patterns, literals, wild)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, value: str) -> bool:
        if self.match_all or value in self.literals:
            return True
        return any(regex.match(value) for regex in self.regexes)

    def overlaps(self, other: GlobSet) -> bool:
        """Whether some value matches both; two globs other than ``*`` are taken to overlap."""
        if not self or not other:
            return False
        if self.match_all or other.match_all:
            return True
        if any(other.matches(v) for v in self.literals) or any(self.matches(v) for v in other.literals):
            return True
        return bool(self.regexes) and bool(other.regexes)

    def covers(self, other: GlobSet) -> bool:
        """Whether every value ``other`` matches matches here too (provable only for literals and ``*``)."""
        if self.match_all:
            return True
        return bool(other) and not other.match_all and not other.regexes and all(
            self.matches(v) for v in other.literals)


def _resource_patterns_overlap(one: str, other: str) -> bool:
    if one == "*" or other == "*":
        return True
    a, b = one.split("/", 1), other.split("/", 1)
    return len(a) == len(b) and all(GlobSet.of([x]).overlaps(GlobSet.of([y])) for x, y in zip(a, b))


@dataclass(frozen=True)
class ResourceSet:
    """Resource patterns: ``res`` (no subresource), ``res/sub``, or ``*`` (everything)."""

    patterns: tuple[str, ...]
    match_all: bool
    plain: GlobSet
    with_sub: tuple[tuple[GlobSet, GlobSet], ...]

    @classmethod
    def of(cls, patterns: Iterable[str]) -> ResourceSet:
        patterns = tuple(patterns)
        plain = GlobSet.of(p for p in patterns if "/" not in p and p != "*")
        with_sub = tuple(
            (GlobSet.of([res]), GlobSet.of([sub]))
            for res, sub in (p.split("/", 1) for p in patterns if "/" in p)
        )
        return cls(patterns, "*" in patterns, plain, with_sub)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, resource: str, subresource: str) -> bool:
        if self.match_all:
            return True
        if not subresource:
            return self.plain.matches(resource)
        return any(res.matches(resource) and sub.matches(subresource) for res, sub in self.with_sub)

    def overlaps(self, other: ResourceSet) -> bool:
        """Whether some resource or subresource matches both (globs are taken to overlap)."""
        return any(_resource_patterns_overlap(a, b) for a in self.patterns for b in other.patterns)

    def covers(self, other: ResourceSet) -> bool:
        """Whether everything ``other`` matches matches here too (provable only for literals and ``*``)."""
        if self.match_all:
            return True
        def covered(pattern: str) -> bool:
            resource, _, subresource = pattern.partition("/")
            return "*" not in pattern and "?" not in pattern and self.matches(resource, subresource)

        return bool(other) and all(covered(pattern) for pattern in other.patterns)


# --------------------------------------------------------------------------- validation


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


# --------------------------------------------------------------------------- compiled rules


@dataclass(frozen=True)
class CompiledRule:
    """An immutable, pre-compiled rule.  ``broken`` rules deny everything."""

    id: int | None
    name: str
    order: int
    enabled: bool
    effect: str
    connection: str
    subjects: GlobSet
    groups: GlobSet
    verbs: frozenset[str]
    api_groups: GlobSet
    resources: ResourceSet
    namespaces: GlobSet
    names: GlobSet
    non_resource_urls: GlobSet
    mask_secrets: bool
    requires_lease: bool
    min_approvals: int
    reviewer_groups: tuple[str, ...]
    broken: bool = False
    detectors: str = ""  # free-text detector configuration (detectors_key); "" = the connection's
    dry_run: str = DRY_RUN_ANY
    hold: str = HOLD_OPEN

    def matches(self, principal, info, reach: Reach | None = None, *, dry_run: bool = False) -> bool:
        """``reach`` (``Reach.of(info)``) may be passed in so one evaluation computes it once;
        ``dry_run``: kube-apiserver runs the request as a dry run (kube.dryrun)."""
        if not self.enabled:
            return False
        if self.broken:
            return True
        if self.dry_run == (DRY_RUN_NEVER if dry_run else DRY_RUN_ONLY):
            return False
        if not self._principal_matches(principal):
            return False
        if self.effect == ALLOW or not info.is_resource_request:
            return self._request_matches(info)
        return self._reach_matches(reach or Reach.of(info))

    def applies_to(self, principal) -> bool:
        """Whether this rule takes part in decisions for ``principal`` (a broken rule, for everyone)."""
        return self.enabled and (self.broken or self._principal_matches(principal))

    def may_match(self, principal, info) -> bool:
        """Whether this rule matches some request ``info`` stands for, where a ``*`` (and an empty name
        or namespace) means any value: a SelfSubjectAccessReview may ask about a whole class of requests
        (``kubectl auth can-i '*' '*'``, ``can-i delete pods`` without a name).  Used for deny and review
        rules, so it errs towards matching."""
        if not self.applies_to(principal):
            return False
        if self.broken:
            return True
        if not info.is_resource_request:
            return (bool(self.non_resource_urls)
                    and (info.verb == "*" or self._verb_matches(info.verb, streaming=False))
                    and (info.path == "*" or self.non_resource_urls.matches(info.path)))
        if not self.resources:
            return False
        deletes_namespace = (info.api_group in ("", "*") and info.resource in ("namespaces", "*")
                             and not info.subresource and (info.verb == "*" or info.verb in DELETE_VERBS))
        if (deletes_namespace and (self.resources.match_all or self.resources.plain)
                and not self.verbs.isdisjoint({"*", *DELETE_VERBS})
                and (info.name in ("", "*") or self.namespaces.matches(info.name))):
            return True  # deleting a namespace deletes what is in it (Reach)
        any_resource = info.resource == "*"
        streaming = any_resource or info.subresource in CONNECT_SUBRESOURCES or info.subresource == "*"
        verbs = RESOURCE_VERBS if info.verb == "*" else (info.verb, *IMPLIED_VERBS.get(info.verb, ()))
        if not any(self._verb_matches(verb, streaming) for verb in verbs):
            return False
        if info.api_group != "*" and not any(self.api_groups.matches(g) for g in _same_objects(info)):
            return False
        if not (info.namespace in ("", "*") or self.namespaces.matches(info.namespace)
                or self.namespaces.matches(rule_namespace(info))):
            return False
        if info.name not in ("", "*") and not self.names.matches(info.name):
            return False
        if any_resource or self.resources.match_all:
            return True
        if info.subresource == "*":
            return self.resources.plain.matches(info.resource) or any(
                res.matches(info.resource) for res, _ in self.resources.with_sub)
        return self.resources.matches(info.resource, info.subresource)

    def _principal_matches(self, principal) -> bool:
        if principal is None:
            return False
        if self.subjects and (
            self.subjects.matches(principal.username) or self.subjects.matches(principal.subject)
        ):
            return True
        return bool(self.groups) and any(self.groups.matches(g) for g in principal.groups)

    def _verb_matches(self, verb: str, streaming: bool) -> bool:
        if not verb:
            return False
        if "*" in self.verbs or verb in self.verbs:
            return True
        return streaming and not self.verbs.isdisjoint(CONNECT_VERBS)

    def _request_matches(self, info) -> bool:
        if not info.is_resource_request:
            return (
                bool(self.non_resource_urls)
                and self._verb_matches(info.verb, streaming=False)
                and self.non_resource_urls.matches(info.path)
            )
        if not self.resources or not info.resource:
            return False
        subresource = info.subresource
        if info.verb == "proxy" and not subresource:
            subresource = "proxy"
        return (
            self._verb_matches(info.verb, streaming=subresource in CONNECT_SUBRESOURCES)
            and self.api_groups.matches(info.api_group)
            and self.resources.matches(info.resource, subresource)
            and self.namespaces.matches(rule_namespace(info))
            and self.names.matches(info.name)
        )

    def _reach_matches(self, reach: Reach) -> bool:
        """Deny and review rules: does the request reach anything this rule forbids?"""
        info = reach.info
        if self._request_matches(info):
            return True
        if not self.resources or not info.resource:
            return False
        namespace_ok = reach.any_namespace or self.namespaces.matches(info.namespace)
        if reach.namespace_contents and namespace_ok and (self.resources.match_all or self.resources.plain):
            if any(self._verb_matches(verb, streaming=False) for verb in DELETE_VERBS):
                return True
        subresource = info.subresource or ("proxy" if info.verb == "proxy" else "")
        streaming = subresource in CONNECT_SUBRESOURCES
        return (
            any(self._verb_matches(verb, streaming) for verb in reach.verbs)
            and any(self.api_groups.matches(group) for group in reach.api_groups)
            and self.resources.matches(info.resource, subresource)
            and namespace_ok
            and (reach.any_name or self.names.matches(info.name))
        )


def _same_objects(info) -> frozenset[str]:
    """The API groups that serve the objects of ``info``'s group and resource."""
    groups = SAME_OBJECTS.get(info.resource, frozenset())
    return groups if info.api_group in groups else frozenset({info.api_group})


def rule_namespace(info) -> str:
    """The namespace rules match a resource request in: ``""`` for the Namespace objects themselves."""
    if info.api_group == "" and info.resource == "namespaces":
        return ""
    return info.namespace


@dataclass(frozen=True)
class Reach:
    """Everything a resource request can read or change, as deny and review rules see it."""

    info: object
    verbs: tuple[str, ...]
    api_groups: frozenset[str]
    any_name: bool
    any_namespace: bool
    namespace_contents: bool  # deletes one or every namespace, and so everything in it

    @classmethod
    def of(cls, info) -> Reach:
        collection = info.verb in COLLECTION_VERBS and not info.subresource
        cluster_scoped = (info.api_group, info.resource) in CLUSTER_SCOPED
        return cls(
            info=info,
            verbs=(info.verb, *IMPLIED_VERBS.get(info.verb, ())),
            api_groups=_same_objects(info),
            any_name=collection and not info.name,
            any_namespace=collection and not info.namespace and not cluster_scoped,
            namespace_contents=(
                info.api_group == "" and info.resource == "namespaces" and not info.subresource
                and info.verb in DELETE_VERBS
            ),
        )


def compile_rule(fields: Mapping, *, id: int | None = None, connection: str = "") -> CompiledRule:
    """Validate ``fields`` (model field names) and compile; raise ``InvalidRule``."""
    errors = check_rule(fields)
    if errors:
        raise InvalidRule(errors)
    return CompiledRule(
        id=id,
        name=fields["name"],
        order=fields["order"],
        enabled=fields.get("enabled", True),
        effect=fields["effect"],
        connection=connection,
        subjects=GlobSet.of(fields.get("subjects", [])),
        groups=GlobSet.of(fields.get("groups", [])),
        verbs=frozenset(fields.get("verbs", [])),
        api_groups=GlobSet.of(fields.get("api_groups", [])),
        resources=ResourceSet.of(fields.get("resources", [])),
        namespaces=GlobSet.of(fields.get("namespaces", [])),
        names=GlobSet.of(fields.get("names", [])),
        non_resource_urls=GlobSet.of(fields.get("non_resource_urls", [])),
        mask_secrets=fields.get("mask_secrets", True),
        requires_lease=fields.get("requires_lease", False),
        min_approvals=fields.get("min_approvals", 1),
        reviewer_groups=tuple(fields.get("reviewer_groups", [])),
        detectors=detectors_key(fields.get("masking_detectors")),
        dry_run=fields.get("dry_run", DRY_RUN_ANY),
        hold=fields.get("review_hold", HOLD_OPEN),
    )


def broken_rule(
    *, id: int | None, name: str, order: int, connection: str = "", enabled: bool = True
) -> CompiledRule:
    """A stand-in for a stored rule that no longer validates: when enabled it denies everything."""
    empty = GlobSet.of([])
    return CompiledRule(
        id=id, name=name, order=order, enabled=enabled, effect=DENY, connection=connection,
        subjects=empty, groups=empty, verbs=frozenset(), api_groups=empty,
        resources=ResourceSet.of([]), namespaces=empty, names=empty, non_resource_urls=empty,
        mask_secrets=True, requires_lease=False, min_approvals=1, reviewer_groups=(), broken=True,
    )


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Decision:
    """The outcome for one request.

    ``mask_secrets`` is False only when an allowing rule turned masking off;
    deny and review decisions always mask.  ``rule_id`` is None for the
    built-in default deny.  ``dry_run``: the request is a dry run;
    ``held_back`` names the review rule that denied it (a dry run is never held).
    ``hold``: how a review decision holds the request.
    """

    effect: str
    rule_id: int | None
    rule_name: str
    reason: str
    mask_secrets: bool
    requires_lease: bool
    detectors: str = ""
    dry_run: bool = False
    held_back: bool = False
    hold: str = HOLD_OPEN

    @property
    def allowed(self) -> bool:
        return self.effect == ALLOW


def sort_key(rule: CompiledRule) -> tuple[int, str]:
    """Evaluation order: ``order`` ascending, ties broken by name (stable across export/import)."""
    return (rule.order, rule.name)


def evaluate(rules: Sequence[CompiledRule], principal, info, *, dry_run: bool = False) -> Decision:
    """Return the decision of the first enabled matching rule; deny if none matches.

    ``dry_run``: kube-apiserver runs the request as a dry run (kube.dryrun); a review
    rule that matches one denies it, since a dry run is never held.
    """
    try:
        reach = Reach.of(info) if info.is_resource_request else None
        for rule in sorted(rules, key=sort_key):
            if rule.matches(principal, info, reach, dry_run=dry_run):
                return decision_for(rule, dry_run)
    except Exception:
        logger.exception("policy evaluation failed; denying the request")
        return Decision(DENY, None, POLICY_ERROR, "policy evaluation failed", True, False, dry_run=dry_run)
    return Decision(
        DENY, None, DEFAULT_DENY,
        "no enabled rule matched this request; requests are denied by default", True, False, dry_run=dry_run,
    )


def decision_for(rule: CompiledRule, dry_run: bool = False) -> Decision:
    """What ``rule`` decides for a request it matches (``dry_run``: see evaluate)."""
    if rule.broken:
        reason = f'rule "{rule.name}" (order {rule.order}) is invalid and denies every request until fixed'
        return Decision(DENY, rule.id, rule.name, reason, True, False, dry_run=dry_run)
    if dry_run and rule.effect == REVIEW:
        return Decision(
            effect=DENY, rule_id=rule.id, rule_name=rule.name,
            reason=f'matched review rule "{rule.name}" (order {rule.order}); a dry run is never held, so it is denied',
            mask_secrets=True, requires_lease=False, dry_run=True, held_back=True,
        )
    return Decision(
        effect=rule.effect,
        rule_id=rule.id,
        rule_name=rule.name,
        reason=f'matched rule "{rule.name}" (order {rule.order}, effect {rule.effect})',
        mask_secrets=rule.mask_secrets or rule.effect != ALLOW,
        requires_lease=rule.requires_lease,
        detectors=rule.detectors,
        dry_run=dry_run,
        hold=rule.hold,
    )


# --------------------------------------------------------------------------- messages

_WORD = re.compile(r"[A-Za-z0-9._:-]+")
_PATH = re.compile(r"[A-Za-z0-9._~:/-]*")


def _word(value: str) -> str:
    return value if _WORD.fullmatch(value) else json.dumps(value)


def describe_request(info) -> str:
    """A one-line, human-readable description of the request (no query, no body)."""
    verb = _word(info.verb) if info.verb else '""'
    if not info.is_resource_request:
        path = info.path if _PATH.fullmatch(info.path) else json.dumps(info.path)
        return f"{verb} {path}"
    what = _word(info.resource)
    if info.subresource:
        what += "/" + _word(info.subresource)
    text = f"{verb} {what}"
    if info.name:
        text += f" {json.dumps(info.name)}"
    if info.namespace and not (info.resource == "namespaces" and info.namespace == info.name):
        text += f" in namespace {json.dumps(info.namespace)}"
    return text


def denial_message(decision: Decision, info, connection: str = "") -> str:
    """The message of the 403 Status for a denied or review-gated request."""
    where = f" (connection {_word(connection)})" if connection else ""
    rule = json.dumps(decision.rule_name)
    what = ("dry run of " if decision.dry_run else "") + describe_request(info)
    if decision.held_back:
        return (
            f"airlock: denied by rule {rule}{where}: {what}; the rule holds this change for a reviewer, and a "
            "dry run is never held. A rule with dryRun: only placed before it can allow dry runs"
        )
    if decision.effect == REVIEW:
        return (
            f"airlock: approval required by rule {rule}{where}: {what}; "
            "a reviewer must approve this request"
        )
    if decision.effect != DENY:
        raise ValueError("denial_message() needs a deny or review decision")
    if decision.rule_name == DEFAULT_DENY and decision.rule_id is None:
        return f"airlock: denied by rule {rule}{where}: {what}; no rule allows this request"
    if decision.rule_name == POLICY_ERROR and decision.rule_id is None:
        return f"airlock: denied{where}: {what}; the policy could not be evaluated"
    return f"airlock: denied by rule {rule}{where}: {what}"


# --------------------------------------------------------------------------- cache

DEFAULT_MAX_AGE = 5.0


def load_compiled_rules(connection_name: str) -> tuple[CompiledRule, ...]:
    """Load and compile a connection's rules from the database (blocking)."""
    from gateway.models import Rule

    rows = Rule.objects.filter(connection__name=connection_name).order_by("order", "name")
    return tuple(row.compile(connection_name) for row in rows)


def invalidate_all(connection_name: str | None = None) -> None:
    """Invalidate every PolicyCache of this process (called by model signals)."""
    PolicyCache.invalidate_all(connection_name)


class PolicyCache(ConnectionCache):
    """Compiled rules keyed by connection name (see runtime.cache for the staleness bound)."""

    def __init__(self, max_age: float | None = None,
                 loader: Callable[[str], tuple[CompiledRule, ...]] = load_compiled_rules,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(loader, max_age, clock)

    def default_max_age(self) -> float:
        from django.conf import settings

        return float(getattr(settings, "AIRLOCK_POLICY_CACHE_SECONDS", DEFAULT_MAX_AGE))

    async def rules_for(self, connection_name: str) -> tuple[CompiledRule, ...]:
        return await self.get(connection_name)

