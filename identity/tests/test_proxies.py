"""Trusted proxies without sockets: the Impersonate-* headers read as kube-apiserver reads them, and
what a registered proxy may assert (identity.proxies)."""

import pytest

from identity.principal import Principal
from identity.proxies import (Asserted, ImpersonationRefused, ProxyGrant, act_for, asserted_issuer, path_unescape,
                              read_headers)
from kube.headers import request_headers

IDP = "https://idp.test"
PROXY = Principal(subject="mcp-server", username="mcp-server", groups=("mcp-proxies",), issuer=IDP,
                  expires_at=2e9, token_id="jti-1")
AGENT = Principal(subject="agent-1", username="agent-1", groups=("agents",), issuer=IDP, expires_at=2e9,
                  token_id="jti-2")
GRANT = ProxyGrant(name="mcp", issuer=IDP, subject="mcp-server", users=("*@example.com",), groups=("team-*",))


def raw(*pairs):
    """Headers as the gateway parses them from the wire (kube.headers.request_headers: names lower-cased)."""
    return request_headers([(name.encode(), value.encode()) for name, value in pairs])


def refused(headers, principal=PROXY, grants=(GRANT,)) -> ImpersonationRefused:
    with pytest.raises(ImpersonationRefused) as caught:
        act_for(principal, raw(*headers), grants, "prod")
    return caught.value


# -- reading the headers ---------------------------------------------------------------------


def test_names_are_read_in_any_case_and_each_group_field_is_one_group():
    asserted = read_headers(raw(("IMPERSONATE-USER", "alice@example.com"), ("impersonate-group", "team-a,team-b"),
                                ("Impersonate-Group", "team-c")))
    assert asserted.users == ("alice@example.com",)
    assert asserted.groups == ("team-a,team-b", "team-c")  # a comma is part of a group's name, as in Go
    assert asserted.names == ("Impersonate-User", "Impersonate-Group")


@pytest.mark.parametrize("key, decoded", [
    ("example.com%2Fscopes", "example.com/scopes"),  # client-go escapes '/' in a key
    ("Scopes", "scopes"),  # lower-cased before it is decoded
    ("%41cme", "Acme"),  # ... so an escaped capital stays one
    ("a%zzb%2F", "a%zzb%2f"),  # a malformed escape: the key is kept as sent (lower-cased)
    ("a%2", "a%2"),
    ("a+b", "a+b"),  # a plus is not a space in a path
    ("caf%C3%A9", "café"),
])
def test_extra_keys_are_lower_cased_then_path_unescaped_like_go(key, decoded):
    asserted = read_headers(raw(("Impersonate-User", "alice@example.com"), (f"Impersonate-Extra-{key}", "v")))
    assert asserted.extra == ((decoded, "v"),)


def test_path_unescape_of_a_byte_that_is_not_utf8_is_shown_not_dropped():
    assert path_unescape("%ff") == "\\xff"


def test_unknown_impersonate_names_are_collected():
    asserted = read_headers(raw(("Impersonate-Useer", "x"), ("impersonate-", "y")))
    assert asserted.others == ("Impersonate-Useer", "Impersonate-") and asserted.users == ()
    assert not read_headers(raw(("Impersonate_User", "x"), ("X-Impersonate-User", "y")))
    assert read_headers(raw(("Impersonate_User", "x"))) == Asserted()


# -- malformed: as kube-apiserver answers, and stricter where a reading would be ambiguous ----------


@pytest.mark.parametrize("headers, words", [
    ([("Impersonate-Group", "team-a")], "requested [Group=team-a] without impersonating a user"),
    ([("Impersonate-Uid", "1234")], "requested [UID=1234] without impersonating a user"),
    ([("Impersonate-Extra-Scopes", "all")], "requested [Extra[scopes]] without impersonating a user"),
    ([("Impersonate-User", ""), ("Impersonate-Group", "team-a")], "without impersonating a user"),
    ([("Impersonate-User", "alice@example.com"), ("impersonate-user", "mallory@example.com")],
     "Impersonate-User is sent 2 times"),
    ([("Impersonate-User", "")], "Impersonate-User is empty"),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Group", "")], "an Impersonate-Group header is empty"),
])
def test_malformed_assertions_from_a_trusted_proxy_are_a_400(headers, words):
    error = refused(headers)
    assert error.code == 400 and words in error.message


