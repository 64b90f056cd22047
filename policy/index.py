"""The rules that can decide a request, found without walking every rule: first match stays exact.

Evaluation is first-match over the rules in order (policy.evaluate).  A connection with hundreds
of rules would test each of them for every request, although only a few can concern the
agent asking and the kind of request it makes.  :class:`RuleOrder` (the rules in evaluation
order, as ``policy.compile.in_order`` returns them) remembers, per *shape* of request, the rules
that may match one of that shape; evaluate then tests only those, in the same order.

A shape is what a rule can be decided on apart from the object's namespace and name: who asks
(username, subject, groups), whether it is a dry run, and the request's verb, API group,
resource, subresource (or, for a non-resource request, its path).  The candidates of a shape
are found with each rule's *relaxed* copy: the same rule with ``namespaces`` and ``names``
matching anything.  Those two fields only ever narrow a match (``CompiledRule.matches`` uses
them in conjunctions, or next to a reach that already covers every name or namespace), so

* every rule that matches a request is a candidate of its shape (nothing is skipped), and
* the candidates keep their order,

so the first candidate that matches is the first rule that matches.  The relaxed test reads
nothing of the request but its shape (Reach's name and namespace flags only ever stand next to
the relaxed fields), so the candidates hold for every request of the shape.

A decision reads nothing of the request but its shape and the object's namespace and name, so a
RuleOrder also remembers the decision made for each (shape, namespace, name) it has decided: an
agent repeating a request is decided by one dict lookup.

Each RuleOrder holds at most ``MAX_SHAPES`` shapes and ``MAX_DECISIONS`` decisions (then starts
again); the rules are reloaded every few seconds and whenever one changes (policy.cache), and a new
RuleOrder starts empty, so nothing remembered outlives the rules it was decided by.
"""

from __future__ import annotations

import dataclasses

from policy.globs import GlobSet

MAX_SHAPES = 4096
MAX_DECISIONS = 4096
_ANY = GlobSet.of(["*"])


class RuleOrder(tuple):
    """Compiled rules in evaluation order, with the candidates of each request shape seen so far."""

    def decision(self, principal, info, dry_run: bool, decide):
        """``decide(self, principal, info, dry_run)``, or what it returned for the same request before."""
        try:
            decided = self._decided
        except AttributeError:
            decided = self._decided = {}
        key = (_shape(principal, info, dry_run), info.namespace, info.name)
        found = decided.get(key)
        if found is None:
            found = decide(self, principal, info, dry_run)
            if len(decided) >= MAX_DECISIONS:
                decided.clear()
            decided[key] = found
        return found

    def candidates(self, principal, info, reach, dry_run: bool):
        """The rules, in order, that may match a request of ``info``'s shape from ``principal``."""
        try:
            shapes = self._shapes
        except AttributeError:
            shapes = self._shapes = {}
            self._relaxed = None
        key = _shape(principal, info, dry_run)
        found = shapes.get(key)
        if found is None:
            relaxed = self._relaxed
            if relaxed is None:
                relaxed = self._relaxed = tuple(_relax(rule) for rule in self)
            found = tuple(rule for rule, loose in zip(self, relaxed)
                          if loose.matches(principal, info, reach, dry_run=dry_run))
            if len(shapes) >= MAX_SHAPES:
                shapes.clear()
            shapes[key] = found
        return found


def _relax(rule):
    """``rule`` with its namespaces and names matching anything (see the module docstring)."""
    return dataclasses.replace(rule, namespaces=_ANY, names=_ANY)


def _shape(principal, info, dry_run: bool) -> tuple:
    who = None if principal is None else (principal.username, principal.subject, tuple(principal.groups))
    if info.is_resource_request:
        return (who, dry_run, True, info.verb, info.api_group, info.resource, info.subresource)
    return (who, dry_run, False, info.verb, info.path)
