"""pytest fixtures running the real test OpenID provider (tests/idp/idp.mjs).

gateway/tests/conftest.py imports them; other test trees can do the same, or
list "tests.idp.fixtures" in the root conftest's pytest_plugins.
"""

import pytest

from tests.idp.harness import IdP

AUDIENCE = "https://airlock.test"
NAMESPACED_GROUPS = "https://airlock.test/groups"
CLIENTS = (
    {"client_id": "alice", "client_secret": "alice-secret", "groups": ["sre", "dev"]},
    {"client_id": "bob", "client_secret": "bob-secret", "groups": ["dev"]},
    {"client_id": "brief", "client_secret": "brief-secret", "groups": ["dev"], "token_ttl": 2},
    {"client_id": "device-agent", "groups": []},
)
USERS = {"carol": ["oncall"]}


@pytest.fixture(scope="session")
def idp():
    """The main IdP: `groups` claim, shared by tests that do not change its keys."""
    with IdP(audience=AUDIENCE, clients=CLIENTS, users=USERS) as provider:
        yield provider


@pytest.fixture(scope="session")
def idp_namespaced():
    """A second, independent IdP whose groups claim has a namespaced (URL) name."""
    clients = ({"client_id": "carol", "client_secret": "carol-secret", "groups": ["ops"]},)
    with IdP(audience=AUDIENCE, clients=clients, groups_claim=NAMESPACED_GROUPS) as provider:
        yield provider


@pytest.fixture
def rotating_idp():
    """A private IdP for tests that rotate its signing keys."""
    with IdP(audience=AUDIENCE, clients=CLIENTS) as provider:
        yield provider


@pytest.fixture
def get_token(idp):
    """get_token(client_id, secret) -> a real JWT access token from the main IdP."""
    return idp.get_token