def test_an_extras_value_is_never_echoed_it_may_be_a_credential():
    error = refused([("Impersonate-Extra-Token", "sekrit-bearer-0123"), ("Impersonate-Group", "team-a")])
    assert error.code == 400 and "sekrit-bearer-0123" not in error.message and "Extra[token]" in error.message
    error = refused([("Impersonate-User", "alice@example.com"), ("Impersonate-Extra-Token", "sekrit-bearer-0123")])
    assert error.code == 403 and "sekrit-bearer-0123" not in error.message


# -- who may assert what ---------------------------------------------------------------------


def test_without_impersonation_headers_the_holder_acts_as_itself():
    assert act_for(PROXY, raw(("User-Agent", "x")), (GRANT,), "prod") is PROXY
    assert act_for(AGENT, raw(), (), "prod") is AGENT


def test_a_trusted_proxy_acts_for_an_end_user_it_may_assert():
    user = act_for(PROXY, raw(("Impersonate-User", "alice@example.com"), ("Impersonate-Group", "team-a"),
                              ("Impersonate-Group", "team-b"), ("Impersonate-Group", "team-a")), (GRANT,), "prod")
    assert (user.username, user.subject, user.groups) == ("alice@example.com", "alice@example.com",
                                                          ("team-a", "team-b"))
    assert user.proxy is PROXY and user.expires_at == PROXY.expires_at
    # The issuer names the proxy: never a real issuer (those have no fragment), so no approval, lease
    # with an issuer or audit session of a token holder called alice is hers through the proxy.
    assert user.issuer == asserted_issuer(PROXY) == "https://idp.test#proxy=mcp-server"
    assert user.issuer != IDP


def test_an_agent_that_is_no_registered_proxy_keeps_the_403_naming_impersonation():
    error = refused([("Impersonate-User", "alice@example.com"), ("impersonate-group", "team-a")], principal=AGENT)
    assert error.code == 403
    assert error.message.startswith("airlock: impersonation is not allowed through this gateway (the request carries "
                                     "Impersonate-User, Impersonate-Group)")
    assert '"agent-1"' in error.message
    # Malformed or not: a stranger learns nothing more than that impersonation is refused.
    assert refused([("Impersonate-Group", "system:masters")], principal=AGENT).code == 403


@pytest.mark.parametrize("grant", [
    ProxyGrant(name="x", issuer="https://other.test", subject="mcp-server", users=("*",)),  # same subject, other issuer
    ProxyGrant(name="x", issuer=IDP, subject="mcp-server-2", users=("*",)),
    ProxyGrant(name="x", issuer=IDP, group="other-proxies", users=("*",)),
    ProxyGrant(name="x", issuer=IDP, subject="mcp-server", group="other-proxies", users=("*",)),  # both must hold
    ProxyGrant(name="x", issuer=IDP, users=("*",)),  # identifies nobody
])
def test_a_registration_names_its_proxy_exactly(grant):
    assert not grant.admits(PROXY)
    assert refused([("Impersonate-User", "alice@example.com")], grants=(grant,)).message.startswith(
        "airlock: impersonation is not allowed")


def test_a_registration_by_group_admits_every_member_of_that_issuer():
    grant = ProxyGrant(name="members", issuer=IDP, group="mcp-proxies", users=("*",))
    assert grant.admits(PROXY) and not grant.admits(AGENT)
    assert act_for(PROXY, raw(("Impersonate-User", "bob")), (grant,), "prod").username == "bob"


