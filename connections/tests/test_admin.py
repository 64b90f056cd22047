import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from connections.models import Connection, CredentialKind
from connections.tests.conftest import TOKEN


@pytest.fixture
def admin(client, django_user_model, db):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def change_url(connection):
    return reverse("admin:connections_connection_change", args=[connection.pk])


def form_data(connection, **overrides):
    data = {
        "name": connection.name,
        "description": connection.description,
        "server_url": connection.server_url,
        "verify_tls": "on" if connection.verify_tls else "",
        "ca_bundle": connection.ca_bundle,
        "credential_kind": connection.credential_kind,
        "bearer_token": "",
        "client_certificate": connection.client_certificate,
        "client_key": "",
        "impersonation_mode": connection.impersonation_mode,
        "impersonation_user_prefix": connection.impersonation_user_prefix,
        "connect_timeout": connection.connect_timeout,
        "first_byte_timeout": connection.first_byte_timeout,
        "idle_timeout": connection.idle_timeout,
        "enabled": "on" if connection.enabled else "",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value != ""}


def assert_hidden(html, *secrets):
    for secret in secrets:
        assert secret not in html


def test_change_pages_never_render_credentials(admin, token_connection, cert_connection, pki):
    for connection in (token_connection, cert_connection):
        response = admin.get(change_url(connection))
        assert response.status_code == 200
        html = response.content.decode()
        assert connection.server_url in html
        assert_hidden(html, TOKEN, pki.client.key, "PRIVATE KEY", token_connection.token_ciphertext,
                      cert_connection.client_key_ciphertext)
    assert "A token is stored; leave empty to keep it." in admin.get(change_url(token_connection)).content.decode()


def test_changelist_shows_credential_kind_and_search(admin, token_connection, cert_connection):
    html = admin.get(reverse("admin:connections_connection_changelist")).content.decode()
    assert "Bearer token" in html and "Client certificate" in html
    assert_hidden(html, TOKEN)
    html = admin.get(reverse("admin:connections_connection_changelist"), {"q": "127.0.0.1"}).content.decode()
    assert ">dev<" in html and ">prod<" not in html


def test_empty_credential_inputs_keep_stored_values(admin, token_connection, cert_connection, pki):
    for connection in (token_connection, cert_connection):
        response = admin.post(change_url(connection), form_data(connection, description="edited"))
        assert response.status_code == 302, response.content.decode()
    assert Connection.objects.get(name="prod").decrypt_bearer_token() == TOKEN
    dev = Connection.objects.get(name="dev")
    assert dev.decrypt_client_key() == pki.client.key and dev.description == "edited"


def test_new_token_replaces_the_stored_one(admin, token_connection):
    response = admin.post(change_url(token_connection), form_data(token_connection, bearer_token="new-token"))
    assert response.status_code == 302
    assert Connection.objects.get(name="prod").decrypt_bearer_token() == "new-token"


def test_switching_kind_removes_the_other_credential(admin, token_connection, pki):
    """Also: browsers submit textareas with CRLF line endings; PEM is stored with LF."""
    data = form_data(
        token_connection,
        credential_kind=CredentialKind.CLIENT_CERTIFICATE,
        client_certificate=pki.client.certificate.replace("\n", "\r\n"),
        client_key=pki.client.key.replace("\n", "\r\n"),
    )
    assert admin.post(change_url(token_connection), data).status_code == 302
    connection = Connection.objects.get(name="prod")
    assert connection.credential_kind == CredentialKind.CLIENT_CERTIFICATE
    assert connection.token_ciphertext == "" and connection.decrypt_client_key() == pki.client.key
    assert connection.client_certificate == pki.client.certificate


def test_add_page_encrypts_the_token(admin, keys):
    data = {
        "name": "new",
        "server_url": "https://new.example",
        "verify_tls": "on",
        "credential_kind": CredentialKind.TOKEN,
        "bearer_token": TOKEN,
        "impersonation_mode": "impersonate",
        "impersonation_user_prefix": "airlock:",
        "connect_timeout": "3",
        "first_byte_timeout": "20",
        "idle_timeout": "15",
        "enabled": "on",
    }
    assert admin.post(reverse("admin:connections_connection_add"), data).status_code == 302
    connection = Connection.objects.get(name="new")
    assert connection.decrypt_bearer_token() == TOKEN and TOKEN not in connection.token_ciphertext
    assert connection.impersonation_mode == "impersonate"
    assert (connection.connect_timeout, connection.first_byte_timeout, connection.idle_timeout) == (3, 20, 15)


def test_invalid_submission_does_not_echo_credentials(admin, token_connection, pki):
    data = form_data(
        token_connection,
        server_url="ftp://nope",
        credential_kind=CredentialKind.CLIENT_CERTIFICATE,
        client_certificate=pki.client.certificate,
        client_key=pki.client.key,
    )
    response = admin.post(change_url(token_connection), data)
    assert response.status_code == 200
    html = response.content.decode()
    assert "must start with https://" in html
    assert_hidden(html, TOKEN, pki.client.key, "PRIVATE KEY")
    assert Connection.objects.get(name="prod").credential_kind == CredentialKind.TOKEN


def test_token_kind_without_any_token_is_refused(admin, keys):
    data = {
        "name": "empty",
        "server_url": "https://new.example",
        "credential_kind": CredentialKind.TOKEN,
        "impersonation_mode": "off",
        "impersonation_user_prefix": "airlock:",
        "connect_timeout": "10",
        "first_byte_timeout": "65",
        "idle_timeout": "30",
    }
    response = admin.post(reverse("admin:connections_connection_add"), data)
    assert response.status_code == 200
    assert "Configure a credential" in response.content.decode()
    assert not Connection.objects.filter(name="empty").exists()


def test_credential_of_the_other_kind_is_refused_not_dropped(admin, token_connection, pki):
    data = form_data(token_connection, bearer_token="new-token", client_key=pki.client.key)
    response = admin.post(change_url(token_connection), data)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Choose the client certificate credential kind" in html
    assert_hidden(html, pki.client.key, "new-token")
    assert Connection.objects.get(name="prod").decrypt_bearer_token() == TOKEN


def test_view_only_staff_sees_whether_credentials_are_stored_never_their_values(
    client, django_user_model, token_connection, cert_connection, pki
):
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_connection"))
    client.force_login(viewer)
    for connection in (token_connection, cert_connection):
        response = client.get(change_url(connection))
        assert response.status_code == 200
        html = response.content.decode()
        assert_hidden(html, TOKEN, pki.client.key, *pki.client.key.splitlines()[1:-1], "PRIVATE KEY",
                      connection.token_ciphertext or connection.client_key_ciphertext)
        assert "set (hidden)" in html and "not set" in html and 'name="bearer_token"' not in html
