import base64
import re
import io

import pytest
import yaml
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from connections import crypto
from connections.models import Connection, CredentialKind
from connections.tests.conftest import TOKEN

pytestmark = pytest.mark.django_db


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def b64(text):
    return base64.b64encode(text.encode()).decode()


def write_kubeconfig(path, *, cluster=None, user=None, current="kind-dev"):
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "contexts": [
            {"name": "kind-dev", "context": {"cluster": "dev", "user": "dev-admin", "namespace": "default"}},
            {"name": "admin@prod", "context": {"cluster": "prod", "user": "prod-bot"}},
        ],
        "clusters": [
            {"name": "dev", "cluster": cluster or {"server": "https://127.0.0.1:6443"}},
            {"name": "prod", "cluster": {"server": "https://prod.example:6443"}},
        ],
        "users": [
            {"name": "dev-admin", "user": user or {"token": TOKEN}},
            {"name": "prod-bot", "user": {"token": "prod-token-xyz"}},
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


# --- add_connection ---------------------------------------------------------


def test_imports_inline_client_certificate_and_ca(tmp_path, keys, pki):
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": "https://127.0.0.1:6443", "certificate-authority-data": b64(pki.ca_pem)},
        user={"client-certificate-data": b64(pki.client.certificate), "client-key-data": b64(pki.client.key)},
    )
    output = run("add_connection", "--kubeconfig", str(path))
    connection = Connection.objects.get(name="kind-dev")
    assert connection.server_url == "https://127.0.0.1:6443"
    assert connection.ca_bundle == pki.ca_pem and connection.verify_tls
    assert connection.credential_kind == CredentialKind.CLIENT_CERTIFICATE
    assert connection.decrypt_client_key() == pki.client.key
    assert "Created connection 'kind-dev'" in output and "client certificate" in output
    assert pki.client.key not in output and "PRIVATE KEY" not in output


def test_imports_files_relative_to_the_kubeconfig(tmp_path, keys, pki):
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_text(pki.ca_pem)
    (tmp_path / "pki" / "token").write_text(TOKEN + "\n")
    path = write_kubeconfig(
        tmp_path / "config",
        cluster={"server": "https://127.0.0.1:6443", "certificate-authority": "pki/ca.crt"},
        user={"tokenFile": "pki/token"},
    )
    output = run("add_connection", "--kubeconfig", str(path), "--name", "dev")
    connection = Connection.objects.get(name="dev")
    assert connection.decrypt_bearer_token() == TOKEN and connection.ca_bundle == pki.ca_pem
    assert TOKEN not in output


def test_imports_client_certificate_files(tmp_path, keys, pki):
    (tmp_path / "client.crt").write_text(pki.client.certificate)
    (tmp_path / "client.key").write_text(pki.client.key)
    path = write_kubeconfig(
        tmp_path / "config", user={"client-certificate": "client.crt", "client-key": str(tmp_path / "client.key")}
    )
    run("add_connection", "--kubeconfig", str(path))
    assert Connection.objects.get(name="kind-dev").decrypt_client_key() == pki.client.key


def test_context_option_and_derived_name(tmp_path, keys):
    path = write_kubeconfig(tmp_path / "config")
    run("add_connection", "--kubeconfig", str(path), "--context", "admin@prod")
    connection = Connection.objects.get(name="admin-prod")
    assert connection.server_url == "https://prod.example:6443"
    assert connection.decrypt_bearer_token() == "prod-token-xyz"


@pytest.mark.parametrize(
    "user, problem",
    [
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}}, "exec credential plugin"),
        ({"auth-provider": {"name": "oidc", "config": {"id-token": "x"}}}, "auth-provider plugin"),
        ({"username": "admin", "password": "hunter2"}, "basic authentication"),
        ({"token": TOKEN, "as": "someone"}, "impersonation"),
        ({"client-certificate-data": b64("x")}, "no static credential"),
        ({"token": TOKEN, "client-key-data": b64("x")}, "both a token and a client certificate"),
        ({"client-key-data": "%%%", "client-certificate-data": "%%%"}, "not base64"),
        ({"tokenFile": "missing-token"}, "cannot read users[dev-admin].tokenFile"),
    ],
)
def test_refuses_users_without_a_usable_static_credential(tmp_path, keys, user, problem):
    path = write_kubeconfig(tmp_path / "config", user=user)
    with pytest.raises(CommandError, match=re.escape(problem)) as info:
        run("add_connection", "--kubeconfig", str(path))
    assert "hunter2" not in str(info.value) and TOKEN not in str(info.value)
    assert not Connection.objects.exists()


def test_unknown_context(tmp_path, keys):
    path = write_kubeconfig(tmp_path / "config")
    with pytest.raises(CommandError, match="no entry named 'nope' in 'contexts'"):
        run("add_connection", "--kubeconfig", str(path), "--context", "nope")


