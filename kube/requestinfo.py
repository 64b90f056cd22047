"""kube-apiserver's RequestInfo, derived exactly as upstream does, plus a canonical-path guard.

The gateway authorizes on the same (verb, group, version, namespace, resource, subresource, name)
tuple that kube-apiserver's ``RequestInfoFactory.NewRequestInfo``
(k8s.io/apiserver pkg/endpoints/request/requestinfo.go) computes, so policy and upstream can never
disagree about what a request is. Pure and stdlib-only so it can be tested exhaustively.

Deliberate deviations, all of them refusals (fail closed) of input no Kubernetes client sends:

* ``canonical_path`` refuses paths that Go would accept but that other HTTP components may read
  differently (``//``, dot segments, ``%2F``, ``%5C``, ``%25``, encoded unreserved characters,
  controls, raw characters outside RFC 3986 ``pchar``). One trailing ``/`` is allowed: upstream
  trims it for RequestInfo (so policy sees the same tuple) and ``*/proxy/`` sub-paths need it.
* ``parse`` refuses queries with raw control characters (Go's HTTP server answers 400 to those),
  raw non-ASCII or space, percent-decoded bytes that are not UTF-8, and more than 10000 parameters
  (Go's ``urlmaxqueryparams`` default, whose effect depends on the build's GODEBUG: refusing is the
  only answer that agrees with every upstream build), and methods that are not HTTP tokens.
* A query pair containing a raw ``;`` or a malformed ``%`` escape is dropped, exactly as Go >= 1.17
  ``url.ParseQuery`` drops it, so gateway and upstream see the same parameters.
* ``parse`` refuses resource requests whose API group, version, namespace, resource or subresource
  is not lower case.  Kubernetes never serves such a path, and policy rules (lower case only) could
  not name it: another spelling must never be a way around a rule.

Long because it mirrors kube-apiserver's RequestInfoFactory and its path guards in one place, so it
can be compared with upstream line by line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from kube.vocabulary import COLLECTION_VERBS, LONG_RUNNING_SUBRESOURCES, LONG_RUNNING_VERBS

__all__ = [
    "NonCanonicalPath",
    "RequestInfo",
    "RequestInfoError",
    "canonical_path",
    "parse",
    "parse_query",
    "query_bool",
]

API_PREFIXES = frozenset({"api", "apis"})
GROUPLESS_API_PREFIXES = frozenset({"api"})
SPECIAL_VERBS = frozenset({"proxy", "watch"})
SPECIAL_VERBS_NO_SUBRESOURCES = frozenset({"proxy"})
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}

MAX_PATH_BYTES = 8192
MAX_QUERY_PARAMS = 10000


class RequestInfoError(ValueError):
    """The request cannot be classified; answer 400, never forward it."""


class NonCanonicalPath(RequestInfoError):
    """The raw path is not in the one spelling the gateway accepts."""


@dataclass(frozen=True)
class RequestInfo:
    """Upstream's RequestInfo field for field; ``parts`` is empty for non-resource requests."""

    is_resource_request: bool
    path: str
    verb: str
    api_prefix: str
    api_group: str
    api_version: str
    namespace: str
    resource: str
    subresource: str
    name: str
    parts: tuple[str, ...]
    field_selector: str = ""
    label_selector: str = ""


def is_long_running(info: RequestInfo) -> bool:
    """kube-apiserver's LongRunningFunc (``BasicLongRunningRequestCheck`` as the control plane configures it):
    the requests its own request timeout does not apply to."""
    if info.verb in LONG_RUNNING_VERBS:
        return True
    return info.is_resource_request and info.subresource in LONG_RUNNING_SUBRESOURCES


# --- query parsing (Go net/url.ParseQuery) --------------------------------------------------------

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _query_unescape(s: str) -> bytes | None:
    """Go ``url.QueryUnescape``; None where Go returns an error (the pair is then dropped)."""
    if _BAD_ESCAPE.search(s):
        return None
    return unquote_to_bytes(s.replace("+", " "))


