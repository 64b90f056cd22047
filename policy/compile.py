"""Compiled rules: the immutable, pre-compiled form the hot path matches requests against."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kube.vocabulary import CONNECT_SUBRESOURCES, CONNECT_VERBS, DELETE_VERBS
from masking.config import detectors_key
from policy.budgets import NO_BUDGET, Budget, compile_budget
from policy.check import InvalidRule, check_rule
from policy.globs import GlobSet, ResourceSet
from policy.index import RuleOrder
from policy.reach import IMPLIED_VERBS, Reach, rule_namespace, same_objects
from policy.vocabulary import ALLOW, DENY, DRY_RUN_ANY, DRY_RUN_NEVER, DRY_RUN_ONLY, HOLD_OPEN, RESOURCE_VERBS


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
    budget: Budget = NO_BUDGET  # what each agent may spend under this rule (policy.budgets)

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
        if info.api_group != "*" and not any(self.api_groups.matches(g) for g in same_objects(info)):
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
        budget=compile_budget(fields.get("budget")),
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


def sort_key(rule: CompiledRule) -> tuple[int, str]:
    """Evaluation order: ``order`` ascending, ties broken by name (stable across export/import)."""
    return (rule.order, rule.name)


def in_order(rules: Iterable[CompiledRule]) -> tuple[CompiledRule, ...]:
    """``rules`` in evaluation order, sorted once when they are compiled (evaluate does not sort);
    a policy.index.RuleOrder, so evaluate tests only the rules that can concern a request."""
    return RuleOrder(sorted(rules, key=sort_key))
