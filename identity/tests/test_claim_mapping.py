"""Claims mapping for real providers' token shapes: nested claims, several groups claims, groups
overage, authorized parties, required claim values and static groups (docs/identity-providers.md).

Tokens are signed by the in-memory issuer of test_identity (real RS256 signatures, forged claims).
"""

import pytest

from identity.oidc_config import IssuerConfig
from identity.tests.test_identity import FAKE_ISSUER, clock, fake, make_auth, refused  # noqa: F401
from tests.idp.fixtures import AUDIENCE

OVERAGE = "token groups could not be read: the identity provider left them out of the token (groups overage)"


def auth_for(fake, clock, **mapping):
    """An authenticator trusting the fake issuer with this mapping (as settings JSON would give it)."""
    return make_auth(fake.transport, clock, IssuerConfig.from_mapping({"issuer": FAKE_ISSUER, "audience": AUDIENCE,
                                                                        **mapping}))


async def principal(fake, clock, claims, drop=("groups",), **mapping):
    return await auth_for(fake, clock, **mapping).authenticate(fake.token(claims=claims, drop=drop))


# -- nested claims ------------------------------------------------------------------------


async def test_groups_from_a_nested_claim(fake, clock):
    claims = {"realm_access": {"roles": ["airlock-reader", "offline_access"]}}
    found = await principal(fake, clock, claims, groups_claim="/realm_access/roles", groups_prefix="kc:")
    assert found.groups == ("kc:airlock-reader", "kc:offline_access")
    assert (await principal(fake, clock, {"realm_access": {}}, groups_claim="/realm_access/roles")).groups == ()


async def test_a_pointer_unescapes_slash_and_tilde(fake, clock):
    claims = {"https://example.com/a~b": {"x/y": ["ops"]}}
    assert (await principal(fake, clock, claims, groups_claim="/https:~1~1example.com~1a~0b/x~1y")).groups == ("ops",)


async def test_a_name_without_leading_slash_stays_literal(fake, clock):
    claims = {"realm_access.roles": ["literal"], "realm_access": {"roles": ["nested"]}}
    found = await principal(fake, clock, claims, groups_claim=["realm_access.roles", "/realm_access/roles"])
    assert found.groups == ("literal", "nested")


@pytest.mark.parametrize("claims", [{"realm_access": ["x"]}, {"realm_access": {"roles": {"a": 1}}},
                                    {"realm_access": {"roles": [""]}}])
async def test_a_nested_groups_claim_of_the_wrong_shape_is_refused(fake, clock, claims):
    auth = auth_for(fake, clock, groups_claim="/realm_access/roles")
    assert await refused(auth, fake.token(claims=claims)) == "token groups claim invalid"


async def test_username_from_a_nested_claim(fake, clock):
    claims = {"federated_claims": {"connector_id": "github", "user_id": "4242"}}
    found = await principal(fake, clock, claims, username_claim="/federated_claims/user_id", username_prefix="gh:")
    assert found.username == "gh:4242"
    auth = auth_for(fake, clock, username_claim="/federated_claims/user_id")
    assert await refused(auth, fake.token(claims={"federated_claims": "x"})) == "token username claim missing or invalid"


def test_claim_value_walks_objects_only():
    from identity.oidc_config import claim_value

    claims = {"a": {"b": {"c": 1}}, "l": [{"x": 1}]}
    assert claim_value(claims, "/a/b/c") == 1
    assert claim_value(claims, "a") == {"b": {"c": 1}}
    assert claim_value(claims, "/a/z") is claim_value(claims, "/z")
    assert claim_value(claims, "/l/0/x") is not claim_value(claims, "/z")  # through a list: invalid, not missing


# -- several groups claims ----------------------------------------------------------------------


