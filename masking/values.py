"""Masking by value: the exact values of the cluster's Secrets, wherever else they turn up.

A Secret's value copied into a pod's env, an annotation, a ConfigMap, a log line or a file a
command prints carries no keyword a detector could see.  The gateway knows the values (it
lists and watches Secrets with its own credential, :mod:`gateway.secretvalues`), so it masks
them by what they are.  This module is the sans-IO half: which values qualify, the byte
strings ("forms") a value can appear as, and one multi-pattern pass
(masking/literals.py) that finds them all.

Exclusion rule (what is *not* a needle, so masking does not eat ordinary names):

1. values shorter than ``MIN_VALUE_BYTES`` (8) after trimming surrounding whitespace, or longer
   than ``MAX_VALUE_BYTES`` (16 KiB: files, not values; the private-key and keyword detectors
   still see into them), or holding the mask placeholder;
2. values shorter than ``SHORT_VALUE_BYTES`` (12) made of one character class only (lower-case
   letters, upper-case letters or digits: ``postgres``, ``payments``, ``ADMINUSER``), values
   made only of digits and ``.:/-+_`` separators shorter than ``NUMERIC_VALUE_BYTES`` (16:
   ports, counts, dates, IP addresses, versions), and values with fewer than
   ``MIN_DISTINCT_BYTES`` (4) distinct bytes (``xxxxxxxx``, ``00000000``);
3. values equal to the name of a namespace or of a Secret the gateway knows (a username equal
   to its namespace name would otherwise mask ``metadata.namespace`` everywhere);
4. values of keys that hold public or identifying data: names ending ``.crt``, ``.cert`` or
   ``.pub`` (``ca.crt`` is in every namespace's ``kube-root-ca.crt`` ConfigMap and in every
   kubeconfig; ``tls.crt`` is sent to every TLS client; ``tls.key`` *is* a needle) and keys
   whose last word is user, username, login, host, hostname, port, database, db, dbname,
   namespace, email or region (a Secret's ``username`` of type ``kubernetes.io/basic-auth``).

A value that is a small file (dotenv, ini, properties, YAML ``k: v`` lines, or a JSON document
such as ``.dockerconfigjson``) also contributes the values of its secret-named entries
(:func:`masking.detectors.name_is_secret`, plus a docker ``auth``'s password), under
the same rule.

Forms of a kept value: the raw bytes; its JSON-escaped forms (JSON logs, serialized documents:
ASCII-only or not, with ``&``, ``<`` and ``>`` as the six-character escapes Go's encoding/json
writes, and with a slash escaped); its percent-encoded forms (URLs and form bodies: ``%2F`` or
``%2f``, a space as ``%20`` or ``+``); its base64 at each of the three byte alignments, standard
and URL-safe, so it is found inside any base64 blob (Secret ``data`` copied into a ConfigMap, a
kubeconfig, a docker ``auth``).  A base64 match is widened by the base64 characters that
still carry bits of the value (one 4-character group on each side at most).

Values never leave the process: they are not logged, not in any exception or ``repr``, and the
report counts masked values as ``secret-value`` without saying which.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

import regex

from masking.detectors import MAX_SECRET_BYTES, Detector, Hit, apply_masks, name_is_secret
from masking.literals import Literals
from masking.placeholder import PLACEHOLDER, PLACEHOLDER_B64

KIND = "secret-value"
MIN_VALUE_BYTES = 8
MAX_VALUE_BYTES = MAX_SECRET_BYTES
SHORT_VALUE_BYTES = 12
NUMERIC_VALUE_BYTES = 16
MIN_DISTINCT_BYTES = 4
HEAD = 8  # every form is at least this long; a held tail is tested from its first HEAD bytes
_START = 3
B64_GROUP = 4

PUBLIC_KEY_SUFFIXES = (".crt", ".cert", ".pub")
IDENTIFIER_WORDS = frozenset(
    {"user", "username", "login", "host", "hostname", "port", "database", "db", "dbname", "namespace", "email",
     "region"}
)
_KEY_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_NUMERIC = re.compile(rb"[0-9.:/+_-]+")
_ONE_CLASS = re.compile(rb"[a-z]+|[A-Z]+|[0-9]+")
_WS = b" \t\r\n\f\v"
_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_")
_LINE = re.compile(rb"^[ \t]*(?:export[ \t]+)?([A-Za-z0-9_.-]+)[ \t]*[:=][ \t]*(.*?)[ \t\r]*$", re.M)
_PLACEHOLDERS = (PLACEHOLDER.encode(), PLACEHOLDER_B64.encode())

# Value hits are exact: no regex, no continuation to swallow (see TextMasker's context).
VALUE_DETECTOR = Detector(
    name=KIND, pattern=regex.compile(rb"(?!)"), continuation=regex.compile(rb""), needles=(), swallow=False
)


def key_is_public(key: str) -> bool:
    """Keys of Secret entries that hold public or identifying data (rule 4)."""
    if key.lower().endswith(PUBLIC_KEY_SUFFIXES):
        return True
    words = _KEY_WORDS.findall(key)
    return bool(words) and words[-1].lower() in IDENTIFIER_WORDS


def excluded(value: bytes, names: frozenset[bytes] = frozenset()) -> bool:
    """Rules 1-3 for one trimmed value; ``names`` are the namespace and Secret names."""
    n = len(value)
    if n < MIN_VALUE_BYTES or n > MAX_VALUE_BYTES or any(p in value for p in _PLACEHOLDERS):
        return True
    if n < SHORT_VALUE_BYTES and _ONE_CLASS.fullmatch(value):
        return True
    if n < NUMERIC_VALUE_BYTES and _NUMERIC.fullmatch(value):
        return True
    if len(set(value)) < MIN_DISTINCT_BYTES:
        return True
    return value in names


def candidates(key: str, raw: bytes) -> list[bytes]:
    """The trimmed values one Secret entry contributes before rules 1-3 (rule 4 applied)."""
    if key_is_public(key):
        return []
    value = raw.strip(_WS)
    found = [value]
    if len(value) > MAX_VALUE_BYTES:
        return found
    if value[:1] == b"{":
        found.extend(_json_entries(value))
    elif b"\n" in value:
        for name, entry in _LINE.findall(value):
            if name_is_secret(name.decode("latin-1")):
                found.append(entry.strip(b"\"'").strip(_WS))
    return found


def _json_entries(value: bytes) -> list[bytes]:
    """Secret-named string leaves of a JSON document, and the password of a docker ``auth``."""
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):
        return []
    out, stack = [], [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for name, child in node.items():
                if not isinstance(child, str):
                    stack.append(child)
                elif name == "auth":
                    try:
                        out.append(base64.b64decode(child, validate=True).partition(b":")[2])
                    except (binascii.Error, ValueError):
                        continue
                elif name_is_secret(name):
                    out.append(child.encode("utf-8", "surrogatepass"))
    return out


def _b64_forms(value: bytes) -> Iterable[tuple[bytes, int, int]]:
    """(form, groups to widen before, after) of ``value`` inside base64 at each alignment."""
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + value)
        skip = B64_GROUP if k else 0
        rest = len(value) - ((3 - k) % 3)
        whole = rest // 3 * B64_GROUP
        form = encoded[skip : skip + whole]
        if len(form) < HEAD:
            continue
        before, after = (1 if k else 0), (1 if rest % 3 else 0)
        yield form, before, after
        url = form.translate(_URLSAFE)
        if url != form:
            yield url, before, after


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def forms_of(value: bytes) -> Iterable[tuple[bytes, int, int]]:
    """Every form a kept value is looked for in: (bytes, base64 groups before, after)."""
    yield value, 0, 0
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        for form in sorted(_text_forms(text) - {text}):
            yield form.encode("utf-8", "surrogatepass"), 0, 0
    yield from _b64_forms(value)


_GO_HTML_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                               "\u2029": "\\u2029"})
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def _text_forms(text: str) -> set[str]:
    """The escaped and percent-encoded spellings of a value that is text."""
    escaped = {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
    escaped |= {e.translate(_GO_HTML_SAFE) for e in escaped} | {e.replace("/", "\\/") for e in escaped}
    quoted = {quote(text, safe=""), quote_plus(text, safe="")}
    quoted |= {_PERCENT.sub(lambda m: m.group(0).lower(), q) for q in quoted}
    return escaped | quoted


class SecretValues:
    """An immutable set of needles and their automaton; safe to share between requests.

    Build with :meth:`build`; an empty set is falsy.  ``repr`` shows counts only.
    """

    __slots__ = ("_automaton", "_heads", "_starts", "_forms", "_widen", "values", "forms", "form_bytes", "longest")

    def __init__(self, values: Iterable[bytes] = ()):
        widen: dict[bytes, tuple[int, int]] = {}
        kept = 0
        for value in dict.fromkeys(values):
            kept += 1
            for form, before, after in forms_of(value):
                old = widen.get(form, (0, 0))
                widen[form] = (max(old[0], before), max(old[1], after))
        self.values = kept
        self._forms = sorted(widen)  # sorted: a tail is looked up by bisection
        self.forms = len(self._forms)
        # Per form, one byte: base64 groups to widen before (bit 0) and after (bit 1).
        self._widen = bytes(before | after << 1 for before, after in (widen[f] for f in self._forms))
        del widen
        self.form_bytes = sum(len(f) for f in self._forms)
        self.longest = max((len(f) for f in self._forms), default=0)
        self._automaton = Literals(self._forms) if self._forms else None
        heads = list(dict.fromkeys(f[:HEAD] for f in self._forms))
        self._heads = Literals(heads, engine="aho-corasick") if heads else None
        # The first bytes (up to _START) of every form: a tail shorter than HEAD that starts no
        # form is passed over without a search of the sorted forms.
        self._starts = frozenset(f[:k] for f in self._forms for k in range(1, _START + 1))

    @classmethod
    def build(cls, secrets: Iterable[tuple[str, str, Iterable[bytes]]], namespaces: Iterable[str] = ()) -> SecretValues:
        """From (namespace, name, candidate values) per Secret (see :func:`candidates`)."""
        secrets = list(secrets)
        names = {ns.encode() for ns in namespaces}
        for namespace, name, _ in secrets:
            names.add(namespace.encode())
            names.add(name.encode())
        names = frozenset(names)
        return cls(v for _, _, values in secrets for v in values if not excluded(v, names))

    def __bool__(self) -> bool:
        return self._automaton is not None

    def __repr__(self) -> str:
        return f"SecretValues({self.values} values, {len(self._forms)} forms)"

    # -- matching ----------------------------------------------------------------------------

    def present(self, data: bytes) -> bool:
        """Whether any form occurs in ``data`` (cheap test before a closer look)."""
        return self._automaton is not None and bool(self._automaton.find(data))

    def hits(self, data: bytes, partial: bool = False) -> list[Hit]:
        """Every occurrence of a form, as masking hits; with ``partial`` also the earliest tail
        of ``data`` that is the start of a longer form (held by the stream masker).

        A partial hit's masked span is what is masked if the stream must be released before it
        is decided: the tail from where the form starts, when at least HEAD bytes long.
        """
        if self._automaton is None:
            return []
        n = len(data)
        out = []
        for index, start, end in self._automaton.find(data):
            before, after = self._widen[index] & 1, self._widen[index] >> 1
            ms = _widen_back(data, start, before)
            me, cut_off = _widen_forward(data, end, after)
            out.append(Hit(ms, me, ms, me, VALUE_DETECTOR, cut_off, False))
        if partial:
            tail = self._tail(data)
            if tail is not None:
                p, before = tail
                hold = _widen_back(data, p, before)
                out.append(Hit(hold, n, hold if n - p >= HEAD else n, n, VALUE_DETECTOR, True, True))
        return out

    def _tail(self, data: bytes) -> tuple[int, int] | None:
        """(start, base64 groups before) of the earliest tail that a longer form starts with."""
        n = len(data)
        lo = max(0, n - self.longest + 1)
        starts = []
        if self._heads is not None and n - lo >= HEAD:
            starts = sorted({lo + s for _, s, _ in self._heads.find(data[lo:])})
        begins = self._starts
        short = [p for p in range(max(lo, n - HEAD + 1), n) if data[p : p + _START] in begins]
        for p in [*starts, *short]:
            index = self._longer_form(data[p:])
            if index is not None:
                return p, self._widen[index] & 1
        return None

    def _longer_form(self, tail: bytes) -> int | None:
        """Index of a form that is longer than ``tail`` and starts with it."""
        forms = self._forms
        i = bisect_left(forms, tail)
        while i < len(forms) and forms[i].startswith(tail):
            if len(forms[i]) > len(tail):
                return i
            i += 1
        return None

    # -- JSON --------------------------------------------------------------------------------

    def mask_str(self, text: str, counts: dict[str, int]) -> str:
        data = text.encode("utf-8", "surrogatepass")
        found = self.hits(data)
        if not found:
            return text
        return apply_masks(data, found, 0, len(data), counts).decode("utf-8", "replace")

    def mask_tree(self, doc, counts: dict[str, int]):
        """Mask every string (values and keys) of a decoded JSON value; returns the value
        (a new one only when ``doc`` itself is a string).  Iterative: depth costs no stack."""
        if isinstance(doc, str):
            return self.mask_str(doc, counts)
        stack = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, list):
                for i, item in enumerate(node):
                    if isinstance(item, str):
                        node[i] = self.mask_str(item, counts)
                    elif isinstance(item, (list, dict)):
                        stack.append(item)
            elif isinstance(node, dict):
                renamed = False
                for key, item in node.items():
                    if isinstance(item, str):
                        node[key] = self.mask_str(item, counts)
                    elif isinstance(item, (list, dict)):
                        stack.append(item)
                    renamed = renamed or self.mask_str(key, {}) != key
                if renamed:
                    items = [(self.mask_str(k, counts), v) for k, v in node.items()]
                    node.clear()
                    node.update(items)
        return doc


def _widen_back(data: bytes, start: int, groups: int) -> int:
    limit = max(0, start - groups * B64_GROUP)
    while start > limit and data[start - 1] in _B64_CHARS:
        start -= 1
    return start


def _widen_forward(data: bytes, end: int, groups: int) -> tuple[int, bool]:
    """The widened end, and whether the data ends before the widening could finish."""
    limit = end + groups * B64_GROUP
    n = len(data)
    while end < min(limit, n) and data[end] in _B64_CHARS:
        end += 1
    return end, end == n and end < limit


EMPTY = SecretValues()


def secret_entries(obj: Mapping) -> list[bytes]:
    """Candidate values of one Secret object as the API returns it (base64 ``data``)."""
    data = obj.get("data")
    out = []
    if isinstance(data, Mapping):
        for key, encoded in data.items():
            if not isinstance(key, str) or not isinstance(encoded, str):
                continue
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                continue
            out.extend(candidates(key, raw))
    return out


def mask_values_in_record(body: bytes, values: SecretValues | None) -> bytes:
    """A request body as the audit trail keeps it (compact JSON or text), with the values masked."""
    if not body or not values or not values.present(body):
        return body
    try:
        doc = json.loads(body)
        return json.dumps(values.mask_tree(doc, {}), separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        return apply_masks(body, values.hits(body), 0, len(body), {})