def parse_query(query: str) -> dict[str, list[str]]:
    """Go's ``url.ParseQuery`` as kube-apiserver's ``req.URL.Query()`` sees it (values in order)."""
    if not query.isascii():
        raise RequestInfoError("query string contains raw non-ASCII characters")
    for ch in query:
        if ch <= " " or ch == "\x7f":
            raise RequestInfoError(f"query string contains raw character {ord(ch):#04x}")
    if query.count("&") + 1 > MAX_QUERY_PARAMS:
        raise RequestInfoError(f"query string has more than {MAX_QUERY_PARAMS} parameters")
    values: dict[str, list[str]] = {}
    for pair in query.split("&"):
        if ";" in pair or not pair:
            continue
        raw_key, _, raw_value = pair.partition("=")
        key, value = _query_unescape(raw_key), _query_unescape(raw_value)
        if key is None or value is None:
            continue
        try:
            values.setdefault(key.decode("utf-8"), []).append(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestInfoError("query parameter is not valid UTF-8 after percent-decoding") from None
    return values


def _first(params: dict[str, list[str]], key: str) -> str | None:
    vals = params.get(key)
    return vals[0] if vals else None


# --- ListOptions decoding (metainternalversionscheme.ParameterCodec.DecodeParameters) ------------

_INT64 = re.compile(r"[+-]?[0-9]+")


def _is_int64(s: str) -> bool:
    """Go ``strconv.ParseInt(s, 10, 64)`` succeeds (any number of leading zeros is fine)."""
    if not _INT64.fullmatch(s):
        return False
    digits = s.lstrip("+-").lstrip("0")
    if len(digits) > 19:
        return False
    return int(digits or "0") <= (2**63 if s[0] == "-" else 2**63 - 1)


# Characters Go's strings.EqualFold (Unicode simple folding) treats as equal to each letter of "false".
_FALSE_FOLD = ("fF", "aA", "lL", "sS\u017f", "eE")


def _bool_param(value: str) -> bool:
    """apimachinery ``Convert_Slice_string_To_bool``: only ``0`` and EqualFold ``false`` are false."""
    if value == "0":
        return False
    return not (len(value) == 5 and all(c in fold for c, fold in zip(value, _FALSE_FOLD)))


def query_bool(params: dict[str, list[str]], key: str) -> bool:
    """A boolean query parameter as kube-apiserver decodes it into options (``stderr`` of PodExecOptions):
    absent is false, otherwise the first value by ``Convert_Slice_string_To_bool``."""
    value = _first(params, key)
    return value is not None and _bool_param(value)


def _bool_param_fallback(value: str) -> bool:
    """The fallback in NewRequestInfo: ``strings.ToLower(v)`` is ``false`` or ``0`` means false."""
    return not (value.isascii() and value.lower() in ("false", "0"))


_LABEL_NAME = re.compile(r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")


def _is_label_key(key: str) -> bool:
    """apimachinery ``content.IsLabelKey``: ``[dns-subdomain/]name``, name at most 63 chars."""
    parts = key.split("/")
    if len(parts) > 2:
        return False
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            return False
    name = parts[-1]
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.fullmatch(name))


def _is_label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and bool(_LABEL_NAME.fullmatch(value)))


class _SelectorError(Exception):
    pass


# Label selector tokens (apimachinery pkg/labels/selector.go); "in"/"notin" read as identifiers
# wherever a value is expected.
_EOS, _IDENT, _CPAR, _COMMA, _NOT, _DEQ, _EQ, _GT, _IN, _LT, _NEQ, _NOTIN, _OPAR = range(13)
_LABEL_TOKENS = {
    ")": _CPAR, ",": _COMMA, "!": _NOT, "==": _DEQ, "=": _EQ, ">": _GT, "in": _IN,
    "<": _LT, "!=": _NEQ, "notin": _NOTIN, "(": _OPAR,
}
_LABEL_SPECIAL = frozenset("=!(),><")
_LABEL_SPACE = frozenset(" \t\r\n")