async def test_groups_from_several_claims_are_joined(fake, clock):
    claims = {"groups": ["6f0e6c1a-guid"], "roles": ["Airlock.Reader", "6f0e6c1a-guid"]}
    found = await principal(fake, clock, claims, drop=(), groups_claim=["groups", "roles"], groups_prefix="entra:")
    assert found.groups == ("entra:6f0e6c1a-guid", "entra:Airlock.Reader")


async def test_roles_alone_when_the_groups_claim_is_absent(fake, clock):
    found = await principal(fake, clock, {"roles": ["Airlock.Reader"]}, groups_claim=["groups", "roles"])
    assert found.groups == ("Airlock.Reader",)


# -- groups overage ---------------------------------------------------------------------------


ENTRA_OVERAGE = {
    "_claim_names": {"groups": "src1"},
    "_claim_sources": {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}},
}


@pytest.mark.parametrize("claims", [ENTRA_OVERAGE, {"hasgroups": True}, {**ENTRA_OVERAGE, "groups": ["a"]}])
async def test_groups_overage_is_refused_not_read_as_no_groups(fake, clock, claims):
    token = fake.token(claims={**claims, "roles": ["Airlock.Reader"]}, drop=() if "groups" in claims else ("groups",))
    for groups_claim in ("groups", ["groups", "roles"]):
        auth = auth_for(fake, clock, groups_claim=groups_claim)
        assert await refused(auth, token) == OVERAGE


async def test_overage_of_a_nested_groups_claim_is_refused(fake, clock):
    claims = {"_claim_names": {"realm_access": "src1"}, "_claim_sources": {"src1": {"endpoint": "https://x.test"}}}
    assert await refused(auth_for(fake, clock, groups_claim="/realm_access/roles"),
                         fake.token(claims=claims)) == OVERAGE


async def test_overage_of_another_claim_does_not_matter(fake, clock):
    claims = {"_claim_names": {"address": "src1"}, "_claim_sources": {"src1": {"endpoint": "https://x.test"}}}
    assert (await principal(fake, clock, claims, drop=(), groups_claim=["groups", "roles"])).groups == ("dev",)
    assert (await principal(fake, clock, {"hasgroups": True, "realm_access": {"roles": ["r"]}}, drop=(),
                            groups_claim="/realm_access/roles")).groups == ("r",)


async def test_overage_ignored_only_when_configured(fake, clock):
    claims = {**ENTRA_OVERAGE, "roles": ["Airlock.Reader"]}
    found = await principal(fake, clock, claims, groups_claim=["groups", "roles"], groups_overage="ignore")
    assert found.groups == ("Airlock.Reader",)


# -- authorized party (azp) ----------------------------------------------------------------------


async def test_authorized_parties(fake, clock):
    auth = auth_for(fake, clock, authorized_parties=["deploy-bot", "triage-bot"])
    assert (await auth.authenticate(fake.token(claims={"azp": "deploy-bot"}))).subject == "mallory"
    for claims in ({"azp": "other-client"}, {"azp": ["deploy-bot"]}, {}):
        assert await refused(auth, fake.token(claims=claims)) == "token authorized party not accepted"
    assert (await principal(fake, clock, {"azp": "other-client"}, authorized_parties=[])).subject == "mallory"


async def test_authorized_party_in_another_claim(fake, clock):
    auth = auth_for(fake, clock, authorized_parties="0oa-agent", authorized_party_claim="cid")
    assert (await auth.authenticate(fake.token(claims={"cid": "0oa-agent", "azp": "x"}))).subject == "mallory"
    assert await refused(auth, fake.token(claims={"azp": "0oa-agent"})) == "token authorized party not accepted"


# -- required claim values and static groups --------------------------------------------------------


GOOGLE = {"required_claim_values": {"hd": "example.com", "email_verified": True}, "username_claim": "email",
          "static_groups": ["google:example.com"]}


async def test_required_claim_values_and_static_groups(fake, clock):
    claims = {"hd": "example.com", "email": "bot@example.com", "email_verified": True}
    found = await principal(fake, clock, claims, groups_prefix="ignored:", **GOOGLE)
    assert (found.username, found.groups) == ("bot@example.com", ("google:example.com",))


