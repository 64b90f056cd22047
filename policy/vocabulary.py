"""The policy's words: effects, how rules treat dry runs and hold reviews, the built-in decisions' names."""

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