def test_yaml_errors_do_not_echo_the_file(tmp_path, keys):
    path = tmp_path / "config"
    path.write_text(f"users:\n- name: x\n  user: {{token: {TOKEN}\n")
    with pytest.raises(CommandError, match="not valid YAML at line") as info:
        run("add_connection", "--kubeconfig", str(path))
    assert TOKEN not in str(info.value)


def test_invalid_server_is_reported(tmp_path, keys):
    path = write_kubeconfig(tmp_path / "config", cluster={"server": "http://127.0.0.1:8080"})
    with pytest.raises(CommandError, match="must start with https://"):
        run("add_connection", "--kubeconfig", str(path))


def test_insecure_cluster_needs_the_explicit_flag(tmp_path, keys):
    path = write_kubeconfig(
        tmp_path / "config", cluster={"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}
    )
    with pytest.raises(CommandError, match="--insecure-skip-tls-verify"):
        run("add_connection", "--kubeconfig", str(path))
    output = run("add_connection", "--kubeconfig", str(path), "--insecure-skip-tls-verify")
    assert Connection.objects.get(name="kind-dev").verify_tls is False
    assert "TLS verification: OFF" in output


def test_existing_connection_needs_update(tmp_path, keys, pki):
    path = write_kubeconfig(tmp_path / "config")
    run("add_connection", "--kubeconfig", str(path))
    with pytest.raises(CommandError, match="already exists; pass --update"):
        run("add_connection", "--kubeconfig", str(path))

    Connection.objects.filter(name="kind-dev").update(description="kept", impersonation_mode="impersonate")
    path = write_kubeconfig(
        tmp_path / "config",
        user={"client-certificate-data": b64(pki.client.certificate), "client-key-data": b64(pki.client.key)},
    )
    output = run("add_connection", "--kubeconfig", str(path), "--update")
    connection = Connection.objects.get(name="kind-dev")
    assert "Updated connection 'kind-dev'" in output
    assert connection.credential_kind == CredentialKind.CLIENT_CERTIFICATE and connection.token_ciphertext == ""
    assert connection.description == "kept" and connection.impersonation_mode == "impersonate"


def test_timeouts_set_on_import_kept_on_update_and_validated(tmp_path, keys):
    path = write_kubeconfig(tmp_path / "config")
    run("add_connection", "--kubeconfig", str(path), "--first-byte-timeout", "20", "--idle-timeout", "5")
    connection = Connection.objects.get(name="kind-dev")
    assert (connection.connect_timeout, connection.first_byte_timeout, connection.idle_timeout) == (10, 20, 5)
    run("add_connection", "--kubeconfig", str(path), "--update", "--connect-timeout", "2.5")
    connection.refresh_from_db()
    assert (connection.connect_timeout, connection.first_byte_timeout, connection.idle_timeout) == (2.5, 20, 5)
    with pytest.raises(CommandError, match="idle_timeout"):
        run("add_connection", "--kubeconfig", str(path), "--update", "--idle-timeout", "0")


# --- rotate_credential_keys -----------------------------------------------------


def test_rotation_moves_every_credential_to_the_first_key(token_connection, cert_connection, keys, pki):
    key_a = keys.first
    key_b = Fernet.generate_key().decode()
    keys(key_b, key_a)
    output = run("rotate_credential_keys")
    assert "Re-encrypted 2 credential(s) of 2 connection(s)" in output

    keys(key_b)
    assert Connection.objects.get(name="prod").decrypt_bearer_token() == TOKEN
    assert Connection.objects.get(name="dev").decrypt_client_key() == pki.client.key
    keys(key_a)
    with pytest.raises(crypto.CredentialDecryptionError):
        Connection.objects.get(name="prod").decrypt_bearer_token()


def test_rotation_keeps_updated_at(token_connection, keys):
    keys(Fernet.generate_key().decode(), keys.first)
    run("rotate_credential_keys")
    assert Connection.objects.get(name="prod").updated_at == token_connection.updated_at


def test_rotation_is_all_or_nothing(token_connection, cert_connection, keys):
    """A credential no key decrypts aborts the run and leaves every row as it was."""
    key_a = keys.first
    keys(Fernet.generate_key().decode())
    stranger = Connection.objects.create(name="zzz", server_url="https://z.example", bearer_token="other")
    before = dict(Connection.objects.values_list("name", "token_ciphertext"))
    keys(Fernet.generate_key().decode(), key_a)
    with pytest.raises(CommandError, match="bearer token of connection 'zzz'.*nothing was changed") as info:
        run("rotate_credential_keys")
    assert stranger.token_ciphertext not in str(info.value)
    assert dict(Connection.objects.values_list("name", "token_ciphertext")) == before


def test_generate_prints_a_usable_key_and_instructions(db):
    out, err = io.StringIO(), io.StringIO()
    call_command("rotate_credential_keys", "--generate", stdout=out, stderr=err)
    key = out.getvalue().strip()
    Fernet(key)
    assert f'AIRLOCK_FIELD_ENCRYPTION_KEYS="{key},$AIRLOCK_FIELD_ENCRYPTION_KEYS"' in err.getvalue()
