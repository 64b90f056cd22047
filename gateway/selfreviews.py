"""Self reviews the gateway answers itself: ``kubectl auth whoami``, ``auth can-i`` and ``can-i --list``.

Forwarded to the cluster, these describe the connection's credential, the gateway's own identity
(often cluster-admin): whoami named the gateway's user and can-i said yes to deletes that wait for
a reviewer.  The gateway answers them from the agent's token and the connection's rules, and asks
the cluster only what the identity the connection uses may do there, so an answer is yes only
when both say yes; when the cluster cannot be asked the answer says so and is no.

Sans-IO: :mod:`gateway.selfreview_answers` reads the request, sends the questions this module writes for the
cluster and hands the answers back.  The cluster's free text (reasons, evaluation errors) is never
passed on, only its yes or no and its rules.

Long because the three reviews share one reading of the rules and one rule for joining the
gateway's answer with the cluster's; apart, the yes-only-when-both-say-yes rule would be repeated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from kube.requestinfo import RequestInfo
from kube.status import GatewayError
from kube.vocabulary import CONNECT_SUBRESOURCES, CONNECT_VERBS, DELETE_VERBS
from policy.compile import CompiledRule, sort_key
from policy.evaluate import Decision, decision_for, evaluate
from policy.globs import GlobSet, ResourceSet
from policy.messages import denial_message
from policy.reach import IMPLIED_VERBS
from policy.vocabulary import ALLOW, DENY, DRY_RUN_ONLY, NON_RESOURCE_VERBS, RESOURCE_VERBS, REVIEW

AUTHENTICATION = "authentication.k8s.io"
AUTHORIZATION = "authorization.k8s.io"
IDENTITY = "SelfSubjectReview"
ACCESS = "SelfSubjectAccessReview"
RULES = "SelfSubjectRulesReview"
# (group, resource) -> (kind, versions served): kubectl asks v1 and falls back to the betas.
SERVED = {
    (AUTHENTICATION, "selfsubjectreviews"): (IDENTITY, frozenset({"v1", "v1beta1", "v1alpha1"})),
    (AUTHORIZATION, "selfsubjectaccessreviews"): (ACCESS, frozenset({"v1", "v1beta1"})),
    (AUTHORIZATION, "selfsubjectrulesreviews"): (RULES, frozenset({"v1", "v1beta1"})),
}
CLUSTER_PATHS = {
    ACCESS: "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    RULES: "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
}
STRING_ATTRIBUTES = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
RESOURCE_ATTRIBUTES = (*STRING_ATTRIBUTES, "fieldSelector", "labelSelector")
NON_RESOURCE_ATTRIBUTES = ("path", "verb")
EXTRA_ISSUER = "airlock.dev/issuer"
EXTRA_CONNECTION = "airlock.dev/connection"
EXTRA_CLUSTER_USERNAME = "airlock.dev/cluster-username"
ONE_REQUEST = "kubectl auth can-i VERB RESOURCE answers for one request"


def review_kind(info) -> str | None:
    """The kind of self review a request creates, or None for any other request."""
    if not info.is_resource_request or info.verb != "create" or info.subresource or info.name or info.namespace:
        return None
    kind, versions = SERVED.get((info.api_group, info.resource), (None, ()))
    return kind if info.api_version in versions else None


def read(body: bytes | None, info, kind: str) -> dict:
    """The review the agent sent, checked as kube-apiserver checks it; GatewayError (400) otherwise."""
    if not body and kind == IDENTITY:
        return {}
    try:
        review = json.loads(body or b"")
    except ValueError:
        raise GatewayError(400, f"airlock: the {kind} is not valid JSON") from None
    if not isinstance(review, dict):
        raise GatewayError(400, f"airlock: the {kind} must be a JSON object")
    expected = f"{info.api_group}/{info.api_version}"
    if review.get("kind", kind) != kind:
        raise GatewayError(400, f"airlock: expected a {kind}, got kind {json.dumps(review.get('kind'))}")
    if review.get("apiVersion", expected) != expected:
        raise GatewayError(400, f"the API version in the data ({json.dumps(review.get('apiVersion'))}) does not "
                                f"match the expected API version ({expected})")
    for name in ("metadata", "spec"):
        if not isinstance(review.get(name, {}), dict):
            raise GatewayError(400, f"airlock: {name} of the {kind} must be an object")
    return review


def answer(info, kind: str, review: dict, status: dict) -> dict:
    """The created review as kube-apiserver returns it: what was asked, echoed, and the status."""
    created = {"kind": kind, "apiVersion": f"{info.api_group}/{info.api_version}",
               "metadata": {**review.get("metadata", {}), "creationTimestamp": None}}
    if kind != IDENTITY:
        created["spec"] = _echoed_spec(kind, review.get("spec", {}))
    created["status"] = status
    return created


def _echoed_spec(kind: str, spec: dict) -> dict:
    def known(attributes, names):
        return {n: attributes[n] for n in names if attributes.get(n) not in (None, "")}

    if kind == RULES:
        return known(spec, ("namespace",))
    echoed = {}
    for name, names in (("resourceAttributes", RESOURCE_ATTRIBUTES), ("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES)):
        if isinstance(spec.get(name), dict):
            echoed[name] = known(spec[name], names)
    return echoed


# -- whoami ------------------------------------------------------------------------------------

def identity(principal, *, connection: str, cluster_username: str = "") -> dict:
    """SelfSubjectReview status: the agent as its token names it (uid: the token's subject, as in the
    audit trail), never the connection's credential.  In impersonation mode the name the cluster
    sees is added as an extra."""
    user = {"username": principal.username, "uid": principal.subject}
    if principal.groups:
        user["groups"] = list(principal.groups)
    extra = {EXTRA_ISSUER: [principal.issuer], EXTRA_CONNECTION: [connection]}
    if cluster_username:
        extra[EXTRA_CLUSTER_USERNAME] = [cluster_username]
    user["extra"] = extra
    return {"userInfo": user}


# -- can-i ---------------------------------------------------------------------------------------

def access_question(review: dict) -> RequestInfo:
    """The request a SelfSubjectAccessReview asks about, as the policy engine reads requests."""
    spec = review.get("spec", {})
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if (resource is None) == (non_resource is None):
        raise GatewayError(422, 'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes: '
                                "Invalid value: exactly one of nonResourceAttributes or resourceAttributes must "
                                "be specified")
    attributes = resource if resource is not None else non_resource
    names = STRING_ATTRIBUTES if resource is not None else NON_RESOURCE_ATTRIBUTES
    if not isinstance(attributes, dict) or not all(isinstance(attributes.get(n, ""), str) for n in names):
        raise GatewayError(400, "airlock: the SelfSubjectAccessReview's attributes must be strings")
    get = attributes.get
    if non_resource is not None:
        return RequestInfo(False, get("path", ""), get("verb", ""), "", "", "", "", "", "", "", ())
    group = get("group", "")
    return RequestInfo(True, "", get("verb", ""), "api" if group == "" else "apis", group, get("version", ""),
                       get("namespace", ""), get("resource", ""), get("subresource", ""), get("name", ""), ())


def _wildcard(info) -> bool:
    if not info.is_resource_request:
        return info.verb == "*" or info.path == "*"
    return "*" in (info.verb, info.api_group, info.resource, info.subresource) or info.namespace in ("", "*") \
        or info.name in ("", "*")


def access_decision(rules, principal, info) -> Decision:
    """The connection's decision for the request asked about.

    A question about a class of requests (``*``, no name, no namespace) is allowed only if no
    deny or review rule before the allowing one covers part of it.
    """
    decision = evaluate(rules, principal, info)
    if decision.effect != ALLOW or not _wildcard(info):
        return decision
    for rule in sorted(rules, key=sort_key):
        if (rule.id, rule.name) == (decision.rule_id, decision.rule_name):
            break
        if rule.effect != ALLOW and rule.may_match(principal, info):
            return decision_for(rule)
    return decision


@dataclass(frozen=True)
class Verdict:
    """A SubjectAccessReviewStatus; ``ask_cluster`` while the cluster's answer still counts."""

    allowed: bool
    denied: bool = False
    reason: str = ""
    evaluation_error: str = ""
    ask_cluster: bool = False

    def status(self) -> dict:
        status = {"allowed": self.allowed}
        if self.denied:
            status["denied"] = True
        if self.reason:
            status["reason"] = self.reason
        if self.evaluation_error:
            status["evaluationError"] = self.evaluation_error
        return status


