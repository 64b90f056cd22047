"""Trusted proxies: a registered proxy (an MCP server serving its own users, for example) may name
the end user it acts for with ``Impersonate-User`` and ``Impersonate-Group``; nobody else may.

Sans-IO and free of Django: the connection registry (connections.registry) turns a connection's
registrations (connections.models.TrustedProxy) into :class:`ProxyGrant` values, and the gateway's
authenticate stage (gateway.authn) calls :func:`act_for` with the request's headers.

The headers are read as kube-apiserver reads them (``apiserver: pkg/endpoints/filters/impersonation``):
names in any case, one group per ``Impersonate-Group`` field (a comma is part of the name, never a
separator), ``Impersonate-Extra-<key>`` keys lower-cased then percent-decoded as Go's
``url.PathUnescape`` does (a malformed escape keeps the key as sent), and a group, uid or extra
without a user is a 400.  Stricter on purpose, never looser: a repeated or empty
``Impersonate-User`` and an empty group are 400s (kube-apiserver reads the first user and would run
an empty one as the proxy itself), ``Impersonate-Uid``, ``Impersonate-Extra-*`` and any other
``Impersonate-*`` name are refused (Airlock's rules and its identity at the cluster know users and
groups only: a claim that would change nothing is refused, never silently dropped), and no name
starting with ``system:`` (``system:masters``, service accounts, the gateway's own identity at the
cluster) can be asserted whatever the registration's patterns say.

The end user is a :class:`~identity.principal.Principal` whose ``proxy`` is the proxy's own: the
connection's rules are evaluated for the end user only (the proxy's rules grant it nothing), and
its ``issuer`` names the proxy (:func:`asserted_issuer`), so approvals, leases with an issuer and
audit sessions of a user asserted by a proxy are never those of a token holder of the same name.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from dataclasses import dataclass
from urllib.parse import quote

from identity.principal import Principal

USER, GROUP, UID = "impersonate-user", "impersonate-group", "impersonate-uid"
EXTRA_PREFIX = "impersonate-extra-"
RESERVED_PREFIX = "system:"
_HEX = frozenset("0123456789abcdefABCDEF")


class ImpersonationRefused(Exception):
    """An assertion the gateway refuses: ``code`` 400 (malformed, as kube-apiserver answers) or 403."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def canonical(name: str) -> str:
    """``impersonate-extra-foo`` -> ``Impersonate-Extra-Foo``: a header name as kubectl sends it."""
    return "-".join(part.capitalize() for part in name.split("-"))


def path_unescape(text: str) -> str:
    """Go's ``url.PathUnescape``, as kube-apiserver decodes an extra key: every ``%`` must start two hex
    digits, else the key is kept as sent (``unescapeExtraKey``); ``+`` stays a plus."""
    out, i = bytearray(), 0
    raw = text.encode("utf-8")
    while i < len(raw):
        if raw[i] == 0x25:  # %
            pair = raw[i + 1:i + 3].decode("latin-1")
            if len(pair) != 2 or not set(pair) <= _HEX:
                return text
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Asserted:
    """What a request's ``Impersonate-*`` headers ask for, read as kube-apiserver reads them."""

    users: tuple[str, ...] = ()  # every Impersonate-User value (kube-apiserver reads the first)
    groups: tuple[str, ...] = ()
    uids: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = ()  # (decoded key, value), in order
    others: tuple[str, ...] = ()  # Impersonate-* names kube-apiserver does not know, canonical form
    names: tuple[str, ...] = ()  # every Impersonate-* name the request carries, canonical, first seen first

    def __bool__(self) -> bool:
        return bool(self.names)


def read_headers(headers) -> Asserted:
    """The ``Impersonate-*`` fields of ``headers`` ((lower-case name, value) pairs, as parsed)."""
    users, groups, uids, extra, others, names = [], [], [], [], [], []
    for name, value in headers:
        if not name.startswith("impersonate-"):
            continue
        shown = canonical(name)
        if shown not in names:
            names.append(shown)
        if name == USER:
            users.append(value)
        elif name == GROUP:
            groups.append(value)
        elif name == UID:
            uids.append(value)
        elif name.startswith(EXTRA_PREFIX):
            extra.append((path_unescape(name[len(EXTRA_PREFIX):]), value))
        elif shown not in others:
            others.append(shown)
    return Asserted(tuple(users), tuple(groups), tuple(uids), tuple(extra), tuple(others), tuple(names))


