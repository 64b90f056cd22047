"""The whole application (gateway, MCP endpoint, dashboard) on one TLS port in front of kubesim,
agents authenticated by the real test OpenID provider (tests/idp), driven by the ``mcp`` SDK's own
Streamable HTTP client.

Rules for group ``mcp-agents`` on the connection (first match):
  5  allow dry runs of every write (the apply tool's diff)
  10 deny exec
  20 review deletes, held open (MCP answers at once anyway)
  30 allow everything else
and for group ``mcp-operators`` everything (exec included).
"""

import ssl
from contextlib import asynccontextmanager

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.gateway_harness import ThreadedServer, make_gateway_app
from tests.idp.harness import IdP

AUDIENCE = "https://airlock.test"
AGENT = {"client_id": "mcp-agent", "client_secret": "mcp-agent-secret-0d41", "groups": ["mcp-agents"]}
OPERATOR = {"client_id": "mcp-operator", "client_secret": "mcp-operator-secret-51c7", "groups": ["mcp-operators"]}
OTHER_AUDIENCE_AGENT = {"client_id": "elsewhere-agent", "client_secret": "elsewhere-secret-93ab",
                        "groups": ["mcp-agents"]}


@pytest.fixture(scope="module")
def idp():
    with IdP(audience=AUDIENCE, clients=(AGENT, OPERATOR)) as provider:
        yield provider


@pytest.fixture(scope="module")
def elsewhere_idp():
    """Trusted by Airlock, but its tokens are for another resource server."""
    with IdP(audience="https://elsewhere.test", clients=(OTHER_AUDIENCE_AGENT,)) as provider:
        yield provider


@pytest.fixture
def mcp_rules(cluster_connection):
    from policy.models import Rule

    common = {"connection": cluster_connection, "groups": ["mcp-agents"], "api_groups": ["*"], "namespaces": ["*"],
              "names": ["*"]}
    Rule.objects.create(order=5, name="dry-runs", effect="allow", verbs=["create", "update", "patch", "delete"],
                        resources=["*"], dry_run="only", **common)
    Rule.objects.create(order=10, name="no-exec", effect="deny", verbs=["*"], resources=["pods/exec"], **common)
    Rule.objects.create(order=20, name="review-deletes", effect="review", verbs=["delete", "deletecollection"],
                        resources=["*"], review_hold="open", **common)
    Rule.objects.create(order=30, name="agents-all", effect="allow", verbs=["*"], resources=["*", "*/*"], **common)
    Rule.objects.create(order=40, name="agents-non-resource", effect="allow", verbs=["*"], non_resource_urls=["*"],
                        connection=cluster_connection, groups=["mcp-agents"])
    Rule.objects.create(order=50, name="operators-all", effect="allow", verbs=["*"], resources=["*", "*/*"],
                        **{**common, "groups": ["mcp-operators"]})


@pytest.fixture
def airlock_mcp(cluster_connection, mcp_rules, idp, elsewhere_idp, tmp_path):
    """The application on a TLS port; ``url``, ``ca_file``, ``mcp_url``."""
    from identity.chain import AuthenticatorChain
    from identity.oidc import Authenticator
    from identity.oidc_config import AuthenticatorConfig, IssuerConfig
    from kubesim.certs import generate_tls

    config = AuthenticatorConfig(issuers=(IssuerConfig(issuer=idp.issuer, audiences=(AUDIENCE,)),
                                          IssuerConfig(issuer=elsewhere_idp.issuer, audiences=(AUDIENCE,))))
    app = make_gateway_app(AuthenticatorChain(oidc=Authenticator(config)), hold={"timeout": 30, "poll_interval": 0.2})
    tls = generate_tls(tmp_path / "tls")
    server = ThreadedServer(app, tls)
    server.start()

    class Running:
        url = f"https://127.0.0.1:{server.port}"
        mcp_url = f"{url}/mcp/{cluster_connection.name}/"
        ca_file = tls.ca_file
        application = app

        def stop(self):
            if server.thread.is_alive():
                server.stop()

    running = Running()
    try:
        yield running
    finally:
        running.stop()


def http_client(ca_file, token=None) -> httpx2.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.AsyncClient(verify=ssl.create_default_context(cafile=str(ca_file)), headers=headers,
                              timeout=httpx2.Timeout(30, read=120))


@asynccontextmanager
async def mcp_client(airlock, token, **options):
    """The SDK's own client over its Streamable HTTP transport, with the agent's bearer token."""
    async with http_client(airlock.ca_file, token) as http:
        async with Client(streamable_http_client(airlock.mcp_url, http_client=http), **options) as client:
            yield client