def test_an_asserted_user_is_never_a_proxy_itself():
    user = act_for(PROXY, raw(("Impersonate-User", "mcp-server@example.com")), (GRANT,), "prod")
    assert not GRANT.admits(user)
    assert not ProxyGrant(name="x", issuer=user.issuer, subject=user.subject, users=("*",)).admits(user)


@pytest.mark.parametrize("headers, words", [
    ([("Impersonate-User", "mallory@evil.test")], 'may not assert user "mallory@evil.test"'),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Group", "admins")], 'may not assert group "admins"'),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Group", "team-a"), ("Impersonate-Group", "ops"),
      ("Impersonate-Group", "root")], 'may not assert groups "ops", "root"'),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Group", "admins,team-a")],
     'may not assert group "admins,team-a"'),  # one group, not a list
    ([("Impersonate-User", "ALICE@EXAMPLE.COM")], 'may not assert user "ALICE@EXAMPLE.COM"'),  # globs match case
    ([("Impersonate-User", "alice@example.com.evil.test")], "may not assert user"),
])
def test_what_the_proxy_may_not_assert_is_a_403_naming_it(headers, words):
    error = refused(headers)
    assert error.code == 403 and words in error.message
    assert 'proxy "mcp-server" (registered as "mcp" on connection "prod")' in error.message


@pytest.mark.parametrize("headers, words", [
    ([("Impersonate-User", "system:admin")], 'user "system:admin"'),
    ([("Impersonate-User", "system:serviceaccount:airlock:airlock")], 'user "system:serviceaccount:airlock:airlock"'),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Group", "system:masters")], 'group "system:masters"'),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Group", "system:authenticated")],
     'group "system:authenticated"'),
])
def test_system_names_are_never_asserted_whatever_the_patterns(headers, words):
    everything = ProxyGrant(name="mcp", issuer=IDP, subject="mcp-server", users=("*",), groups=("*",))
    error = refused(headers, grants=(everything,))
    assert error.code == 403 and words in error.message and 'starting with "system:"' in error.message


@pytest.mark.parametrize("headers, named", [
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Uid", "1234")], "Impersonate-Uid"),
    ([("Impersonate-User", "alice@example.com"), ("impersonate-extra-scopes", "all")], "Impersonate-Extra-Scopes"),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Extra-example.com%2Fteam", "a")],
     "Impersonate-Extra-Example.com%2fteam"),
    ([("Impersonate-User", "alice@example.com"), ("Impersonate-Useer", "x")], "Impersonate-Useer"),
    ([("Impersonate-Useer", "x")], "Impersonate-Useer"),  # kube-apiserver would ignore it: never silently
])
def test_uid_extra_and_unknown_impersonation_headers_are_refused_not_dropped(headers, named):
    error = refused(headers)
    assert error.code == 403 and "may send Impersonate-User and Impersonate-Group only" in error.message
    assert named in error.message


def test_of_several_registrations_one_must_allow_the_whole_assertion():
    users = ProxyGrant(name="a-users", issuer=IDP, subject="mcp-server", users=("alice@example.com",))
    groups = ProxyGrant(name="b-groups", issuer=IDP, group="mcp-proxies", users=("bob@example.com",),
                        groups=("ops",))
    assert act_for(PROXY, raw(("Impersonate-User", "alice@example.com")), (users, groups), "prod").groups == ()
    assert act_for(PROXY, raw(("Impersonate-User", "bob@example.com"), ("Impersonate-Group", "ops")),
                   (users, groups), "prod").groups == ("ops",)
    error = refused([("Impersonate-User", "alice@example.com"), ("Impersonate-Group", "ops")], grants=(users, groups))
    assert error.code == 403 and 'may not assert group "ops"' in error.message


def test_globs_are_the_rules_globs():
    grant = ProxyGrant(name="g", issuer=IDP, subject="mcp-server", users=("dev-?", "[x]*"))
    assert grant.refusal("dev-1", ()) is None and grant.refusal("dev-12", ()) is not None
    assert grant.refusal("[x]yz", ()) is None and grant.refusal("xyz", ()) is not None
