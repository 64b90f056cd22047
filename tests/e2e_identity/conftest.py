"""The real gateway authenticating agents with the real OIDC Authenticator, in front of kubesim.

Three test identity providers (tests/idp): ``agents_idp`` is trusted and issues the agents'
tokens; ``elsewhere_idp`` is trusted too but issues tokens for another audience; ``untrusted_idp``
is not configured on the gateway at all.  The gateway is built like the harness's ``gateway_app``
(no approvals Holder, so ``review`` refuses with 403) but with
``AuthenticatorChain(oidc=Authenticator(...))`` and no static tokens.
"""

import io
import sys

import pytest
from django.core.management import call_command

from tests.e2e_identity.agents import (AUDIENCE, BRIEF, ELSEWHERE, ELSEWHERE_AGENT, GUARDED, MCP_PROXY, READER,
                                      ROGUE, STRANGER)
from tests.gateway_harness import make_gateway_app, serving
from tests.idp.harness import IdP


@pytest.fixture(scope="session")
def agents_idp():
    with IdP(audience=AUDIENCE, clients=(READER, GUARDED, BRIEF, STRANGER, MCP_PROXY)) as provider:
        yield provider


@pytest.fixture(scope="session")
def elsewhere_idp():
    """Trusted by the gateway, but its tokens are for another resource server."""
    with IdP(audience=ELSEWHERE, clients=(ELSEWHERE_AGENT,)) as provider:
        yield provider


@pytest.fixture(scope="session")
def untrusted_idp():
    """A working OpenID provider the gateway does not trust."""
    with IdP(audience=AUDIENCE, clients=(ROGUE,)) as provider:
        yield provider


@pytest.fixture
def oidc_gateway_app(agents_idp, elsewhere_idp):
    from identity.chain import AuthenticatorChain
    from identity.oidc import Authenticator
    from identity.oidc_config import AuthenticatorConfig, IssuerConfig

    config = AuthenticatorConfig(
        issuers=(
            IssuerConfig(issuer=agents_idp.issuer, audiences=(AUDIENCE,)),
            IssuerConfig(issuer=elsewhere_idp.issuer, audiences=(AUDIENCE,)),
        ),
        leeway=0,  # the expired-token test waits for exp itself, not for the leeway too
    )
    return make_gateway_app(AuthenticatorChain(oidc=Authenticator(config)))


@pytest.fixture
def oidc_gateway(cluster_connection, oidc_gateway_app, tmp_path):
    """The gateway on TLS in front of kubesim, agents bound to presets by IdP group.

    ``guardrailed`` gets production-guardrails and ``readers`` read-only (its rule names
    prefixed ``readers-``), both with ``manage.py apply_preset --group``.
    """
    for args in (
        ("production-guardrails", "--group", "guardrailed"),
        ("read-only", "--group", "readers", "--name-prefix", "readers-"),
    ):
        call_command("apply_preset", "--connection", cluster_connection.name, *args, stdout=io.StringIO())
    with serving(oidc_gateway_app, cluster_connection, tmp_path / "oidc-gateway") as running:
        yield running


@pytest.fixture
def agent_kubeconfig(oidc_gateway, agents_idp, kubectl, tmp_path):
    """agent_kubeconfig(client) -> a kubeconfig written by ``manage.py kubeconfig`` (exec plugin, no credential).

    The client secret sits in a 0600 file, as on an agent's machine; the plugin caches tokens under
    the kubectl fixture's private HOME.
    """
    kubectl.env["XDG_CACHE_HOME"] = str(kubectl.home / ".cache")

    def write(client, *extra):
        """``extra``: more ``manage.py kubeconfig`` options, such as ``--exec-api-version v1beta1``."""
        secret = tmp_path / f"{client['client_id']}.secret"
        secret.write_text(client["client_secret"] + "\n")
        secret.chmod(0o600)
        path = tmp_path / f"{client['client_id']}.kubeconfig"
        call_command(
            "kubeconfig", "--connection", oidc_gateway.connection.name, "--client-id", client["client_id"],
            "--client-secret-file", str(secret), "--issuer", agents_idp.issuer, "--audience", AUDIENCE,
            "--gateway-url", oidc_gateway.url, "--gateway-ca", str(oidc_gateway.ca_file),
            "--python", sys.executable, "--output", str(path), "--force", *extra, stdout=io.StringIO(),
        )
        return path

    return write
