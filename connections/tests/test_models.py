import pytest
from django.core.exceptions import ValidationError

from connections.models import Connection, CredentialKind
from connections.tests.conftest import TOKEN

pytestmark = pytest.mark.django_db


def errors(connection) -> str:
    with pytest.raises(ValidationError) as info:
        connection.full_clean()
    return " ".join(info.value.messages)


def token_connection(**fields):
    return Connection(**{"name": "c1", "server_url": "https://k8s.example", "bearer_token": TOKEN, **fields})


@pytest.mark.parametrize(
    "url",
    [
        "https://k8s.example",
        "https://k8s.example:6443/",
        "https://10.0.0.1:443",
        "https://[fd00::1]:6443",
        "https://kubernetes",
        "https://rancher.example/k8s/clusters/c-m-abc12",
    ],
)
def test_valid_server_urls(keys, url):
    connection = token_connection(server_url=url)
    connection.full_clean()
    assert connection.server_url == url.rstrip("/")


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://k8s.example", "https://"),
        ("k8s.example", "https://"),
        ("https://", "no host"),
        ("https://k8s.example/api?x=1", "query"),
        ("https://k8s.example/#frag", "fragment"),
        ("https://k8s.example:0", "port"),
        ("https://k8s.example:70000", "port"),
        ("https://k8s.example/a//b", "path"),
        ("https://k8s.example/a/../b", "path"),
        ("https://k8s.example/a%2fb", "path"),
        ("https://bad_host.example", "host"),
        ("https://k8s.example /x", "whitespace"),
    ],
)
def test_invalid_server_urls(keys, url, problem):
    assert problem in errors(token_connection(server_url=url))


def test_userinfo_in_server_url_is_refused_without_echoing_it(keys):
    message = errors(token_connection(server_url="https://admin:hunter2@k8s.example"))
    assert "username or password" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("name", ["Prod", "prod_1", "-prod", "a" * 64, "prod.eu"])
def test_invalid_names(keys, name):
    assert "lowercase" in errors(token_connection(name=name))


def test_neither_credential(keys):
    assert "Configure a credential" in errors(Connection(name="c1", server_url="https://k8s.example"))


def test_both_credentials(keys, pki):
    connection = token_connection(client_certificate=pki.client.certificate, client_key=pki.client.key)
    assert "exactly one credential" in errors(connection)


def test_certificate_without_key(keys, pki):
    connection = Connection(name="c1", server_url="https://k8s.example", client_certificate=pki.client.certificate)
    assert "needs its client key" in errors(connection)


def test_key_without_certificate(keys, pki):
    connection = Connection(name="c1", server_url="https://k8s.example", client_key=pki.client.key)
    assert "needs its client certificate" in errors(connection)


def test_key_must_match_certificate(keys, pki):
    connection = Connection(
        name="c1",
        server_url="https://k8s.example",
        client_certificate=pki.client.certificate,
        client_key=pki.other_client.key,
    )
    assert "does not belong" in errors(connection)


def test_bad_key_pem(keys, pki):
    connection = Connection(
        name="c1", server_url="https://k8s.example", client_certificate=pki.client.certificate, client_key="nope"
    )
    assert "not a PEM-encoded private key" in errors(connection)


def test_passphrase_protected_key(keys, pki):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.client.key.encode(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ).decode()
    connection = Connection(
        name="c1", server_url="https://k8s.example", client_certificate=pki.client.certificate, client_key=encrypted
    )
    assert "passphrase" in errors(connection)


def test_bad_client_certificate_pem(keys, pki):
    connection = Connection(
        name="c1", server_url="https://k8s.example", client_certificate="garbage", client_key=pki.client.key
    )
    assert "not PEM-encoded X.509 certificates" in errors(connection)


@pytest.mark.parametrize("bundle", ["garbage", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_bad_ca_bundle(keys, bundle):
    assert "CA bundle is not PEM" in errors(token_connection(ca_bundle=bundle))


def test_private_key_pasted_into_ca_bundle_is_refused(keys, pki):
    message = errors(token_connection(ca_bundle=pki.ca_pem + pki.ca_key_pem))
    assert "contains a private key" in message


def test_token_must_be_header_safe(keys):
    message = errors(token_connection(bearer_token="abc\r\nX-Injected: 1"))
    assert "printable ASCII" in message
    assert "X-Injected" not in message


@pytest.mark.parametrize("prefix, problem", [("", "cannot be blank"), ("a b", "non-empty"), ("system:x", "system:")])
def test_impersonation_prefix(keys, prefix, problem):
    assert problem in errors(token_connection(impersonation_user_prefix=prefix))


def test_valid_connections_and_credential_kind(token_connection, cert_connection):
    assert token_connection.credential_kind == CredentialKind.TOKEN
    assert cert_connection.credential_kind == CredentialKind.CLIENT_CERTIFICATE
    assert token_connection.verify_tls is True
    assert token_connection.impersonation_mode == "off"
    assert token_connection.impersonation_user_prefix == "airlock:"


def test_str_and_repr_hide_credentials(token_connection, cert_connection, pki):
    for connection in (token_connection, cert_connection):
        text = str(connection) + repr(connection)
        ciphertexts = [c for c in (connection.token_ciphertext, connection.client_key_ciphertext) if c]
        for secret in (TOKEN, pki.client.key, *ciphertexts):
            assert secret not in text
    assert str(token_connection) == "prod"
