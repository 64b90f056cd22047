"""Built-in rule presets, as RuleSet documents (see policy.rulesets for the schema).

Rules are first-match in ``order``, so the dangerous subresources are handled
before the broad read rules: a ``get`` on ``*`` would otherwise also match
``pods/exec`` (exec is decided by subresource, and ``get`` is one of its
transports).

Both presets allow dry runs first (``kubectl diff``, ``apply --dry-run=server``):
they change nothing, their answers are masked like any response, and a dry run
is never held for review.  In production-guardrails a held write is answered at
once with the review's URL (kubectl prints nothing while a request is held open);
exec, attach and port-forward are held open, exec and attach telling the agent
on stderr when it asked for stderr.

production-guardrails also gives its destructive rules budgets (policy.budgets), per agent:
at most 10 deletes an hour (each one also approved by a reviewer) and 3 exec, attach or port-forward sessions
at once.  A reviewer's approval does not lift a budget: the quota is spent when the approved
request is forwarded.
"""

from policy import rulesets

EVERYONE = ["*"]
READ = ["get", "list", "watch"]
WRITES = ["create", "update", "patch", "delete", "deletecollection"]
STREAMING = ["pods/exec", "pods/attach", "pods/portforward"]
PROXY = ["*/proxy"]
# How review rules hold (RuleSet review.hold): kubectl prints nothing while an HTTP request is held
# open, so writes are answered at once with the review's URL; exec and attach can say so on stderr.
AT_ONCE = {"hold": "retry"}
HELD_OPEN = {"hold": "open"}
# Budgets of the destructive rules (RuleSet budget; per agent and connection).
DELETE_BUDGET = {"quota": "10/hour"}
SESSION_BUDGET = {"concurrent": 3}

# What kube-apiserver serves every authenticated user (the system:discovery and
# system:public-info-viewer ClusterRoles) and the per-check health endpoints, each with and
# without a trailing slash (kr8s asks for /version/).  Everything else (/metrics, /debug/*,
# /logs/*, the service-account issuer documents) stays denied.
DISCOVERY_URLS = [
    "/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/openapi", "/openapi/*",
    "/healthz", "/healthz/*", "/livez", "/livez/*", "/readyz", "/readyz/*",
]


def _rule(name, effect, description, **fields):
    rule = {"name": name, "effect": effect, "description": description, "subjects": EVERYONE}
    if "nonResourceURLs" not in fields:
        rule |= {"apiGroups": ["*"], "namespaces": ["*"], "names": ["*"]}
    return rule | fields


_DRY_RUNS = _rule(
    "dry-runs", "allow",
    "Server-side dry runs (kubectl diff, apply --dry-run=server) change nothing; answers are masked.",
    order=5, verbs=WRITES, resources=["*"], dryRun="only", maskSecrets=True,
)
_SELF_REVIEWS = _rule(
    "self-reviews", "allow",
    "kubectl auth can-i / whoami: reviews of the caller's own access are queries, not changes.",
    verbs=["create"],
    apiGroups=["authorization.k8s.io", "authentication.k8s.io"],
    resources=["selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"],
)
_READ_SECRETS = _rule(
    "read-secrets-masked", "allow", "Secrets may be read, with their values masked.",
    verbs=READ, apiGroups=[""], resources=["secrets"], maskSecrets=True,
)
_READ_ALL = _rule(
    "read-all", "allow", "Read everything else (Secret values stay masked everywhere).",
    verbs=READ, resources=["*"], maskSecrets=True,
)
_DISCOVERY = _rule(
    "discovery", "allow", "API discovery, OpenAPI, version and health endpoints, read-only.",
    verbs=["get", "head"], nonResourceURLs=DISCOVERY_URLS,
)

READ_ONLY = {
    "apiVersion": rulesets.API_VERSION,
    "kind": rulesets.KIND,
    "rules": [
        _DRY_RUNS,
        _rule(
            "no-exec-attach-portforward", "deny",
            "No interactive access: exec, attach and port-forward (WebSocket GET and SPDY POST alike).",
            order=10, verbs=["*"], resources=STREAMING,
        ),
        _rule(
            "no-proxy", "deny", "No proxying to pods, services or nodes.",
            order=20, verbs=["*"], resources=PROXY,
        ),
        _rule(
            "no-serviceaccount-tokens", "deny", "No minting of ServiceAccount tokens.",
            order=30, verbs=["*"], apiGroups=[""], resources=["serviceaccounts/token"],
        ),
        _SELF_REVIEWS | {"order": 40},
        _READ_SECRETS | {"order": 50},
        _READ_ALL | {"order": 60},
        _rule(
            "read-only-no-writes", "deny", "This connection is read-only.",
            order=70, verbs=WRITES, resources=["*"],
        ),
        _DISCOVERY | {"order": 80},
    ],
}