def access_verdict(decision: Decision, info, connection: str, lease_refusal: str = "") -> Verdict:
    """What the connection's rules say: allow is yes, review is no naming the review, deny is no."""
    if decision.effect in (DENY, REVIEW):
        return Verdict(False, denied=decision.effect == DENY, reason=denial_message(decision, info, connection),
                       ask_cluster=decision.effect == REVIEW)
    if lease_refusal:
        return Verdict(False, reason=lease_refusal)
    return Verdict(True, reason=f"airlock: allowed by rule {json.dumps(decision.rule_name)} (connection {connection})",
                   ask_cluster=True)


def cluster_access_question(info) -> bytes:
    """The same question for the cluster, about the identity the connection uses there."""
    if info.is_resource_request:
        attributes = {"namespace": info.namespace, "verb": info.verb, "group": info.api_group,
                      "version": info.api_version, "resource": info.resource, "subresource": info.subresource,
                      "name": info.name}
        spec = {"resourceAttributes": {k: v for k, v in attributes.items() if v}}
    else:
        spec = {"nonResourceAttributes": {"path": info.path, "verb": info.verb}}
    return json.dumps({"kind": ACCESS, "apiVersion": f"{AUTHORIZATION}/v1", "spec": spec}).encode()


def cluster_status(kind: str, code: int, body: bytes) -> tuple[dict | None, str]:
    """The status of the cluster's review, or None and why it cannot be used."""
    if code not in (200, 201):
        return None, f"it answered {code}"
    try:
        review = json.loads(body)
    except ValueError:
        return None, "its answer is not JSON"
    if not isinstance(review, dict) or review.get("kind") != kind or not isinstance(review.get("status"), dict):
        return None, f"its answer is not a {kind}"
    return review["status"], ""


