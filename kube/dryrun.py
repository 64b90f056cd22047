"""Is this request a server-side dry run?  Read exactly where kube-apiserver reads it (sans-IO).

A dry run (``kubectl diff``, ``apply --dry-run=server``) is its own decision in policy
(``dryRun`` on a rule) and is never held for review, so it must never be mistaken for a
change.  A request counts as a dry run only when kube-apiserver will certainly run it as one:

* a create, update, patch, delete or deletecollection;
* of an object, its ``status`` or its ``scale``: their storage honours ``dryRun``.  Other
  subresources are served by their own code, which may ignore it (a TokenRequest on
  ``serviceaccounts/token`` mints a real token whatever ``dryRun`` says), and ``exec``,
  ``attach``, ``portforward`` and ``proxy`` refuse it with 400;
* with ``dryRun`` where the handler reads it: the query (CreateOptions, UpdateOptions,
  PatchOptions, and DeleteOptions of a DELETE without a body), or the DeleteOptions body of
  a DELETE that has one (kube-apiserver then ignores the query);
* and every value is exactly ``All`` (``dryRun=All&dryRun=All`` is one; ``dryRun=Foo``,
  ``dryRun=all`` or an empty value is a 400 from kube-apiserver, not a dry run).

Anything else that mentions ``dryRun`` is treated as the change it may be, with a ``note``
saying why, for reviewers.  A DeleteOptions body that is not a JSON object, repeats a key
or holds ``dryRun`` in another shape is not read further: not a dry run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kube.bodies import loads_unique
from kube.media import declared_content_type, media_type
from kube.requestinfo import RequestInfoError, parse_query
from kube.vocabulary import CONNECT_SUBRESOURCES, DELETE_VERBS, MUTATING_VERBS

# Subresources whose storage is the object's own store, which honours dryRun.
HONOURING_SUBRESOURCES = frozenset({"", "status", "scale"})
ALL = "All"


@dataclass(frozen=True)
class DryRun:
    """``honoured``: kube-apiserver runs the request as a dry run.  ``note``: why a request that
    asks for one is not treated as one ("" when it is, or when it does not ask)."""

    honoured: bool = False
    note: str = ""


NOT_ASKED = DryRun()
HONOURED = DryRun(honoured=True)


def _values(values, where: str) -> DryRun:
    if not values:
        return NOT_ASKED
    if all(value == ALL for value in values):
        return HONOURED
    shown = ", ".join(json.dumps(v) for v in values[:5])
    return DryRun(note=f"dryRun {shown} in {where} is not a dry run: kube-apiserver accepts only \"All\" "
                       "and refuses anything else with 400")


def _delete_options(content_type: str, body: bytes, query_asks: bool) -> DryRun:
    media = media_type(content_type) if content_type else "application/json"
    ignored = " (the query's dryRun is ignored when a DELETE has a body)" if query_asks else ""
    if media != "application/json":
        return DryRun(note="the delete options are not JSON, so the gateway does not read a dry run in them"
                           + ignored) if query_asks or b"dryRun" in body else NOT_ASKED
    try:
        options = loads_unique(body)
    except (ValueError, RecursionError):
        return DryRun(note="the delete options are not one valid JSON object" + ignored)
    if not isinstance(options, dict):
        return DryRun(note="the delete options are not a JSON object" + ignored)
    value = options.get("dryRun")
    if value is None:
        return DryRun(note="the delete options in the body hold no dryRun" + ignored) if query_asks else NOT_ASKED
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return DryRun(note="dryRun in the delete options is not a list of strings")
    return _values(value, "the delete options")


def classify(info, query: str, headers, body: bytes | None) -> DryRun:
    """Whether kube-apiserver runs this request as a dry run; ``headers`` are (lower-case name, value)."""
    if not info.is_resource_request or info.verb not in MUTATING_VERBS:
        return NOT_ASKED
    try:
        params = parse_query(query)
    except RequestInfoError:
        params = {}
    in_query = params.get("dryRun", [])
    if info.verb in DELETE_VERBS and body:
        content_type = declared_content_type(headers)
        result = _delete_options(content_type, body, bool(in_query))
    elif info.verb in DELETE_VERBS and body is None:
        # The body was not read: it may hold DeleteOptions that override the query.
        result = DryRun(note="the request body was not read") if in_query else NOT_ASKED
    else:
        result = _values(in_query, "the query")
    if not result.honoured:
        return result
    what = f"{info.resource}/{info.subresource}"
    if info.subresource in CONNECT_SUBRESOURCES:
        return DryRun(note=f"kube-apiserver refuses dryRun on {what} with 400")
    if info.subresource not in HONOURING_SUBRESOURCES:
        return DryRun(note=f"{what} is served by its own code, which may not honour dryRun "
                           "(a dry-run TokenRequest mints a real token): treated as the change itself")
    return result