PRODUCTION_GUARDRAILS = {
    "apiVersion": rulesets.API_VERSION,
    "kind": rulesets.KIND,
    "rules": [
        _DRY_RUNS,
        _rule(
            "review-exec-attach-portforward", "review",
            "Interactive access to a pod needs a reviewer (WebSocket GET and SPDY POST alike).",
            order=10, verbs=["*"], resources=STREAMING, review=HELD_OPEN, budget=SESSION_BUDGET,
        ),
        _rule(
            "review-proxy", "review", "Proxying to pods, services or nodes needs a reviewer.",
            order=20, verbs=["*"], resources=PROXY, review=AT_ONCE,
        ),
        _rule(
            "review-serviceaccount-tokens", "review", "Minting ServiceAccount tokens needs a reviewer.",
            order=30, verbs=["*"], apiGroups=[""], resources=["serviceaccounts/token"], review=AT_ONCE,
        ),
        _rule(
            "review-rbac-changes", "review", "RBAC changes can grant anything; they need a reviewer.",
            order=40, verbs=WRITES, apiGroups=["rbac.authorization.k8s.io"], resources=["*"], review=AT_ONCE,
        ),
        _rule(
            "review-admission-webhook-changes", "review",
            "Admission webhooks and policies see or change every request; changes need a reviewer.",
            order=50, verbs=WRITES, apiGroups=["admissionregistration.k8s.io"], resources=["*"], review=AT_ONCE,
        ),
        _rule(
            "review-deletes", "review", "Deletes need a reviewer.",
            order=60, verbs=["delete", "deletecollection"], resources=["*"], review=AT_ONCE,
            budget=DELETE_BUDGET,
        ),
        _rule(
            "review-scale", "review", "Scaling needs a reviewer.",
            order=70, verbs=["update", "patch"], resources=["*/scale"], review=AT_ONCE,
        ),
        _SELF_REVIEWS | {"order": 80},
        _READ_SECRETS | {"order": 90},
        _READ_ALL | {"order": 100},
        _rule(
            "review-writes", "review", "Every other change needs a reviewer.",
            order=110, verbs=WRITES, resources=["*"], review=AT_ONCE,
        ),
        _DISCOVERY | {"order": 120},
    ],
}

PRESETS = {"read-only": READ_ONLY, "production-guardrails": PRODUCTION_GUARDRAILS}


def preset_rule_fields(name: str) -> list[dict]:
    """The preset's rules as model-field dicts (validated structure); KeyError if unknown."""
    return rulesets.parse_document(PRESETS[name])


def bind(rule_fields: list[dict], *, subjects=(), groups=()) -> list[dict]:
    """The rules bound to these subjects and IdP groups instead of everyone.

    Presets are written for every authenticated principal (``subjects: ["*"]``);
    binding replaces that on every rule, so the preset applies only to the
    given groups or subjects (a rule matches a principal named in
    ``subjects`` or member of one of ``groups``).
    """
    subjects, groups = list(subjects), list(groups)
    if not subjects and not groups:
        raise rulesets.RuleSetError(["a preset must be bound to at least one group or subject"])
    return [fields | {"subjects": subjects, "groups": groups} for fields in rule_fields]


def apply_preset(connection, name: str, *, subjects=(), groups=(), name_prefix: str = "",
                 replace: bool = False):
    """Load a preset into ``connection`` (all or nothing); see rulesets.apply_rules.

    With neither ``subjects`` nor ``groups`` the preset keeps its own binding:
    every authenticated principal (the command line and the admin make the
    caller say so, with --everyone).  ``name_prefix`` is put before each rule
    name, so several bound presets can live on one connection.
    """
    if name not in PRESETS:
        raise rulesets.RuleSetError(
            [f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}"]
        )
    fields = preset_rule_fields(name)
    if subjects or groups:
        fields = bind(fields, subjects=subjects, groups=groups)
    fields = [f | {"name": name_prefix + f["name"]} for f in fields]
    return rulesets.apply_rules(connection, fields, replace=replace)
