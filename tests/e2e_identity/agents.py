"""The agents (OIDC clients) of the test identity providers, shared by fixtures and tests.

Secrets are random per test run: they exist only in the test IdPs' memory and 0600 files.
"""

import os

AUDIENCE = "https://airlock.test"
ELSEWHERE = "https://elsewhere.test"


def _client(client_id, *groups, **extra):
    """A client-credentials client with a fresh random secret (test IdPs only)."""
    return {"client_id": client_id, "client_secret": os.urandom(16).hex(), "groups": list(groups), **extra}


READER = _client("reader-agent", "readers")
GUARDED = _client("guarded-agent", "guardrailed")
BRIEF = _client("brief-agent", "readers", token_ttl=1)
STRANGER = _client("stranger-agent", "dev")  # trusted issuer, but in no group bound to a preset
ELSEWHERE_AGENT = _client("elsewhere-agent", "readers")
ROGUE = _client("rogue-agent", "readers", "guardrailed")  # claims bound groups, from an untrusted issuer
MCP_PROXY = _client("mcp-proxy", "mcp-proxies")  # an MCP server serving its own users (a trusted proxy once registered)


def token_for(idp, client):
    return idp.get_token(client["client_id"], client["client_secret"])