def cluster_unavailable(connection: str, why: str) -> str:
    return f"airlock: the cluster of connection {connection} could not be asked ({why}), so nothing is allowed here"


def with_cluster_access(verdict: Verdict, status: dict | None, problem: str, connection: str) -> Verdict:
    """Yes only when the connection's rules and the cluster both say yes."""
    if status is None:
        return replace(verdict, allowed=False, evaluation_error=cluster_unavailable(connection, problem))
    if status.get("allowed") is True:
        return verdict
    refused = f"the cluster does not allow it for the identity connection {connection} uses there"
    if status.get("evaluationError"):
        refused += " (it reported an evaluation error)"
    if verdict.allowed:
        return replace(verdict, allowed=False, denied=status.get("denied") is True, reason=f"{verdict.reason}, but {refused}")
    return replace(verdict, reason=f"{verdict.reason}; {refused} either")


# -- can-i --list -----------------------------------------------------------------------------------

@dataclass
class RuleList:
    """A SubjectRulesReviewStatus in the making: RBAC-shaped rules, and what they leave unsaid."""

    resource_rules: list[dict] = field(default_factory=list)
    non_resource_rules: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    incomplete: bool = False

    def status(self, connection: str) -> dict:
        """kubectl prints ``evaluationError`` only when ``incomplete`` is set, so notes set it."""
        status = {"resourceRules": self.resource_rules, "nonResourceRules": self.non_resource_rules,
                  "incomplete": self.incomplete or bool(self.notes)}
        if self.notes:
            status["evaluationError"] = (
                f"airlock: connection {connection} checks its rules in order and the first match decides; listed is "
                f"what they allow you and the cluster allows too. {' '.join(self.notes)} {ONE_REQUEST}.")
        return status


def rules_namespace(review: dict) -> str:
    namespace = review.get("spec", {}).get("namespace", "")
    if not isinstance(namespace, str):
        raise GatewayError(400, "airlock: spec.namespace of the SelfSubjectRulesReview must be a string")
    return namespace


def cluster_rules_question(namespace: str) -> bytes:
    return json.dumps({"kind": RULES, "apiVersion": f"{AUTHORIZATION}/v1", "spec": {"namespace": namespace}}).encode()


def _summary(rule: CompiledRule) -> str:
    verbs = ",".join(sorted(rule.verbs))
    if rule.non_resource_urls:
        return f"{verbs} {','.join(rule.non_resource_urls.patterns)}"
    text = f"{verbs} {','.join(rule.resources.patterns)}"
    if not rule.api_groups.match_all:
        text += f" in API groups {','.join(json.dumps(g) for g in rule.api_groups.patterns)}"
    if not rule.names.match_all:
        text += f" named {','.join(json.dumps(n) for n in rule.names.patterns)}"
    return text


def _verbs_reached(verbs: frozenset[str], universe: frozenset[str]) -> frozenset[str]:
    expanded = universe if "*" in verbs else verbs
    return frozenset(expanded) | {implied for verb in expanded for implied in IMPLIED_VERBS.get(verb, ())}


def _blocked_verbs(allow: CompiledRule, earlier: CompiledRule, universe: frozenset[str]) -> frozenset[str]:
    """The verbs of ``allow`` that ``earlier`` (a deny or review rule covering all it names) takes."""
    verbs = universe if "*" in allow.verbs else allow.verbs
    if "*" in earlier.verbs:
        return frozenset(verbs)
    return frozenset(v for v in verbs if not earlier.verbs.isdisjoint({v, *IMPLIED_VERBS.get(v, ())}))


