"""The policy: per-connection rules, compiled once, first match decides, default deny.

``policy.models.Rule`` rows are validated (``check``) and compiled (``compile``) into
immutable ``CompiledRule`` objects, sorted once into evaluation order (``order``
ascending, ties by name) when they are loaded (``cache``); ``evaluate`` walks them and
the first enabled rule that matches decides.  Nothing matching means deny.  Deny and
review rules match everything a request can reach (``reach``); ``messages`` words
the decisions.  The engine (``vocabulary``, ``globs``, ``check``, ``reach``, ``compile``,
``evaluate``, ``messages``) imports no Django, so the hot path can be tested and reasoned
about without a database; ``models``, ``cache``, ``rulesets``, ``presets`` and ``admin``
are the Django side.

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
* Deny and review rules match everything a request can reach (``policy.reach``);
  allow rules match the request literally.
"""