def check_form(asserted: Asserted) -> None:
    """400 for what kube-apiserver refuses as malformed, and for what Airlock reads more strictly."""
    user = asserted.users[0] if asserted.users else ""
    if not user and (asserted.groups or asserted.uids or asserted.extra):
        requested = ([f"Group={g}" for g in asserted.groups] + [f"UID={u}" for u in asserted.uids[:1]]
                     + [f"Extra[{k}]" for k, _ in asserted.extra])  # never an extra's value: it may be a credential
        raise ImpersonationRefused(400, f"airlock: requested [{', '.join(requested)}] without impersonating a user "
                                        "(Impersonate-User)")
    if len(asserted.users) > 1:
        raise ImpersonationRefused(400, f"airlock: Impersonate-User is sent {len(asserted.users)} times; "
                                        "a request acts for one user")
    if asserted.users and not user:
        raise ImpersonationRefused(400, "airlock: Impersonate-User is empty")
    if any(not group for group in asserted.groups):
        raise ImpersonationRefused(400, "airlock: an Impersonate-Group header is empty")


def _glob(pattern: str) -> re.Pattern[str]:
    """``*`` and ``?`` as in rules (policy.globs); ``[`` is literal."""
    return re.compile(fnmatch.translate(pattern.replace("[", "[[]")))


@functools.lru_cache(maxsize=4096)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(_glob(p) for p in patterns)


def matches_any(patterns: tuple[str, ...], value: str) -> bool:
    return any(regex.match(value) for regex in _compiled(patterns))


@dataclass(frozen=True)
class ProxyGrant:
    """One registration of a trusted proxy on one connection (connections.models.TrustedProxy).

    The proxy is the holder of a valid token from ``issuer`` whose subject is ``subject`` and/or
    who is in ``group`` (both, when both are set).  It may assert users matching ``users`` and
    groups matching ``groups`` (globs); an empty ``groups`` lets it assert users without groups.
    """

    name: str
    issuer: str
    subject: str = ""
    group: str = ""
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def admits(self, principal: Principal) -> bool:
        """Whether ``principal`` (a token's holder, never an asserted user) is this proxy."""
        if principal.proxy is not None or principal.issuer != self.issuer or not (self.subject or self.group):
            return False
        if self.subject and principal.subject != self.subject:
            return False
        return not self.group or self.group in principal.groups

    def refusal(self, user: str, groups: tuple[str, ...]) -> str | None:
        """Why this proxy may not assert ``user`` with ``groups``; None when it may."""
        if not matches_any(self.users, user):
            return f"user {json.dumps(user)}"
        outside = [g for g in groups if not matches_any(self.groups, g)]
        if outside:
            return f"group{'s' if len(outside) > 1 else ''} {', '.join(json.dumps(g) for g in outside)}"
        return None


def asserted_issuer(proxy: Principal) -> str:
    """The issuer of a user a proxy asserts: the proxy's issuer with the proxy's subject as a fragment.
    An OpenID issuer never has a fragment, so this names no real issuer."""
    return f"{proxy.issuer}#proxy={quote(proxy.subject, safe='')}"


def act_for(principal: Principal, headers, grants, connection: str) -> Principal:
    """The identity a request acts as: ``principal`` itself without ``Impersonate-*`` headers, else the
    end user a trusted proxy asserts.  ImpersonationRefused for anything else (403 for a caller that is
    no registered proxy on ``connection``, with the message every agent asking for impersonation gets)."""
    for name, _ in headers:
        if name.startswith("impersonate-"):
            break
    else:
        return principal  # every request passes here: no parsing unless the prefix is there
    asserted = read_headers(headers)
    mine = [grant for grant in grants if grant.admits(principal)]
    if not mine:
        raise ImpersonationRefused(
            403,
            f"airlock: impersonation is not allowed through this gateway (the request carries "
            f"{', '.join(asserted.names)}); requests run as the agent's own identity {json.dumps(principal.username)}: "
            "drop --as, --as-group and --as-uid",
        )
    check_form(asserted)
    who = f"proxy {json.dumps(principal.username)} (registered as {json.dumps(mine[0].name)} on connection {json.dumps(connection)})"
    unsupported = [n for n in asserted.names if n not in ("Impersonate-User", "Impersonate-Group")]
    if unsupported:
        raise ImpersonationRefused(403, f"airlock: {who} may send Impersonate-User and Impersonate-Group only; "
                                        f"the request also carries {', '.join(unsupported)}")
    user, groups = asserted.users[0], tuple(dict.fromkeys(asserted.groups))
    reserved = [f"user {json.dumps(user)}"] if user.startswith(RESERVED_PREFIX) else []
    reserved += [f"group {json.dumps(g)}" for g in groups if g.startswith(RESERVED_PREFIX)]
    if reserved:
        raise ImpersonationRefused(403, f"airlock: {who} may not assert {', '.join(reserved)}: names starting with "
                                        f'"{RESERVED_PREFIX}" are never asserted through the gateway')
    refusals = []
    for grant in sorted(mine, key=lambda g: g.name):
        refused = grant.refusal(user, groups)
        if refused is None:
            return Principal(subject=user, username=user, groups=groups, issuer=asserted_issuer(principal),
                             expires_at=principal.expires_at, token_id=principal.token_id, proxy=principal)
        refusals.append(refused)
    raise ImpersonationRefused(403, f"airlock: {who} may not assert {refusals[0]}")
