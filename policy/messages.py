"""What an agent reads: a request in one line, and the message of a 403 for a denied or held request."""

from __future__ import annotations

import json
import re

from policy.evaluate import Decision
from policy.vocabulary import DEFAULT_DENY, DENY, POLICY_ERROR, REVIEW

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
