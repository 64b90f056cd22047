"""Evaluation: the first enabled rule that matches decides; nothing matching means deny."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from policy.budgets import NO_BUDGET, Budget
from policy.compile import CompiledRule
from policy.index import RuleOrder
from policy.reach import Reach
from policy.vocabulary import ALLOW, DEFAULT_DENY, DENY, HOLD_OPEN, POLICY_ERROR, REVIEW

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """The outcome for one request.

    ``mask_secrets`` is False only when an allowing rule turned masking off;
    deny and review decisions always mask.  ``rule_id`` is None for the
    built-in default deny.  ``dry_run``: the request is a dry run;
    ``held_back`` names the review rule that denied it (a dry run is never held).
    ``hold``: how a review decision holds the request.  ``budget``: what the deciding rule lets
    each agent spend (policy.budgets; gateway.budgets spends it).
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
    budget: Budget = NO_BUDGET


def evaluate(rules: Sequence[CompiledRule], principal, info, *, dry_run: bool = False) -> Decision:
    """Return the decision of the first enabled matching rule; deny if none matches.

    ``rules`` are in evaluation order (``policy.compile.in_order``: sorted once, when they are
    loaded, not per request); a policy.index.RuleOrder gives only the rules that may match.  ``dry_run``: kube-apiserver runs the request as a dry run
    (kube.dryrun); a review rule that matches one denies it, since a dry run is never held.
    """
    try:
        if isinstance(rules, RuleOrder):  # a request decided before, or only the rules that may match its shape
            return rules.decision(principal, info, dry_run, _first_match)
        return _first_match(rules, principal, info, dry_run)
    except Exception:
        logger.exception("policy evaluation failed; denying the request")
        return Decision(DENY, None, POLICY_ERROR, "policy evaluation failed", True, False, dry_run=dry_run)


def _first_match(rules, principal, info, dry_run: bool) -> Decision:
    reach = Reach.of(info) if info.is_resource_request else None
    if isinstance(rules, RuleOrder):
        rules = rules.candidates(principal, info, reach, dry_run)
    for rule in rules:
        if rule.matches(principal, info, reach, dry_run=dry_run):
            return decision_for(rule, dry_run)
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
        budget=rule.budget,
    )