def _relation(allow: CompiledRule, earlier: CompiledRule) -> str:
    """"" (disjoint), "covers" (``earlier`` takes every request ``allow`` names, for some verbs) or "part"."""
    if bool(allow.non_resource_urls) != bool(earlier.non_resource_urls):
        return ""
    if allow.non_resource_urls:
        universe = NON_RESOURCE_VERBS
        if not ("*" in earlier.verbs or not _verbs_reached(allow.verbs, universe).isdisjoint(earlier.verbs)):
            return ""
        if not allow.non_resource_urls.overlaps(earlier.non_resource_urls):
            return ""
        return "covers" if earlier.non_resource_urls.covers(allow.non_resource_urls) else "part"
    universe = RESOURCE_VERBS
    reached = _verbs_reached(allow.verbs, universe)
    if "*" not in earlier.verbs and reached.isdisjoint(earlier.verbs):
        # exec, attach, port-forward and proxy are decided on the subresource: get and create alike
        streaming = _streams(allow) and _streams(earlier) and not reached.isdisjoint(CONNECT_VERBS) \
            and not earlier.verbs.isdisjoint(CONNECT_VERBS)
        return "part" if streaming and allow.resources.overlaps(earlier.resources) else ""
    overlapping = (allow.api_groups.overlaps(earlier.api_groups) and allow.resources.overlaps(earlier.resources)
                   and allow.names.overlaps(earlier.names))
    # deleting a namespace deletes what is in it (policy.Reach)
    deletes_namespaces = ((allow.resources.match_all or allow.resources.plain.matches("namespaces"))
                          and not reached.isdisjoint(DELETE_VERBS)
                          and ("*" in earlier.verbs or not earlier.verbs.isdisjoint(DELETE_VERBS))
                          and bool(earlier.resources.plain or earlier.resources.match_all))
    if not overlapping and not deletes_namespaces:
        return ""
    covered = (overlapping and earlier.api_groups.covers(allow.api_groups)
               and earlier.resources.covers(allow.resources) and earlier.names.covers(allow.names))
    return "covers" if covered else "part"


def _streams(rule: CompiledRule) -> bool:
    """Whether ``rule`` may name exec, attach, port-forward or proxy."""
    return rule.resources.match_all or any(
        pattern.partition("/")[2] in ("*", *CONNECT_SUBRESOURCES) for pattern in rule.resources.patterns)


def airlock_rules(rules, principal, namespace: str, connection: str, leased=frozenset()) -> RuleList:
    """What the connection's rules allow the principal in ``namespace`` ("" = cluster-wide), RBAC-shaped.

    Rules are first-match: a deny or review rule before an allow takes its verbs away when it covers
    everything the allow names; when it covers only part, the allow is listed and the note names
    the rule that takes precedence.  Review rules are never listed and always named in a note.
    ``leased`` are the ``requires_lease`` rules the principal holds a lease for.
    """
    out = RuleList()
    earlier: list[CompiledRule] = []
    precedence: list[CompiledRule] = []
    for rule in sorted(rules, key=sort_key):
        if not rule.applies_to(principal):
            continue
        if rule.dry_run == DRY_RUN_ONLY and not rule.broken:  # decides dry runs, not the requests listed here
            out.notes.append(f"Rule {json.dumps(rule.name)} ({_summary(rule)}) applies to server-side dry runs only.")
            continue
        if rule.broken:
            out.notes.append(f"Rule {json.dumps(rule.name)} is invalid and denies everything after it.")
            break
        if rule.resources and not (rule.namespaces.matches(namespace) or (rule.effect != ALLOW and not namespace)):
            continue
        if rule.effect != ALLOW:
            earlier.append(rule)
            if rule.effect == REVIEW and rule not in precedence:
                precedence.append(rule)
            continue
        if rule.requires_lease and rule.name not in leased:
            out.notes.append(f"Rule {json.dumps(rule.name)} ({_summary(rule)}) needs an active lease, which you do not "
                             "hold.")
            continue
        universe = NON_RESOURCE_VERBS if rule.non_resource_urls else RESOURCE_VERBS
        blocked: set[str] = set()
        for before in earlier:
            relation = _relation(rule, before)
            if relation == "covers":
                blocked |= _blocked_verbs(rule, before, universe)
            elif relation == "part" and before not in precedence:
                precedence.append(before)
        verbs = sorted(rule.verbs) if not blocked else sorted((universe if "*" in rule.verbs else rule.verbs) - blocked)
        if not verbs:
            continue
        if rule.non_resource_urls:
            out.non_resource_rules.append({"verbs": verbs, "nonResourceURLs": list(rule.non_resource_urls.patterns)})
            continue
        names = [] if rule.names.match_all else list(rule.names.literals - {""})
        if not rule.names.match_all and (rule.names.regexes or not names):
            out.notes.append(f"Rule {json.dumps(rule.name)} ({_summary(rule)}) is not listed: its names cannot be "
                             "written as resourceNames.")
            continue
        listed = {"verbs": verbs, "apiGroups": list(rule.api_groups.patterns),
                  "resources": list(rule.resources.patterns)}
        if names:
            listed["resourceNames"] = sorted(names)
        out.resource_rules.append(listed)
    if precedence:
        out.notes.append("Rules that take precedence: " + "; ".join(
            f"{json.dumps(r.name)} ({'needs a reviewer' if r.effect == REVIEW else 'denied'}: {_summary(r)})"
            for r in precedence) + ".")
    return out