def _lex_label_selector(s: str) -> list[tuple[int, str]]:
    """Port of the byte lexer; a NUL acts as end of input for the token being read, as in Go."""
    pos = 0
    n = len(s)

    def read() -> str:
        nonlocal pos
        if pos < n:
            pos += 1
            return s[pos - 1]
        return "\0"

    tokens: list[tuple[int, str]] = []
    while True:
        ch = read()
        while ch in _LABEL_SPACE:
            ch = read()
        if ch == "\0":
            tokens.append((_EOS, ""))
            return tokens
        pos -= 1
        buf = ""
        if ch in _LABEL_SPECIAL:
            tok = None
            while True:
                ch = read()
                if ch == "\0":
                    break
                if ch not in _LABEL_SPECIAL:
                    pos -= 1
                    break
                buf += ch
                if buf in _LABEL_TOKENS:
                    tok = (_LABEL_TOKENS[buf], buf)
                elif tok is not None:
                    pos -= 1
                    break
            if tok is None:
                raise _SelectorError("unknown operator")
            tokens.append(tok)
        else:
            while True:
                ch = read()
                if ch == "\0":
                    break
                if ch in _LABEL_SPECIAL or ch in _LABEL_SPACE:
                    pos -= 1
                    break
                buf += ch
            tokens.append((_LABEL_TOKENS.get(buf, _IDENT), buf))


def _check_label_selector(selector: str) -> None:
    """Raise _SelectorError exactly where apimachinery ``labels.Parse`` returns an error."""
    tokens = _lex_label_selector(selector)
    pos = 0

    def peek(values: bool = True) -> int:
        tok = tokens[pos][0]
        return _IDENT if values and tok in (_IN, _NOTIN) else tok

    def take(values: bool = True) -> tuple[int, str]:
        nonlocal pos
        tok, lit = tokens[pos]
        pos += 1
        return (_IDENT if values and tok in (_IN, _NOTIN) else tok), lit

    def requirement() -> None:
        tok, key = take()
        unary = tok == _NOT
        if unary:
            tok, key = take()
        if tok != _IDENT or not _is_label_key(key):
            raise _SelectorError("bad key")
        if unary or peek() in (_EOS, _COMMA):
            return
        op, _ = take(values=False)
        if op in (_IN, _NOTIN):
            vals = set_values()
        elif op in (_EQ, _DEQ, _NEQ, _GT, _LT):
            vals = exact_value()
        else:
            raise _SelectorError("bad operator")
        if op in (_GT, _LT) and not all(_is_int64(v) for v in vals):
            raise _SelectorError("Gt/Lt needs an integer")
        if not all(_is_label_value(v) for v in vals):
            raise _SelectorError("bad value")

    def set_values() -> set[str]:
        if take()[0] != _OPAR:
            raise _SelectorError("expected (")
        tok = peek()
        if tok == _CPAR:
            take()
            return {""}
        if tok not in (_IDENT, _COMMA):
            raise _SelectorError("expected value")
        vals: set[str] = set()
        while True:
            tok, lit = take()
            if tok == _IDENT:
                vals.add(lit)
                nxt = peek()
                if nxt == _CPAR:
                    take()
                    return vals
                if nxt != _COMMA:
                    raise _SelectorError("expected , or )")
            elif tok == _COMMA:
                if not vals:
                    vals.add("")
                nxt = peek()
                if nxt == _CPAR:
                    vals.add("")
                    take()
                    return vals
                if nxt == _COMMA:
                    vals.add("")
            else:
                raise _SelectorError("expected value")

    def exact_value() -> set[str]:
        if peek() in (_EOS, _COMMA):
            return {""}
        tok, lit = take()
        if tok != _IDENT:
            raise _SelectorError("expected value")
        return {lit}

    while True:
        tok = peek()
        if tok == _EOS:
            return
        if tok not in (_IDENT, _NOT):
            raise _SelectorError("expected requirement")
        requirement()
        tok, _ = take()
        if tok == _EOS:
            return
        if tok != _COMMA or peek() not in (_IDENT, _NOT):
            raise _SelectorError("expected , or end")


_FIELD_OPERATORS = ("!=", "==", "=")


def _split_field_terms(selector: str) -> list[str]:
    """apimachinery fields ``splitTerms``: split on commas not escaped by a backslash."""
    terms: list[str] = []
    start = 0
    escaped = False
    for i, c in enumerate(selector):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ",":
            terms.append(selector[start:i])
            start = i + 1
    if selector:
        terms.append(selector[start:])
    return terms