@pytest.mark.parametrize(("claims", "message"), [
    ({"hd": "evil.example", "email_verified": True}, "token claim hd not accepted"),
    ({"email_verified": True}, "token claim hd not accepted"),
    ({"hd": ["example.com"], "email_verified": True}, "token claim hd not accepted"),
    ({"hd": "example.com", "email_verified": "true"}, "token claim email_verified not accepted"),
    ({"hd": "example.com", "email_verified": 1}, "token claim email_verified not accepted"),
    ({"hd": "example.com"}, "token claim email_verified not accepted"),
])
async def test_required_claim_values_refuse_anything_else(fake, clock, claims, message):
    auth = auth_for(fake, clock, **GOOGLE)
    assert await refused(auth, fake.token(claims={"email": "bot@example.com", **claims})) == message


async def test_required_claim_values_lists_and_nested_claims(fake, clock):
    auth = auth_for(fake, clock, required_claim_values={"hd": ["a.example", "b.example"],
                                                        "/federated_claims/connector_id": "github"})
    ok = {"hd": "b.example", "federated_claims": {"connector_id": "github"}}
    assert (await auth.authenticate(fake.token(claims=ok))).subject == "mallory"
    bad = {"hd": "b.example", "federated_claims": {"connector_id": "local"}}
    assert await refused(auth, fake.token(claims=bad)) == "token claim /federated_claims/connector_id not accepted"


async def test_static_groups_join_claimed_groups(fake, clock):
    found = await principal(fake, clock, {}, drop=(), static_groups=["everyone-here", "dev"], groups_prefix="p:")
    assert found.groups == ("p:dev", "everyone-here", "dev")


# -- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("mapping", "error"), [
    ({"groups_claim": "/realm_access//roles"}, "JSON Pointer"),
    ({"groups_claim": "/"}, "JSON Pointer"),
    ({"username_claim": "/a~2b"}, "JSON Pointer"),
    ({"groups_claim": []}, "must not be empty"),
    ({"groups_claim": ["groups", ""]}, "non-empty strings"),
    ({"groups_overage": "maybe"}, "must be one of refuse, ignore"),
    ({"required_claim_values": ["hd"]}, "JSON object"),
    ({"required_claim_values": {"hd": []}}, "non-empty list"),
    ({"required_claim_values": {"hd": None}}, "string, boolean or integer"),
    ({"required_claim_values": {"hd": 1.5}}, "string, boolean or integer"),
    ({"required_claim_values": {"/a//b": "x"}}, "JSON Pointer"),
    ({"required_claims": ["/realm_access/roles"]}, "required_claim_values"),
    ({"authorized_parties": [""]}, "non-empty strings"),
    ({"authorized_party_claim": ""}, "non-empty string"),
    ({"static_groups": "a,b", "groups_claim": 3}, "groups_claim"),
])
def test_mapping_settings_are_validated(mapping, error):
    with pytest.raises(ValueError, match=error):
        IssuerConfig.from_mapping({"issuer": "https://idp.test", "audience": "gw", **mapping})


def test_mapping_settings_from_json():
    config = IssuerConfig.from_mapping({
        "issuer": "https://idp.test", "audience": "gw", "groups_claim": ["groups", "/realm_access/roles"],
        "required_claim_values": {"hd": "example.com", "email_verified": True}, "static_groups": "everyone",
        "authorized_parties": "deploy-bot",
    })
    assert config.groups_claims == ("groups", "/realm_access/roles")
    assert config.required_claim_values == (("hd", ("example.com",)), ("email_verified", (True,)))
    assert (config.static_groups, config.authorized_parties) == (("everyone",), ("deploy-bot",))
    assert (config.groups_overage, config.authorized_party_claim) == ("refuse", "azp")
    assert IssuerConfig(issuer="https://idp.test", audiences="gw").groups_claims == ("groups",)
