"""Okta, Entra ID, Google, Keycloak and Dex set-ups, as docs/identity-providers.md gives them.

For each provider the test identity provider (tests/idp, ``SHAPE=...``) issues tokens with that
provider's claims, signed for real; the gateway trusts it with the configuration block the doc shows
for that provider (only ``issuer`` replaced by the test provider's), a read-only preset is bound to a
group (or agent) the mapping yields, and real kubectl through the gateway shows the mapped identity
and is allowed or refused by that rule.  The failure shapes (an Entra groups overage, a Keycloak
token from a client outside ``authorized_parties``, a Google token from another domain, a Dex token
from another connector) get a 401 Status and never reach the cluster.
"""

import io
import json
import re
import ssl
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command

from tests.e2e_identity.agents import _client
from tests.gateway_harness import make_gateway_app, serving
from tests.idp.harness import IdP

pytestmark = pytest.mark.django_db(transaction=True)

DOC = Path(__file__).resolve().parents[2] / "docs" / "identity-providers.md"
TENANT = "8d5f4a30-2c0a-4d7e-9a51-52a8f0c7e0b1"


def documented(section: str) -> dict:
    """The JSON configuration block of a provider's section of docs/identity-providers.md."""
    text = DOC.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    block = re.search(r"```json\n(.*?)\n```", text[start:end if end > 0 else None], re.S)
    return json.loads(block.group(1))


@contextmanager
def shaped_idp(section, shape, clients, users=None):
    """A test IdP issuing ``shape`` tokens for the audience the documented block expects."""
    audience = documented(section)["audience"]
    with IdP(shape=shape, clients=clients, users=users, token_audience=audience) as provider:
        yield provider


@contextmanager
def provider_gateway(connection, tmp_path, idp, section, *bindings):
    """The gateway trusting ``idp`` with the documented block; read-only bound as ``bindings`` say.

    ``bindings``: (name prefix, apply_preset options) pairs, e.g. ("readers-", ("--group", "okta:x")).
    """
    from identity.chain import AuthenticatorChain
    from identity.oidc import Authenticator
    from identity.oidc_config import AuthenticatorConfig, IssuerConfig

    issuer = IssuerConfig.from_mapping({**documented(section), "issuer": idp.issuer})
    app = make_gateway_app(AuthenticatorChain(oidc=Authenticator(AuthenticatorConfig(issuers=(issuer,)))))
    for prefix, options in bindings:
        call_command("apply_preset", "--connection", connection.name, "read-only", *options,
                     "--name-prefix", prefix, stdout=io.StringIO())
    with serving(app, connection, tmp_path / section.split()[0].lower()) as running:
        yield running


def whoami(kubectl, config):
    return json.loads(kubectl("auth", "whoami", "-o", "json", kubeconfig=config).stdout)["status"]["userInfo"]


def reads_but_cannot_delete(kubectl, config, rule):
    """The read-only rules bound to this identity decide: pods are listed, a delete is refused by name."""
    pods = kubectl("get", "pods", "-n", "shop", "-o", "jsonpath={.items[*].metadata.name}", kubeconfig=config)
    pods = pods.stdout.split()
    assert any(p.startswith("web-") for p in pods)
    refused = kubectl("delete", "pod", pods[0], "-n", "shop", kubeconfig=config, check=False)
    assert refused.returncode != 0
    assert f'airlock: denied by rule "{rule}" (connection kubesim)' in refused.stderr, refused.stderr