def _unescape_field_value(value: str) -> str:
    """apimachinery fields ``UnescapeValue``: ``\\\\``, ``\\,``, ``\\=`` only; bare ``,``/``=`` invalid."""
    out: list[str] = []
    escaped = False
    for c in value:
        if escaped:
            if c not in "\\,=":
                raise _SelectorError("invalid escape sequence")
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c in ",=":
            raise _SelectorError("unescaped character in value")
        else:
            out.append(c)
    if escaped:
        raise _SelectorError("invalid escape sequence")
    return "".join(out)


def _field_selector_exact_name(selector: str) -> str | None:
    """``fields.ParseSelector(s).RequiresExactMatch("metadata.name")``; _SelectorError if unparsable.

    Terms are sorted before use, as upstream does, so the first equality term in sorted order wins.
    """
    found = None
    for term in sorted(_split_field_terms(selector)):
        if not term:
            continue
        for i in range(len(term)):
            op = next((o for o in _FIELD_OPERATORS if term.startswith(o, i)), None)
            if op is not None:
                break
        else:
            raise _SelectorError("term has no operator")
        lhs, rhs = term[:i], _unescape_field_value(term[i + len(op) :])
        if found is None and op != "!=" and lhs == "metadata.name":
            found = rhs
    return found


def _is_path_segment_name(name: str) -> bool:
    """apimachinery ``content.IsPathSegmentName`` (which accepts the empty string)."""
    return name not in (".", "..") and "/" not in name and "%" not in name


def _list_options(params: dict[str, list[str]]) -> tuple[bool, str | None]:
    """(watch, exact metadata.name) as ListOptions decoding yields them, fallback included."""
    try:
        for key in ("limit", "timeoutSeconds"):
            value = _first(params, key)
            if value is not None and not _is_int64(value):
                raise _SelectorError(f"{key} is not an integer")
        _check_label_selector(_first(params, "labelSelector") or "")
        name = _field_selector_exact_name(_first(params, "fieldSelector") or "")
    except _SelectorError:
        watch = _first(params, "watch")
        return (watch is not None and _bool_param_fallback(watch)), None
    watch = _first(params, "watch")
    return (watch is not None and _bool_param(watch)), name


# --- RequestInfo ----------------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse(method: str, path: str, query: str) -> RequestInfo:
    """``RequestInfoFactory.NewRequestInfo`` with APIPrefixes {api, apis}, groupless {api}.

    ``path`` is the decoded path (Go's ``req.URL.Path``), ``query`` the raw query string.
    """
    if not _TOKEN.fullmatch(method):
        raise RequestInfoError("request method is not a valid HTTP token")
    params = parse_query(query)

    def non_resource(api_prefix: str = "") -> RequestInfo:
        return RequestInfo(
            is_resource_request=False,
            path=path,
            verb=method.lower(),
            api_prefix=api_prefix,
            api_group="",
            api_version="",
            namespace="",
            resource="",
            subresource="",
            name="",
            parts=(),
        )

    trimmed = path.strip("/")
    parts = trimmed.split("/") if trimmed else []
    if len(parts) < 3 or parts[0] not in API_PREFIXES:
        return non_resource()
    api_prefix, parts = parts[0], parts[1:]
    api_group = ""
    if api_prefix not in GROUPLESS_API_PREFIXES:
        if len(parts) < 3:
            return non_resource(api_prefix)
        api_group, parts = parts[0], parts[1:]
    api_version, parts = parts[0], parts[1:]

    verb_via_path_prefix = parts[0] in SPECIAL_VERBS
    if verb_via_path_prefix:
        if len(parts) < 2:
            raise RequestInfoError(
                f"unable to determine kind and namespace from url: nothing after /{parts[0]}"
            )
        verb, parts = parts[0], parts[1:]
    else:
        verb = _METHOD_VERBS.get(method, "")

    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in NAMESPACE_SUBRESOURCES:
            parts = parts[2:]

    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and verb not in SPECIAL_VERBS_NO_SUBRESOURCES else ""

    if not name and verb == "get":
        watch, selected = _list_options(params)
        verb = "watch" if watch else "list"
        if selected is not None and _is_path_segment_name(selected):
            name = selected
    if not name and verb == "delete":
        verb = "deletecollection"

    for what, value in (("API group", api_group), ("API version", api_version), ("namespace", namespace),
                        ("resource", resource), ("subresource", subresource)):
        if value != value.lower():
            raise RequestInfoError(f"the {what} in the path must be lower case")

    field_selector = label_selector = ""
    if not verb_via_path_prefix and verb in COLLECTION_VERBS:
        field_selector = _first(params, "fieldSelector") or ""
        label_selector = _first(params, "labelSelector") or ""

    return RequestInfo(
        is_resource_request=True,
        path=path,
        verb=verb,
        api_prefix=api_prefix,
        api_group=api_group,
        api_version=api_version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        parts=tuple(parts),
        field_selector=field_selector,
        label_selector=label_selector,
    )


