"""Free-text secret detectors: one pattern library for JSON fields, logs and exec streams.

Why hand-written patterns and not a scanner library: Yelp's ``detect-secrets`` 1.5 scanned a
realistic log at 0.15 MB/s (0.6 MB/s without its entropy plugins, which flagged nearly every
line), found none of ``password=...`` in plain text (its keyword plugin wants source-code
quoting), reports values but not positions, and sees PEM keys one line at a time.  The
patterns here follow the rule sets of gitleaks and detect-secrets for the token formats.

Every detector is a bytes pattern of the ``regex`` module, which adds partial matching to the
stdlib syntax: the stream masker holds back exactly the bytes that may still become a secret.
Each pattern starts with a literal "needle" (found in an ASCII-lower-cased copy).  One pass of
the multi-pattern engine (masking/literals.py) finds every needle of every detector, and a
detector's pattern is tried only where one of its needles is, so a buffer costs one pass plus
a few anchored matches, however many detectors there are.  Only the secret part of a match is
replaced (the value of ``password=...``, the password in a URL's userinfo, the body of a PEM
block); keys, prefixes and structure stay readable.

Detectors are selected per connection/rule with :meth:`Detectors.from_config`; counts are kept
per detector name and never include matched text.

Long because it is the pattern library: one table of detectors and the few helpers they share, read
as a list rather than as logic.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import regex

from masking.literals import Literals
from masking.placeholder import PLACEHOLDER

PLACEHOLDER_BYTES = PLACEHOLDER.encode()

# Longest secret (match) the stream masker holds back waiting for its end.  Longer candidates
# are masked from their start to the end of the buffer and the masker keeps masking their
# continuation (see TextMasker), so they are masked too, only less precisely.
MAX_SECRET_BYTES = 16 * 1024

# Identifier suffixes after a keyword that name something about a secret, not the secret.
_NOT_A_VALUE_SUFFIXES = (
    "name", "names", "ref", "refs", "file", "files", "path", "dir", "type", "kind", "length",
    "len", "size", "count", "enabled", "mode", "version", "ttl", "timeout", "expiry", "expires",
    "expiration", "format", "namespace", "used", "usage", "limit", "total", "rotation", "source",
    "provider", "store", "manager", "policy", "endpoint", "url", "uri", "field", "fields",
    "selector", "template", "hint",
)
_TRIVIAL_VALUES = frozenset(
    {b"null", b"none", b"nil", b"true", b"false", b"undefined", b"redacted", b"[redacted]", b"masked", b"hidden"}
)
_KEYWORD_NAME = re.compile(
    r"passw(?:or)?d|passphrase|secret|token|credential|"
    r"(?:api|private|client|access|auth|signing|encryption|master|account|ssh|secret)[-_.]?key",
    re.IGNORECASE,
)
# Words of an identifier (``DB_PASS``, ``mysqlPwd``, ``db-pass``) that name a secret on their
# own; as substrings they would hit ``passenger``, ``bypass`` or ``compass``.
_SECRET_WORDS = frozenset({"pass", "pwd", "passwd", "pswd", "passcode", "passphrase", "password", "secret", "token"})
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_FILE_NAME = re.compile(
    r"\.(?:json|ya?ml|txt|conf|cfg|ini|toml|properties|xml|env|sh|py|js|md|html?|csv|crt|cer|pem|key|tpl|j2)$",
    re.IGNORECASE,
)
_FLAG = re.compile(r"-{1,2}[A-Za-z0-9_.-]+")
_ANY_TOKEN = regex.compile(rb"[^\s\"']*")


def _trivial(value: bytes) -> bool:
    """Values that are references or already masked, not secrets."""
    v = value.strip().lower()
    if not v or v in _TRIVIAL_VALUES or PLACEHOLDER_BYTES.lower() in v:
        return True
    if v.strip(b"*x") == b"":
        return True
    return v.startswith((b"${", b"$(", b"{{", b"%(")) or (v.startswith(b"<") and v.endswith(b">"))


def _names_a_property(identifier: str) -> bool:
    """``secretName``, ``DB_PASSWORD_FILE``, ``token_ttl``: about a secret, not the secret."""
    return identifier.lower().rstrip("_-.\"'").endswith(_NOT_A_VALUE_SUFFIXES)


@functools.lru_cache(maxsize=4096)  # a pure function of the name; objects repeat their keys
def name_is_secret(name: str) -> bool:
    """An env var, ConfigMap key, annotation key or CLI flag whose name says its value is a secret.

    ``DB_PASSWORD``, ``api-key`` (keyword anywhere), ``DB_PASS``, ``MYSQL_PWD``, ``dbPass`` (a
    secret word), ``CACHE_KEY`` (``key`` as the last word); an annotation key is judged by its
    name after the ``prefix/`` (``example.com/db-password``).  Names of a property of a secret
    (``DB_PASSWORD_FILE``, ``secretName``) and file names (``token.json``) are not secrets.
    """
    name = name.rpartition("/")[2]
    if _FILE_NAME.search(name) or _names_a_property(name):
        return False
    if _KEYWORD_NAME.search(name):
        return True
    words = [w.lower() for w in _WORD.findall(name)]
    return any(w in _SECRET_WORDS for w in words) or (len(words) > 1 and words[-1] in ("key", "keys"))


@dataclass(frozen=True)
class Detector:
    """One pattern.  ``groups`` name the masked part (first that took part), else the whole match.

    ``needles``: lower-case literals, one of which every match has ``needle_offset`` bytes
    from its start (0 but for one detector); without needles the last ``partial_window``
    bytes are searched for an unfinished match.  ``prefix`` matches the readable part before
    the masked group, so a cut-off match is masked from where its secret starts.  ``lower``
    runs the pattern on an ASCII-lower-cased copy (patterns written in lower case).
    ``continuation`` matches how a secret cut off by the hold limit may go on, up to ``stop``;
    without ``swallow`` the stream masker keeps the released start as context instead.
    """

    name: str
    pattern: regex.Pattern
    continuation: regex.Pattern
    needles: tuple[bytes, ...]
    groups: tuple[str, ...] = ()
    prefix: regex.Pattern | None = None
    lower: bool = False
    needle_offset: int = 0
    partial_window: int = 0
    multiline: bool = False
    stop: bytes = b""
    check: Callable[[regex.Match, bytes], bool] | None = None
    swallow: bool = True  # a match released before its end: drop its ``continuation`` after
    scan: re.Pattern | None = None  # the same pattern in the stdlib engine, faster for a needle-less scan


def _d(name, pattern, continuation, needles, groups=(), prefix=None, lower=False, check=None, **extra) -> Detector:
    return Detector(
        name=name,
        pattern=regex.compile(pattern),
        continuation=regex.compile(continuation),
        needles=tuple(needles),
        groups=tuple(groups),
        prefix=regex.compile(prefix) if prefix is not None else None,
        lower=lower,
        check=check,
        **extra,
    )


_TOKEN_CONT = rb"[A-Za-z0-9_-]*"
_SEPARATOR = rb"(?P<id>[a-z0-9_.-]{0,40}?)[\"']?[ \t]{0,5}(?::=|=>|[:=])[ \t]{0,5}"
_VALUE = _SEPARATOR + (
    rb"(?:\"(?P<q>[^\"\\\r\n]*(?:\\.[^\"\\\r\n]*)*)\"|'(?P<s>[^'\r\n]*)'"
    rb"|(?P<v>[^\s\"',;&)}\]{\[(<][^\s\"',;&)}\]]*))"
)
_VALUE_CONT = rb"[^\s\"',;&)}\]]*"


def _keyword_check(m: regex.Match, src: bytes) -> bool:
    if _names_a_property((m.group("kw") + m.group("id")).decode("latin-1")):
        return False
    value = m.group("q") if m.group("q") is not None else m.group("s") if m.group("s") is not None else m.group("v")
    return not _trivial(value)


def _value_check(group: str) -> Callable[[regex.Match, bytes], bool]:
    return lambda m, src: not _trivial(m.group(group))


_LOWER_ALNUM = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789")


def _bootstrap_check(m: regex.Match, src: bytes) -> bool:
    """``abcdef.0123456789abcdef``: exactly six lower-case alphanumerics (the public id) before the dot."""
    start = m.start()
    if start < 6 or not all(c in _LOWER_ALNUM for c in src[start - 6 : start]):
        return False
    return start == 6 or src[start - 7] not in _LOWER_ALNUM


def _keyword(keyword: bytes, needles: tuple[bytes, ...], before: bytes = b"") -> Detector:
    """``<keyword><identifier> = value`` (also ``:``, ``:=``, ``=>``, quoted or not).

    ``before`` is a look-behind the keyword needs (``api_`` in ``api_key``), kept out of the
    match so the pattern still starts with a literal.
    """
    return _d(
        "keyword",
        before + rb"(?P<kw>" + keyword + rb")" + _VALUE,
        _VALUE_CONT,
        needles,
        groups=("q", "s", "v"),
        prefix=rb"(?P<kw>" + keyword + rb")" + _SEPARATOR + rb"[\"']?",
        lower=True,
        check=_keyword_check,
    )


BUILTIN: tuple[Detector, ...] = (
    _d(
        "private-key",
        rb"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
        rb"(?P<body>[A-Za-z0-9+/=\s\\:,._-]*?)-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----",
        rb"(?:(?!-----END)[A-Za-z0-9+/=\s\\:,._-])*",
        (b"-----begin",),
        groups=("body",),
        multiline=True,
        stop=b"-----END",
        prefix=rb"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----",
    ),
    _d("jwt", rb"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*", rb"[A-Za-z0-9_.-]*", (b"eyj",)),
    _d(
        "aws-access-key-id",
        rb"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])",
        rb"[A-Z0-9]*",
        (b"a3t", b"akia", b"asia", b"abia", b"acca"),
    ),
    _d(
        "aws-secret-access-key",
        rb"secret_?access_?key[\"']?[ \t]{0,5}[:=][ \t]{0,5}[\"']?(?P<v>[a-z0-9/+=]{40})(?![a-z0-9/+=])",
        rb"[A-Za-z0-9/+=]*",
        (b"secret",),
        groups=("v",),
        prefix=rb"secret_?access_?key[\"']?[ \t]{0,5}[:=][ \t]{0,5}[\"']?",
        lower=True,
    ),
    _d("gcp-api-key", rb"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", _TOKEN_CONT, (b"aiza",)),
    _d("gcp-oauth-token", rb"ya29\.[0-9A-Za-z_-]{20,}", _TOKEN_CONT, (b"ya29.",)),
    _d(
        "azure-storage-key",
        rb"AccountKey=(?P<v>[A-Za-z0-9+/=]{20,})",
        rb"[A-Za-z0-9+/=]*",
        (b"accountkey=",),
        groups=("v",),
        prefix=rb"AccountKey=",
    ),
    _d(
        "azure-storage-key",
        rb"SharedAccessKey=(?P<v>[A-Za-z0-9+/=]{20,})",
        rb"[A-Za-z0-9+/=]*",
        (b"sharedaccesskey=",),
        groups=("v",),
        prefix=rb"SharedAccessKey=",
    ),
    _d(
        "azure-sas-signature",
        rb"sig=(?P<v>[A-Za-z0-9%+/=]{20,})",
        rb"[A-Za-z0-9%+/=]*",
        (b"sig=",),
        groups=("v",),
        prefix=rb"sig=",
    ),
    _d(
        # The portal shows the first characters of a client secret too; the rest is masked.
        "azure-client-secret",
        rb"(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.]{3}[0-9]Q~(?P<v>[A-Za-z0-9_~.-]{31,34})(?![A-Za-z0-9_~.-])",
        rb"[A-Za-z0-9_~.-]*",
        (b"q~",),
        groups=("v",),
        prefix=rb"[A-Za-z0-9_~.]{3}[0-9]Q~",
        needle_offset=4,
    ),
    _d("github-token", rb"gh[pousr]_[A-Za-z0-9]{36,}", rb"[A-Za-z0-9]*", (b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_")),
    _d("github-token", rb"github_pat_[A-Za-z0-9_]{22,}", rb"[A-Za-z0-9_]*", (b"github_pat_",)),
    _d(
        "gitlab-token",
        rb"gl(?:pat|dt|rt|ptt|ft|imt|oas|soat|cbt|agent)-[A-Za-z0-9_-]{20,}",
        _TOKEN_CONT,
        (b"glpat-", b"gldt-", b"glrt-", b"glptt-", b"glft-", b"glimt-", b"gloas-", b"glsoat-", b"glcbt-",
         b"glagent-"),
    ),
    _d("gitlab-token", rb"GR1348941[A-Za-z0-9_-]{20,}", _TOKEN_CONT, (b"gr1348941",)),
    _d("slack-token", rb"x(?:ox[abposre]|app)-[A-Za-z0-9-]{10,}", rb"[A-Za-z0-9-]*", (b"xox", b"xapp-")),
    _d(
        "slack-webhook",
        rb"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<v>[A-Za-z0-9/_-]{20,})",
        rb"[A-Za-z0-9/_-]*",
        (b"hooks.slack.com/",),
        groups=("v",),
        prefix=rb"hooks\.slack\.com/(?:services|workflows|triggers)/",
    ),
    _d(
        "stripe-key",
        rb"[sr]k_(?:live|test)_[0-9A-Za-z_]{10,}",
        rb"[0-9A-Za-z_]*",
        (b"sk_live_", b"sk_test_", b"rk_live_", b"rk_test_"),
    ),
    _d(
        "openai-anthropic-key",
        rb"sk-(?:proj-|ant-[a-z0-9]{2,8}-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}",
        _TOKEN_CONT,
        (b"sk-",),
    ),
    _d("npm-token", rb"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])", rb"[A-Za-z0-9]*", (b"npm_",)),
    _d("pypi-token", rb"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}", _TOKEN_CONT, (b"pypi-ageichlwas5vcmc",)),
    _d("sendgrid-key", rb"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}", _TOKEN_CONT, (b"sg.",)),
    _d("vault-token", rb"hv[sbr]\.[A-Za-z0-9_-]{24,}", _TOKEN_CONT, (b"hvs.", b"hvb.", b"hvr.")),
    _d("huggingface-token", rb"hf_[A-Za-z]{34}(?![A-Za-z])", rb"[A-Za-z]*", (b"hf_",)),
    _d("digitalocean-token", rb"do[opr]_v1_[a-f0-9]{64}", rb"[a-f0-9]*", (b"doo_v1_", b"dop_v1_", b"dor_v1_")),
    _d(
        "kubernetes-bootstrap-token",
        rb"\.(?P<v>[a-z0-9]{16})(?![a-z0-9])",
        rb"[a-z0-9]*",
        (),
        groups=("v",),
        prefix=rb"\.",
        partial_window=17,
        check=_bootstrap_check,
        # Dots are everywhere in logs: the stdlib engine scans for this pattern twice as fast.
        scan=re.compile(rb"\.(?P<v>[a-z0-9]{16})(?![a-z0-9])"),
    ),
    _d(
        "url-password",
        rb"://(?P<user>[^\s/:@'\"<>]*):(?P<v>[^\s/@'\"<>]+)@",
        rb"[^\s/@'\"<>]*",
        (b"://",),
        groups=("v",),
        prefix=rb"://[^\s/:@'\"<>]*:",
        check=_value_check("v"),
    ),
    _d(
        "authorization-header",
        rb"authorization[\"']?[ \t]{0,5}[:=][ \t]{0,5}[\"']?"
        rb"(?:(?:basic|bearer|token|digest|negotiate|aws4-hmac-sha256)[ \t]+)?(?P<v>[^\s\"',;]+)",
        rb"[^\s\"',;]*",
        (b"authorization",),
        groups=("v",),
        prefix=rb"authorization[\"']?[ \t]{0,5}[:=][ \t]{0,5}[\"']?"
        rb"(?:(?:basic|bearer|token|digest|negotiate|aws4-hmac-sha256)[ \t]+)?",
        lower=True,
        check=_value_check("v"),
    ),
    _d(
        "bearer-token",
        rb"bearer[ \t]+(?P<v>[a-z0-9._~+/-]{16,}=*)",
        rb"[A-Za-z0-9._~+/=-]*",
        (b"bearer",),
        groups=("v",),
        prefix=rb"bearer[ \t]+",
        lower=True,
    ),
    _d(
        "docker-auth",
        rb"\"auth\"[ \t]{0,5}:[ \t]{0,5}\"(?P<v>[a-z0-9+/=]{8,})\"",
        rb"[A-Za-z0-9+/=]*",
        (b'"auth"',),
        groups=("v",),
        prefix=rb"\"auth\"[ \t]{0,5}:[ \t]{0,5}\"",
        lower=True,
    ),
    _keyword(rb"pass(?:w(?:or)?d|phrase)", (b"passw", b"passphrase")),
    # ``DB_PASS=``, ``pass = `` (ini), ``MYSQL_PWD=``, ``pwd: ``: whole words only (not ``bypass``).
    _keyword(rb"(?:pass|pwd)(?![a-z])", (b"pass", b"pwd"), before=rb"(?<![a-z])"),
    _keyword(rb"secret", (b"secret",)),
    _keyword(rb"token", (b"token",)),
    _keyword(rb"credential", (b"credential",)),
    _keyword(
        rb"key",
        (b"key",),
        before=rb"(?<=(?:api|private|client|access|auth|signing|encryption|master|account|ssh|secret)[-_.]?)",
    ),
)

BUILTIN_NAMES: tuple[str, ...] = tuple(dict.fromkeys(d.name for d in BUILTIN))


class Hit(NamedTuple):
    """One match: its extent, the part to mask, and whether more data could still change it."""

    start: int
    end: int
    mask_start: int
    mask_end: int
    detector: Detector
    open: bool  # reaches the end of the data (a longer match may follow)
    partial: bool  # not a match yet, but the data ends inside a possible one


class DetectorConfigError(ValueError):
    """A detector configuration that cannot be used (unknown name, bad regex)."""


_EXTRA_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def _extra_detector(spec: Mapping) -> Detector:
    name = spec.get("name")
    pattern = spec.get("pattern")
    if not isinstance(name, str) or not _EXTRA_NAME.fullmatch(name):
        raise DetectorConfigError("extra detector name must be lower-case letters, digits and '-'")
    if name in BUILTIN_NAMES:
        raise DetectorConfigError(f'extra detector "{name}" clashes with a built-in detector')
    if not isinstance(pattern, str) or not pattern:
        raise DetectorConfigError(f'extra detector "{name}" needs a non-empty "pattern"')
    flags = regex.IGNORECASE if spec.get("ignore_case", False) else 0
    try:
        compiled = regex.compile(pattern.encode(), flags)
    except (regex.error, UnicodeEncodeError) as exc:
        raise DetectorConfigError(f'extra detector "{name}": invalid pattern ({exc})') from None
    if compiled.fullmatch(b"") is not None:
        raise DetectorConfigError(f'extra detector "{name}": pattern matches the empty string')
    groups = ("secret",) if "secret" in compiled.groupindex else ()
    return Detector(
        name=name, pattern=compiled, continuation=_ANY_TOKEN, needles=(), groups=groups,
        partial_window=MAX_SECRET_BYTES,
        multiline=True,
    )


# Detectors.mask_path remembers at most this many paths of at most this length.
PATHS_KEPT, PATHS_KEPT_LENGTH = 1024, 512


class Detectors:
    """An immutable selection of detectors (built-in by name, plus extra regexes).

    ``from_config`` takes ``{"enabled": [...] | "all", "disabled": [...], "extra": [{"name":
    ..., "pattern": ..., "ignore_case": bool}]}``; an extra pattern's named group ``secret``,
    if present, is the part that gets masked.  ``Detectors.default()`` enables every built-in.
    """

    __slots__ = ("_detectors", "_names", "_needs_lower", "_keyword", "_cut_needles", "_longest_needle", "_values",
                 "_needles", "_owners", "_unanchored", "_with_values", "_paths")

    def __init__(self, detectors: Iterable[Detector] = ()):
        self._values = None
        self._with_values = None  # (values, self with them): the last with_values, made once
        self._paths: dict[str, str] = {}  # mask_path's: request paths as masked by these detectors
        self._detectors = tuple(detectors)
        self._names = frozenset(d.name for d in self._detectors)
        self._needs_lower = any(d.lower or d.needles for d in self._detectors)
        self._keyword = "keyword" in self._names
        # Proper prefixes of needles -> detectors: a buffer ending in one may be cut inside a needle.
        self._cut_needles: dict[bytes, list[int]] = {}
        for index, det in enumerate(self._detectors):
            for needle in det.needles:
                for k in range(1, len(needle)):
                    holders = self._cut_needles.setdefault(needle[:k], [])
                    if index not in holders:
                        holders.append(index)
        self._longest_needle = max((len(k) for k in self._cut_needles), default=0)
        # Every needle in one multi-pattern pass: which detectors can match, and where they can start.
        owners: dict[bytes, list[int]] = {}
        for index, det in enumerate(self._detectors):
            for needle in det.needles:
                owners.setdefault(needle, []).append(index)
        self._owners = [tuple(v) for v in owners.values()]
        self._unanchored = tuple(i for i, det in enumerate(self._detectors) if not det.needles)
        self._needles = Literals(list(owners))

    @classmethod
    def default(cls) -> Detectors:
        return _DEFAULT

    @classmethod
    def none(cls) -> Detectors:
        return _NONE

    @classmethod
    def from_config(cls, config: Mapping | None) -> Detectors:
        """Build from a connection's or rule's settings; None or {} means the defaults."""
        if not config:
            return _DEFAULT
        if not isinstance(config, Mapping):
            raise DetectorConfigError("detector configuration must be an object")
        unknown_keys = set(config) - {"enabled", "disabled", "extra"}
        if unknown_keys:
            raise DetectorConfigError(f"unknown detector settings: {', '.join(sorted(unknown_keys))}")
        enabled = config.get("enabled", "all")
        if enabled == "all":
            names = set(BUILTIN_NAMES)
        elif isinstance(enabled, list) and all(isinstance(n, str) for n in enabled):
            names = set(enabled)
        else:
            raise DetectorConfigError('"enabled" must be "all" or a list of detector names')
        disabled = config.get("disabled", [])
        if not isinstance(disabled, list) or not all(isinstance(n, str) for n in disabled):
            raise DetectorConfigError('"disabled" must be a list of detector names')
        unknown = (names | set(disabled)) - set(BUILTIN_NAMES)
        if unknown:
            raise DetectorConfigError(f"unknown detectors: {', '.join(sorted(unknown))}")
        names -= set(disabled)
        extra = config.get("extra", [])
        if not isinstance(extra, list) or not all(isinstance(e, Mapping) for e in extra):
            raise DetectorConfigError('"extra" must be a list of {"name", "pattern"} objects')
        extras = [_extra_detector(e) for e in extra]
        if len({e.name for e in extras}) != len(extras):
            raise DetectorConfigError("extra detector names must be unique")
        return cls([d for d in BUILTIN if d.name in names] + extras)

    def with_values(self, values) -> Detectors:
        """These detectors plus exact matching of the cluster's Secret values
        (:class:`masking.values.SecretValues`); ``self`` when there are none.  Every request
        asks with the values current then, so the last pair is kept: the same object until they change."""
        if not values:
            return self
        kept = self._with_values
        if kept is not None and kept[0] is values:
            return kept[1]
        copy = object.__new__(Detectors)
        for slot in Detectors.__slots__:
            setattr(copy, slot, getattr(self, slot))
        copy._values, copy._with_values, copy._paths = values, None, {}
        self._with_values = (values, copy)
        return copy

    @property
    def enabled(self) -> bool:
        return bool(self._detectors) or self._values is not None

    @property
    def names(self) -> frozenset[str]:
        return self._names

    def __repr__(self) -> str:
        return f"Detectors({sorted(self._names)})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Detectors) and self._detectors == other._detectors and self._values is other._values

    def __hash__(self) -> int:
        return hash((self._detectors, id(self._values)))

    # -- matching ----------------------------------------------------------------------------

    def find(self, data: bytes, *, partial: bool = False, low: bytes | None = None) -> list[Hit]:
        """Every detector's matches in ``data`` (overlaps included; ``apply_masks`` merges them).

        With ``partial``, each detector's earliest unfinished match (one the end of ``data``
        cuts off) is reported too, with ``partial`` set and an empty masked span.  ``low`` is
        ``data.lower()`` if the caller has it.

        One pass of the needle engine finds every needle; a detector's pattern is then tried
        only where one of its needles starts a match (``match`` there, left to right, skipping
        what the previous match covered: the same matches ``finditer`` finds), so the cost
        grows with the needles present, not with the number of detectors.
        """
        if low is None:
            low = data.lower() if self._needs_lower else data
        n = len(data)
        # Needle starts per detector.
        starts: dict[int, set[int]] = {}
        owners = self._owners
        for k, s, _ in self._needles.find(low):
            for i in owners[k]:
                found = starts.get(i)
                if found is None:
                    starts[i] = {s}
                else:
                    found.add(s)
        line_start = 0
        cut_needles: dict[int, list[int]] = {}
        if partial:
            line_start = low.rfind(b"\n") + 1
            cut = self._cut_needles
            for k in range(1, min(self._longest_needle, n) + 1):
                for index in cut.get(low[n - k :], ()):
                    cut_needles.setdefault(index, []).append(n - k)
            indexes = sorted(starts.keys() | cut_needles.keys() | set(self._unanchored))
        elif self._unanchored:
            indexes = sorted(starts.keys() | set(self._unanchored))
        else:
            indexes = sorted(starts)
        hits = []
        for index in indexes:
            det = self._detectors[index]
            src = low if det.lower else data
            last_end = 0
            needle_starts = starts.get(index, ())
            if det.needles:
                matches = _anchored(det, src, needle_starts)
            else:
                matches = (det.scan or det.pattern).finditer(src)
            for m in matches:
                last_end = m.end()
                if det.check is not None and not det.check(m, src):
                    continue
                start, end = m.span()
                ms, me = start, end
                for g in det.groups:
                    gs, ge = m.span(g)
                    if gs >= 0:
                        ms, me = gs, ge
                        break
                hits.append(Hit(start, end, ms, me, det, end >= n, False))
            if partial:
                lo = last_end if det.multiline else max(last_end, line_start)
                m = _unfinished(det, src, lo, needle_starts, cut_needles.get(index, ()))
                if m is not None:
                    hits.append(Hit(m.start(), n, n, n, det, True, True))
        if self._values is not None:
            hits.extend(self._values.hits(data, partial))
        return hits

    @staticmethod
    def forced_span(hit: Hit, data: bytes, low: bytes) -> tuple[int, int]:
        """The masked span of an unfinished match when it must be released now.

        From where its secret part starts to the end of ``data``; empty while the match has
        not reached its secret part (``password`` without ``=``, ``gh`` that may become
        ``ghp_``), because then nothing secret has been seen yet.
        """
        det = hit.detector
        if not hit.partial or not det.swallow:  # a value's partial hit carries its forced span
            return hit.mask_start, hit.mask_end
        n = len(data)
        if det.needles and not any(needle in low[hit.start : n] for needle in det.needles):
            return n, n
        if det.prefix is None:
            return hit.start, n
        m = det.prefix.match(low if det.lower else data, hit.start)
        return (m.end(), n) if m is not None else (n, n)

    def mask_bytes(self, data: bytes, counts: dict[str, int]) -> bytes:
        """Mask a complete text (not a stream); ``counts`` gets one per masked value."""
        if not self.enabled:
            return data
        hits = self.find(data)
        if not hits:
            return data
        return apply_masks(data, hits, 0, len(data), counts)

    def mask_text(self, text: str, counts: dict[str, int]) -> str:
        """Mask a string value (JSON field, annotation, message); unchanged text is returned as is."""
        if not self.enabled or not text:
            return text
        data = text.encode("utf-8", "surrogatepass")
        masked = self.mask_bytes(data, counts)
        if masked is data:
            return text
        return masked.decode("utf-8", "replace")

    def mask_path(self, path: str) -> str:
        """``mask_text(path)`` for a request path, remembered for the paths seen last (agents repeat
        theirs): what a path masks to depends only on it and these detectors (values included)."""
        masked = self._paths.get(path)
        if masked is None:
            masked = self.mask_text(path, {})
            if len(path) <= PATHS_KEPT_LENGTH:
                if len(self._paths) >= PATHS_KEPT:
                    self._paths.clear()
                self._paths[path] = masked
        return masked

    def mask_pair(self, name: str, value: str, counts: dict[str, int]) -> str:
        """A named value (env var, ConfigMap key): a secret-looking name masks the whole value."""
        if self._keyword and name_is_secret(name) and not _trivial(value.encode("utf-8", "replace")):
            counts["keyword"] = counts.get("keyword", 0) + 1
            return PLACEHOLDER
        return self.mask_text(value, counts)

    def mask_argv(self, argv: list, counts: dict[str, int]) -> None:
        """Mask a command/args list in place: values, and the word after ``--password``-like flags."""
        secret_flag = False
        for i, arg in enumerate(argv):
            if not isinstance(arg, str):
                secret_flag = False
                continue
            if secret_flag and not arg.startswith("-") and not _trivial(arg.encode("utf-8", "replace")):
                counts["keyword"] = counts.get("keyword", 0) + 1
                argv[i] = PLACEHOLDER
                secret_flag = False
                continue
            secret_flag = self._keyword and bool(_FLAG.fullmatch(arg)) and name_is_secret(arg.lstrip("-"))
            argv[i] = self.mask_text(arg, counts)


_DEFAULT = Detectors(BUILTIN)
_NONE = Detectors(())


def _anchored(det: Detector, src: bytes, needle_starts) -> list[regex.Match]:
    """What ``det.pattern.finditer(src)`` finds, tried only where a needle starts a match."""
    out = []
    last_end = 0
    offset = det.needle_offset
    pattern = det.pattern
    for i in sorted(needle_starts):
        start = i - offset
        if start < last_end:
            continue
        m = pattern.match(src, start)
        if m is not None:
            out.append(m)
            last_end = m.end()
    return out


def _unfinished(det: Detector, src: bytes, lo: int, needle_starts, cut_needles) -> regex.Match | None:
    """The earliest match of ``det`` starting at or after ``lo`` that the end of ``src`` cuts off.

    Such a match starts at a needle (``needle_starts``: where the needles are in the data), or
    at a needle cut off by the end of the data (positions in ``cut_needles``), so only those
    places are tried, each with an anchored partial match.  Only a multi-line detector can have
    one that started before the last line.
    """
    n = len(src)
    if not det.needles:
        m = det.pattern.search(src, max(lo, n - det.partial_window), partial=True)
        return m if m is not None and m.partial else None
    offset = det.needle_offset
    first = lo - offset
    starts = {i for i in needle_starts if i >= first}
    starts.update(cut_needles)
    for i in sorted(starts):
        for start in range(max(lo, i - offset), i + 1):
            m = det.pattern.match(src, start, partial=True)
            if m is not None and m.partial:
                return m
    return None


def apply_masks(
    data: bytes, hits: Iterable[Hit], lo: int, hi: int, counts: dict[str, int]
) -> bytes:
    """Replace the masked spans of ``hits`` that fall in ``[lo, hi)`` and return ``data[lo:hi]``.

    Overlapping spans merge into one placeholder, counted once under the first detector.
    """
    spans = []
    for hit in hits:
        ms, me = max(hit.mask_start, lo), min(hit.mask_end, hi)
        if ms < me:
            spans.append((ms, me, hit.detector.name))
    if not spans:
        return data[lo:hi]
    spans.sort()
    out = []
    pos = lo
    cur_s, cur_e, cur_name = spans[0]
    for s, e, name in spans[1:]:
        if s <= cur_e:
            cur_e = max(cur_e, e)
            continue
        out.append(data[pos:cur_s])
        out.append(PLACEHOLDER_BYTES)
        counts[cur_name] = counts.get(cur_name, 0) + 1
        pos = cur_e
        cur_s, cur_e, cur_name = s, e, name
    out.append(data[pos:cur_s])
    out.append(PLACEHOLDER_BYTES)
    counts[cur_name] = counts.get(cur_name, 0) + 1
    out.append(data[cur_e:hi])
    return b"".join(out)