def assert_unauthorized(gateway, token, message, kubesim):
    """A 401 Status with ``message``, and nothing reached the cluster."""
    before = len(kubesim.requests())
    with httpx.Client(base_url=gateway.server_url(), timeout=15,
                      verify=ssl.create_default_context(cafile=gateway.ca_file)) as client:
        response = client.get("/api/v1/namespaces/shop/pods", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    status = response.json()
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Unauthorized", 401)
    assert status["message"] == f"Unauthorized: {message}"
    assert token not in response.text
    assert len(kubesim.requests()) == before


def token_of(idp, client):
    return idp.get_token(client["client_id"], client["client_secret"])


# -- Okta ---------------------------------------------------------------------------------------

OKTA_BOT = _client("0oa1deploybot")
OKTA_OTHER_BOT = _client("0oa1otherbot")
OKTA_CLI = {"client_id": "0oa1kubectlcli", "groups": []}  # a native app: people sign in by the device flow
OKTA_PEOPLE = {"dana@example.com": ["airlock-readers", "Everyone"]}


def test_okta(cluster_connection, tmp_path, kubectl, kubesim):
    with shaped_idp("Okta", "okta", (OKTA_BOT, OKTA_OTHER_BOT, OKTA_CLI), OKTA_PEOPLE) as idp, provider_gateway(
        cluster_connection, tmp_path, idp, "Okta",
        ("readers-", ("--group", "okta:airlock-readers")),
        ("bot-", ("--subject", "okta:0oa1deploybot")),
    ) as gateway:
        person = gateway.kubeconfig(token=idp.device_token(OKTA_CLI["client_id"], "dana@example.com"), name="dana")
        user = whoami(kubectl, person)
        assert user["username"] == "okta:dana@example.com"
        assert user["groups"] == ["okta:airlock-readers", "okta:Everyone"]
        reads_but_cannot_delete(kubectl, person, "readers-read-only-no-writes")

        bot = gateway.kubeconfig(token=token_of(idp, OKTA_BOT), name="bot")
        user = whoami(kubectl, bot)
        assert user["username"] == "okta:0oa1deploybot" and "groups" not in user  # service apps have no groups
        reads_but_cannot_delete(kubectl, bot, "bot-read-only-no-writes")

        other = gateway.kubeconfig(token=token_of(idp, OKTA_OTHER_BOT), name="other")
        refused = kubectl("get", "--raw", "/api/v1/namespaces/shop/pods", kubeconfig=other, check=False)
        assert 'denied by rule "default-deny"' in refused.stderr


# -- Microsoft Entra ID -------------------------------------------------------------------------

READERS_GROUP = "1f4c2e8a-6b1d-4c3e-9f0a-7d2b5e8c1a90"
UNBOUND_GROUP = "2a5d3f9b-7c2e-4d4f-8a1b-8e3c6f9d2b01"
ENTRA_BOT = _client("3c9a1e52-0d4b-4f7a-8e21-9b6d7c5a4f10", UNBOUND_GROUP, profile={
    "oid": "b7e4d2c1-5a3f-4e8b-9c0d-1a2b3c4d5e6f", "tid": TENANT, "roles": ["Airlock.Reader"]})
ENTRA_GROUPED_BOT = _client("4d0b2f63-1e5c-4a8b-9f32-0c7e8d6b5a21", READERS_GROUP, profile={
    "oid": "c8f5e3d2-6b4a-4f9c-8d1e-2b3c4d5e6f70", "tid": TENANT})
ENTRA_OVERAGE_BOT = _client("5e1c3a74-2f6d-4b9c-8a43-1d8f9e7c6b32", READERS_GROUP, profile={
    "oid": "d9a6f4e3-7c5b-4a0d-9e2f-3c4d5e6f7081", "tid": TENANT, "roles": ["Airlock.Reader"], "overage": True})


def test_entra_id(cluster_connection, tmp_path, kubectl, kubesim):
    with shaped_idp("Microsoft Entra ID", "entra", (ENTRA_BOT, ENTRA_GROUPED_BOT, ENTRA_OVERAGE_BOT)) as idp, \
            provider_gateway(cluster_connection, tmp_path, idp, "Microsoft Entra ID",
                             ("role-", ("--group", "entra:Airlock.Reader")),
                             ("group-", ("--group", f"entra:{READERS_GROUP}"))) as gateway:
        bot = gateway.kubeconfig(token=token_of(idp, ENTRA_BOT), name="bot")
        user = whoami(kubectl, bot)
        assert user["username"] == "entra:b7e4d2c1-5a3f-4e8b-9c0d-1a2b3c4d5e6f"
        assert user["groups"] == ["entra:Airlock.Reader", f"entra:{UNBOUND_GROUP}"]
        reads_but_cannot_delete(kubectl, bot, "role-read-only-no-writes")

        grouped = gateway.kubeconfig(token=token_of(idp, ENTRA_GROUPED_BOT), name="grouped")
        assert whoami(kubectl, grouped)["groups"] == [f"entra:{READERS_GROUP}"]
        reads_but_cannot_delete(kubectl, grouped, "group-read-only-no-writes")

        # Too many groups: Entra references them instead; the roles alone must not let it in silently.
        assert_unauthorized(gateway, token_of(idp, ENTRA_OVERAGE_BOT), "token groups could not be read: the "
                            "identity provider left them out of the token (groups overage)", kubesim)


# -- Google -------------------------------------------------------------------------------------

GOOGLE_PERSON = _client("google-person", profile={
    "sub": "108234567890123456789", "email": "erin@example.com", "hd": "example.com"})
GOOGLE_OTHER_DOMAIN = _client("google-other", profile={
    "sub": "108234567890123456790", "email": "mallory@evil.example", "hd": "evil.example"})
GOOGLE_CONSUMER = _client("google-consumer", profile={"sub": "108234567890123456791", "email": "someone@gmail.com"})


def test_google_workspace(cluster_connection, tmp_path, kubectl, kubesim):
    with shaped_idp("Google (Workspace and Cloud)", "google",
                    (GOOGLE_PERSON, GOOGLE_OTHER_DOMAIN, GOOGLE_CONSUMER)) as idp, \
            provider_gateway(cluster_connection, tmp_path, idp, "Google (Workspace and Cloud)",
                             ("domain-", ("--group", "google:example.com"))) as gateway:
        person = gateway.kubeconfig(token=token_of(idp, GOOGLE_PERSON), name="erin")
        user = whoami(kubectl, person)
        assert (user["username"], user["groups"]) == ("google:erin@example.com", ["google:example.com"])
        reads_but_cannot_delete(kubectl, person, "domain-read-only-no-writes")

        for outsider in (GOOGLE_OTHER_DOMAIN, GOOGLE_CONSUMER):
            assert_unauthorized(gateway, token_of(idp, outsider), "token claim hd not accepted", kubesim)


# -- Keycloak -----------------------------------------------------------------------------------

KEYCLOAK_BOT = _client("deploy-bot", "/agents/readers", profile={
    "sub": "5f0c9a2e-3b7d-4e1f-8a6c-9d2e4b7f1c30", "realm_roles": ["airlock-reader", "offline_access"]})
KEYCLOAK_INTRUDER = _client("intruder-bot", "/agents/readers", profile={
    "sub": "6a1d0b3f-4c8e-4f2a-9b7d-0e3f5c8a2d41", "realm_roles": ["airlock-reader"]})


def test_keycloak(cluster_connection, tmp_path, kubectl, kubesim):
    with shaped_idp("Keycloak", "keycloak", (KEYCLOAK_BOT, KEYCLOAK_INTRUDER)) as idp, provider_gateway(
        cluster_connection, tmp_path, idp, "Keycloak",
        ("role-", ("--group", "keycloak:airlock-reader")),
    ) as gateway:
        bot = gateway.kubeconfig(token=token_of(idp, KEYCLOAK_BOT), name="bot")
        user = whoami(kubectl, bot)
        assert user["username"] == "keycloak:service-account-deploy-bot"
        assert user["groups"] == ["keycloak:airlock-reader", "keycloak:offline_access", "keycloak:/agents/readers"]
        reads_but_cannot_delete(kubectl, bot, "role-read-only-no-writes")

        # Same realm, same audience and roles, but a client outside authorized_parties.
        assert_unauthorized(gateway, token_of(idp, KEYCLOAK_INTRUDER), "token authorized party not accepted", kubesim)


# -- Dex ----------------------------------------------------------------------------------------

DEX_AGENT = _client("agent-cli", "acme:readers", profile={
    "sub": "CgQ0MjQyEgZnaXRodWI", "email": "frank@acme.test", "connector_id": "github", "user_id": "4242"})
# The same CLI client (azp agent-cli), signed in through another connector whose groups spell the same.
DEX_LDAP_AGENT = _client("agent-cli-via-ldap", "acme:readers", profile={
    "sub": "CgVmcmFuaxIEbGRhcA", "email": "frank@acme.test", "connector_id": "ldap", "user_id": "frank",
    "azp": "agent-cli"})
DEX_OTHER_CLIENT = _client("other-app", "acme:readers", profile={
    "sub": "CgQ0MjQyEgZnaXRodWI", "email": "frank@acme.test", "connector_id": "github", "user_id": "4242"})


def test_dex(cluster_connection, tmp_path, kubectl, kubesim):
    with shaped_idp("Dex", "dex", (DEX_AGENT, DEX_LDAP_AGENT, DEX_OTHER_CLIENT)) as idp, provider_gateway(
        cluster_connection, tmp_path, idp, "Dex", ("team-", ("--group", "dex:acme:readers")),
    ) as gateway:
        agent = gateway.kubeconfig(token=token_of(idp, DEX_AGENT), name="frank")
        user = whoami(kubectl, agent)
        assert (user["username"], user["groups"]) == ("dex:frank@acme.test", ["dex:acme:readers"])
        reads_but_cannot_delete(kubectl, agent, "team-read-only-no-writes")

        assert_unauthorized(gateway, token_of(idp, DEX_LDAP_AGENT),
                            "token claim /federated_claims/connector_id not accepted", kubesim)
        assert_unauthorized(gateway, token_of(idp, DEX_OTHER_CLIENT), "token authorized party not accepted", kubesim)