# --- canonical paths ------------------------------------------------------------------------------

# RFC 3986 pchar (unreserved, sub-delims, ":" "@") plus "/" and "%" (escapes checked separately).
_PATH_SAFE = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/%"
)
_UNRESERVED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_NAMED_ESCAPES = {
    0x2F: "an encoded slash (%2F)",
    0x5C: "an encoded backslash (%5C)",
    0x00: "an encoded NUL (%00)",
    0x25: "an encoded percent sign (%25, double encoding)",
}


def _raw_char_problem(byte: int) -> str:
    if byte == 0:
        return "a NUL byte"
    if byte < 0x20 or byte == 0x7F:
        return f"control character {byte:#04x}"
    if byte >= 0x80:
        return "a raw non-ASCII byte (must be percent-encoded)"
    if byte == 0x5C:
        return "a backslash"
    return f"character {chr(byte)!r} (must be percent-encoded)"


def canonical_path(raw_path: bytes | str) -> str:
    """Validate the raw (still percent-encoded) request path and return it decoded.

    Accepts exactly the paths Kubernetes clients send, so that the path the policy sees and the
    path any upstream component resolves cannot differ.
    """
    if isinstance(raw_path, str):
        if not raw_path.isascii():
            raise NonCanonicalPath("path contains raw non-ASCII characters")
        raw_path = raw_path.encode("ascii")
    if len(raw_path) > MAX_PATH_BYTES:
        raise NonCanonicalPath(f"path is longer than {MAX_PATH_BYTES} bytes")
    if not raw_path.startswith(b"/"):
        raise NonCanonicalPath("path must start with '/'")
    for byte in raw_path:
        if byte not in _PATH_SAFE:
            raise NonCanonicalPath(f"path contains {_raw_char_problem(byte)}")
    if _BAD_ESCAPE.search(raw_path.decode("ascii")):
        raise NonCanonicalPath("path contains invalid percent-encoding")
    segments = raw_path[1:].split(b"/")
    for index, segment in enumerate(segments, start=1):
        escaped = [int(h, 16) for h in _ESCAPE.findall(segment)]
        for byte in escaped:
            if byte in _NAMED_ESCAPES:
                raise NonCanonicalPath(f"path contains {_NAMED_ESCAPES[byte]}")
            if byte < 0x20 or byte == 0x7F:
                raise NonCanonicalPath(f"path contains encoded control character {byte:#04x}")
        decoded = unquote_to_bytes(segment)
        if decoded in (b".", b".."):
            raise NonCanonicalPath(f"path segment {index} is a dot segment")
        if any(byte in _UNRESERVED for byte in escaped):
            raise NonCanonicalPath(f"path segment {index} percent-encodes an unreserved character")
        if not segment and index != len(segments):
            raise NonCanonicalPath(f"path segment {index} is empty")
    try:
        decoded_path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise NonCanonicalPath("path is not valid UTF-8 after percent-decoding") from None
    if any("\x80" <= ch <= "\x9f" for ch in decoded_path):
        raise NonCanonicalPath("path contains an encoded C1 control character")
    return decoded_path
