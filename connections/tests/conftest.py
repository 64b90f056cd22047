import pytest
from cryptography.fernet import Fernet

from connections import registry
from connections.models import Connection
from connections.tests.pki import Pki
from tests.idp.fixtures import idp  # noqa: F401  (the real test OpenID provider, for the kubeconfig command's tests)

# Distinctive values so a test can search any output for them.
TOKEN = "sekrit-token-0123456789abcdef"


@pytest.fixture(scope="session")
def pki():
    return Pki()


@pytest.fixture(autouse=True)
def fresh_registry():
    """A registry cache outlives each test's rolled-back database."""
    registry.ConnectionRegistry.clear_all()
    yield
    registry.ConnectionRegistry.clear_all()


@pytest.fixture
def keys(settings):
    """A fresh single encryption key; returns a function to replace the key list."""

    def use(*new_keys):
        settings.FIELD_ENCRYPTION_KEYS = list(new_keys)

    key = Fernet.generate_key().decode()
    use(key)
    use.first = key
    return use


@pytest.fixture
def token_connection(db, keys):
    connection = Connection(name="prod", server_url="https://api.prod.example:6443", bearer_token=TOKEN)
    connection.full_clean()
    connection.save()
    return connection


@pytest.fixture
def cert_connection(db, keys, pki):
    connection = Connection(
        name="dev",
        server_url="https://127.0.0.1:6443",
        ca_bundle=pki.ca_pem,
        client_certificate=pki.client.certificate,
        client_key=pki.client.key,
    )
    connection.full_clean()
    connection.save()
    return connection
