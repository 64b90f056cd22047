"""Label and field selectors (k8s.io/apimachinery/pkg/labels and pkg/fields semantics).

Pure functions: parse once per request, then match objects. Parse errors raise ApiError 400 with
kube-apiserver's wording so clients print the same message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .errors import bad_request

_KEY_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return has and value in self.values
        if self.op in ("!=", "notin"):
            return not has or value not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if not has:
            return False
        try:
            left, right = int(value), int(self.values[0])
        except (TypeError, ValueError):
            return False
        return left > right if self.op == "gt" else left < right


LabelSelector = tuple[Requirement, ...]


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if text.startswith(("==", "!="), i):
            tokens.append(text[i : i + 2])
            i += 2
            continue
        if c in "=!(),<>":
            tokens.append(c)
            i += 1
            continue
        j = i
        while j < len(text) and not text[j].isspace() and text[j] not in "=!(),<>":
            j += 1
        tokens.append(text[i:j])
        i = j
    return tokens


def _check_key(key: str) -> None:
    if not key or len(key) > 317 or not _KEY_RE.match(key):
        raise bad_request(f'unable to parse requirement: <nil>: Invalid value: "{key}": name part must consist of '
                          "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                          "alphanumeric character")


def _check_value(value: str) -> None:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise bad_request(f'unable to parse requirement: values[0][key]: Invalid value: "{value}": a valid '
                          "label must be an empty string or consist of alphanumeric characters, '-', '_' "
                          "or '.', and must start and end with an alphanumeric character")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse ``app=web,tier in (a,b),!legacy``; an empty selector matches everything."""
    if not text or not text.strip():
        return ()
    tokens = _tokenize(text)
    reqs: list[Requirement] = []
    pos = 0

    def expect(what: str) -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise bad_request(f"unable to parse requirement: found '', expected: {what}")
        tok = tokens[pos]
        pos += 1
        return tok

    while pos < len(tokens):
        tok = expect("identifier")
        if tok == "!":
            key = expect("identifier")
            _check_key(key)
            reqs.append(Requirement(key, "!"))
        else:
            key = tok
            _check_key(key)
            if pos >= len(tokens) or tokens[pos] == ",":
                reqs.append(Requirement(key, "exists"))
            else:
                op = expect("operator")
                if op in ("=", "=="):
                    value = tokens[pos] if pos < len(tokens) and tokens[pos] != "," else ""
                    if value:
                        pos += 1
                    _check_value(value)
                    reqs.append(Requirement(key, "=", (value,)))
                elif op == "!=":
                    value = tokens[pos] if pos < len(tokens) and tokens[pos] != "," else ""
                    if value:
                        pos += 1
                    _check_value(value)
                    reqs.append(Requirement(key, "!=", (value,)))
                elif op in ("in", "notin"):
                    if expect("'('") != "(":
                        raise bad_request("unable to parse requirement: found '" + tokens[pos - 1]
                                          + "', expected: '('")
                    values: list[str] = []
                    while True:
                        tok = expect("',', ')' or identifier")
                        if tok == ")":
                            break
                        if tok == ",":
                            continue
                        _check_value(tok)
                        values.append(tok)
                    reqs.append(Requirement(key, op, tuple(values)))
                elif op in (">", "<"):
                    value = expect("integer")
                    try:
                        int(value)
                    except ValueError:
                        raise bad_request("unable to parse requirement: for 'Gt', 'Lt' operators, the "
                                          "value must be an integer") from None
                    reqs.append(Requirement(key, "gt" if op == ">" else "lt", (value,)))
                else:
                    raise bad_request(f"unable to parse requirement: found '{op}', expected: "
                                      "'in', 'notin', '=', '==', '!=', 'gt', 'lt'")
        if pos < len(tokens):
            if tokens[pos] != ",":
                raise bad_request(f"found '{tokens[pos]}', expected: ',' or 'end of string'")
            pos += 1
            if pos >= len(tokens):
                raise bad_request("found '', expected: identifier after ','")
    return tuple(reqs)


def labels_match(selector: LabelSelector, labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in selector)


# -- field selectors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldTerm:
    field: str
    value: str
    negate: bool


FieldSelector = tuple[FieldTerm, ...]


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            if value[i + 1] not in "\\,=":
                raise bad_request(f"invalid field selector: invalid escape sequence: \\{value[i + 1]}")
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parse_field_selector(text: str | None) -> FieldSelector:
    if not text or not text.strip():
        return ()
    terms: list[FieldTerm] = []
    for part in _split_unescaped(text, ","):
        if not part:
            continue
        for op, negate in (("!=", True), ("==", False), ("=", False)):
            idx = part.find(op)
            if idx > 0:
                terms.append(FieldTerm(part[:idx].strip(), _unescape(part[idx + len(op) :]), negate))
                break
        else:
            raise bad_request(f"invalid field selector: invalid selector: '{text}'; can't understand '{part}'")
    return tuple(terms)


def _path(*keys: str) -> Callable[[dict], str]:
    def get(obj: dict) -> str:
        cur: object = obj
        for k in keys:
            if not isinstance(cur, dict):
                return ""
            cur = cur.get(k)
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return get


def _dotted(name: str) -> Callable[[dict], str]:
    return _path(*name.split("."))


_COMMON = ("metadata.name", "metadata.namespace")
# Field labels each resource supports besides metadata.name/namespace (kube-apiserver's
# AddFieldLabelConversionFunc registrations for the most used types).
_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                   "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"),
    ("", "events"): ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                     "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                     "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
    ("events.k8s.io", "events"): ("regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid",
                                  "reason", "reportingController", "type"),
    ("", "secrets"): ("type",),
    ("", "namespaces"): ("status.phase",),
    ("", "nodes"): ("spec.unschedulable",),
    ("", "services"): ("spec.clusterIP", "spec.type"),
    ("", "replicationcontrollers"): ("status.replicas",),
    ("apps", "replicasets"): ("status.replicas",),
    ("batch", "jobs"): ("status.successful",),
    ("certificates.k8s.io", "certificatesigningrequests"): ("spec.signerName",),
}
_SPECIAL: dict[str, Callable[[dict], str]] = {"source": _path("source", "component")}


def field_getters(group: str, resource: str, selector: FieldSelector) -> list[tuple[FieldTerm, Callable[[dict], str]]]:
    """Validate the selector's fields for this resource and return matchers."""
    allowed = _COMMON + _FIELDS.get((group, resource), ())
    out = []
    for term in selector:
        if term.field not in allowed:
            raise bad_request(f'field label not supported: {term.field}')
        getter = _SPECIAL.get(term.field) if (group, resource) == ("", "events") else None
        out.append((term, getter or _dotted(term.field)))
    return out


def fields_match(getters: list[tuple[FieldTerm, Callable[[dict], str]]], obj: dict) -> bool:
    for term, get in getters:
        equal = get(obj) == term.value
        if equal == term.negate:
            return False
    return True


def exact_name(selector: FieldSelector) -> str | None:
    """The name a ``metadata.name=X`` selector pins (kube-apiserver then treats it as a named request)."""
    for term in selector:
        if term.field == "metadata.name" and not term.negate:
            return term.value
    return None