def _intersect(ours, theirs, matches) -> tuple[list[str], bool]:
    """Values both pattern lists allow, and whether some pair could not be worked out (two globs)."""
    both, lossy = [], False
    for a in ours:
        for b in theirs:
            if a == "*" or a == b:
                value = b
            elif b == "*":
                value = a
            elif matches(a, b):
                value = b
            elif matches(b, a):
                value = a
            else:
                lossy = lossy or (_is_glob(a) and _is_glob(b))
                continue
            if value not in both:
                both.append(value)
    return both, lossy


def _is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def _glob_matches(pattern: str, value: str) -> bool:
    return _is_glob(pattern) and not _is_glob(value) and GlobSet.of([pattern]).matches(value)


def _resource_matches(pattern: str, value: str) -> bool:
    """Airlock's resource globs and RBAC's ``*/subresource`` both read the same way here."""
    if not _is_glob(pattern) or _is_glob(value):
        return False
    resource, _, subresource = value.partition("/")
    return ResourceSet.of([pattern]).matches(resource, subresource)


def _url_matches(pattern: str, value: str) -> bool:
    """An RBAC non-resource URL ending in ``*`` is a prefix; Airlock's globs read the same for those."""
    if _is_glob(value):
        return pattern.endswith("*") and value.startswith(pattern[:-1])
    return _glob_matches(pattern, value)


def _names_intersect(ours: list[str], theirs: list[str]) -> list[str] | None:
    """resourceNames both allow ([] is every name), or None when they share none."""
    if not ours or not theirs:
        return ours or theirs
    return [n for n in ours if n in theirs] or None


def with_cluster_rules(ours: RuleList, status: dict | None, problem: str, connection: str) -> dict:
    """The rules both the connection and the cluster allow; nothing when the cluster cannot be asked."""
    if status is None:
        return {"resourceRules": [], "nonResourceRules": [], "incomplete": True,
                "evaluationError": cluster_unavailable(connection, problem)}
    out = RuleList(notes=list(ours.notes), incomplete=status.get("incomplete") is True)
    if out.incomplete:
        out.notes.append("The cluster's own list is incomplete.")
    lossy = False
    theirs = [r for r in status.get("resourceRules") or [] if isinstance(r, dict)]
    for rule in ours.resource_rules:
        for other in theirs:
            verbs, l1 = _intersect(rule["verbs"], _strings(other.get("verbs")), lambda a, b: False)
            groups, l2 = _intersect(rule["apiGroups"], _strings(other.get("apiGroups")), _glob_matches)
            resources, l3 = _intersect(rule["resources"], _strings(other.get("resources")), _resource_matches)
            names = _names_intersect(rule.get("resourceNames", []), _strings(other.get("resourceNames")))
            lossy = lossy or l1 or l2 or l3
            if verbs and groups and resources and names is not None:
                both = {"verbs": verbs, "apiGroups": groups, "resources": resources}
                if names:
                    both["resourceNames"] = names
                if both not in out.resource_rules:
                    out.resource_rules.append(both)
    for rule in ours.non_resource_rules:
        for other in (r for r in status.get("nonResourceRules") or [] if isinstance(r, dict)):
            verbs, l1 = _intersect(rule["verbs"], _strings(other.get("verbs")), lambda a, b: False)
            urls, l2 = _intersect(rule["nonResourceURLs"], _strings(other.get("nonResourceURLs")), _url_matches)
            lossy = lossy or l1 or l2
            if verbs and urls and {"verbs": verbs, "nonResourceURLs": urls} not in out.non_resource_rules:
                out.non_resource_rules.append({"verbs": verbs, "nonResourceURLs": urls})
    if lossy:
        out.notes.append("Some rules use patterns the cluster's rules cannot be matched against; they are left out.")
    return out.status(connection)


def _strings(value) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
