import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection as db

from connections import crypto
from connections.models import Connection
from connections.tests.conftest import TOKEN


def raw_columns(pk):
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT token_ciphertext, client_key_ciphertext FROM connections_connection WHERE id = %s", [pk]
        )
        return cursor.fetchone()


def test_round_trip(token_connection, cert_connection, pki):
    assert Connection.objects.get(name="prod").decrypt_bearer_token() == TOKEN
    assert Connection.objects.get(name="dev").decrypt_client_key() == pki.client.key


def test_database_holds_ciphertext_only(token_connection, cert_connection, pki):
    token_column, _ = raw_columns(token_connection.pk)
    _, key_column = raw_columns(cert_connection.pk)
    assert token_column and TOKEN not in token_column
    assert key_column and "PRIVATE KEY" not in key_column and pki.client.key not in key_column
    assert Fernet(settings.FIELD_ENCRYPTION_KEYS[0]).decrypt(token_column.encode()) == TOKEN.encode()


def test_wrong_key_names_the_connection_and_hides_material(token_connection, keys):
    ciphertext = token_connection.token_ciphertext
    other = Fernet.generate_key().decode()
    keys(other)
    connection = Connection.objects.get(name="prod")
    with pytest.raises(crypto.CredentialDecryptionError) as info:
        connection.decrypt_bearer_token()
    message = str(info.value)
    assert "'prod'" in message and "bearer token" in message
    for secret in (TOKEN, ciphertext, other, keys.first):
        assert secret not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_invalid_key_setting_is_reported_without_the_key(settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), "not-a-fernet-key"]
    with pytest.raises(ImproperlyConfigured, match="entry #2") as info:
        crypto.encrypt("x")
    assert "not-a-fernet-key" not in str(info.value)


def test_empty_key_setting_is_refused(settings):
    settings.FIELD_ENCRYPTION_KEYS = []
    with pytest.raises(ImproperlyConfigured, match="empty"):
        crypto.encrypt("x")


def test_first_key_encrypts_and_every_key_decrypts(keys):
    old = keys.first
    old_ciphertext = crypto.encrypt("value")
    new = Fernet.generate_key().decode()
    keys(new, old)
    assert crypto.decrypt(old_ciphertext, label="test") == "value"
    new_ciphertext = crypto.encrypt("value")
    assert Fernet(new).decrypt(new_ciphertext.encode()) == b"value"
