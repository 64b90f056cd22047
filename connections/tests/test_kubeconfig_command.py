"""`manage.py kubeconfig`: the agent's kubeconfig has the gateway, its CA and the exec plugin, no credential."""

import asyncio
import base64
import datetime
import ipaddress
import json
import os
import ssl
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.management import CommandError, call_command

from connections.management.commands.kubeconfig import PLUGIN
from connections.models import Connection
from identity.oidc import Authenticator
from identity.oidc_config import AuthenticatorConfig, IssuerConfig
from tests.idp.fixtures import AUDIENCE

KUBECTL = os.path.join(os.path.dirname(sys.executable), "kubectl")

pytestmark = pytest.mark.django_db


@pytest.fixture
def connection():
    return Connection.objects.create(name="prod", server_url="https://k8s.example:6443")


def _certificate(subject, public_key, issuer, signing_key, *, ca, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _pem(certificate=None, key=None):
    if certificate is not None:
        return certificate.public_bytes(serialization.Encoding.PEM)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class TestCA:
    """A throw-away CA; issues a TLS certificate for a gateway double on 127.0.0.1."""

    __test__ = False

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airlock test CA")])
        self.pem = _pem(_certificate(self.name, self.key.public_key(), self.name, self.key, ca=True))
        self.key_pem = _pem(key=self.key)

    def server_certificate(self):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        certificate = _certificate(subject, key.public_key(), self.name, self.key, ca=False, san=san)
        return _pem(certificate), _pem(key=key)


def write_kubeconfig(tmp_path, *extra, **overrides):
    options = {
        "connection": "prod",
        "client_id": "alice",
        "issuer": "https://idp.example",
        "gateway_url": "https://airlock.example:8443/",
        "output": str(tmp_path / "agent.kubeconfig"),
        **overrides,
    }
    call_command("kubeconfig", *extra, **options)
    return yaml.safe_load((tmp_path / "agent.kubeconfig").read_text())


def test_kubeconfig_shape(tmp_path, connection):
    ca = TestCA()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.pem + ca.key_pem)  # a key pasted into the CA file must not travel along
    config = write_kubeconfig(
        tmp_path, client_secret_file="/etc/airlock/alice.secret", audience=AUDIENCE, gateway_ca=str(ca_file),
    )
    assert stat.S_IMODE((tmp_path / "agent.kubeconfig").stat().st_mode) == 0o600
    assert config["current-context"] == "airlock-prod"
    [cluster] = config["clusters"]
    assert cluster["cluster"]["server"] == "https://airlock.example:8443/k8s/prod"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == ca.pem
    [user] = config["users"]
    assert user["user"] == {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": "python3",
        "args": [str(PLUGIN), "--issuer", "https://idp.example", "--client-id", "alice",
                 "--client-secret-file", "/etc/airlock/alice.secret", "--audience", AUDIENCE],
        "interactiveMode": "Never",
        "provideClusterInfo": False,
        "installHint": user["user"]["exec"]["installHint"],
    }}
    assert config["contexts"] == [{"name": "airlock-prod", "context": {"cluster": "airlock-prod", "user": "airlock-prod"}}]
    text = (tmp_path / "agent.kubeconfig").read_text()
    for credential_key in ("token", "client-key", "client-certificate", "password", "auth-provider", "PRIVATE"):
        assert credential_key not in text


def test_exec_api_version_v1beta1(tmp_path, connection):
    """lightkube reads only v1beta1 (and v1alpha1) exec entries and runs the plugin without KUBERNETES_EXEC_INFO,
    so the plugin is told the version on its command line too."""
    exec_ = write_kubeconfig(tmp_path, "--exec-api-version", "v1beta1", client_secret_env="S")["users"][0]["user"]["exec"]
    assert exec_["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert exec_["args"][-2:] == ["--api-version", "client.authentication.k8s.io/v1beta1"]
    with pytest.raises(CommandError, match="invalid choice"):
        write_kubeconfig(tmp_path, "--force", "--exec-api-version", "v1alpha1", client_secret_env="S")


def test_device_flow_and_secret_env(tmp_path, connection):
    config = write_kubeconfig(tmp_path, "--device", client_id="person", scope="kube", idp_ca="/etc/ssl/idp.pem")
    exec_ = config["users"][0]["user"]["exec"]
    assert exec_["interactiveMode"] == "IfAvailable"
    assert exec_["args"][-5:] == ["--device", "--scope", "kube", "--ca-file", "/etc/ssl/idp.pem"]
    config = write_kubeconfig(tmp_path, "--force", client_secret_env="AIRLOCK_SECRET")
    assert config["users"][0]["user"]["exec"]["args"][-2:] == ["--client-secret-env", "AIRLOCK_SECRET"]
    assert "certificate-authority-data" not in config["clusters"][0]["cluster"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"connection": "staging", "client_secret_env": "S"}, "no connection named 'staging'"),
        ({"connection": "Prod!", "client_secret_env": "S"}, "connection names use"),
        ({"client_secret_file": "alice.secret"}, "absolute path"),
        ({}, "give --client-secret-file or --client-secret-env, or --device"),
        ({"client_secret_env": "S", "gateway_url": "http://airlock.example"}, "must use https"),
        ({"client_secret_env": "S", "gateway_url": "https://u:p@airlock.example"}, "no credentials"),
        ({"client_secret_env": "S", "issuer": "http://idp.example"}, "must use https"),
        ({"client_secret_env": "S", "gateway_ca": "/nonexistent/ca.pem"}, "cannot read the gateway CA file"),
    ],
)
def test_refusals(tmp_path, connection, overrides, message):
    with pytest.raises(CommandError, match=message):
        write_kubeconfig(tmp_path, **overrides)
    assert not (tmp_path / "agent.kubeconfig").exists()


def test_ca_file_without_certificate_is_refused(tmp_path, connection):
    (tmp_path / "key.pem").write_bytes(TestCA().key_pem)
    with pytest.raises(CommandError, match="holds no PEM certificate"):
        write_kubeconfig(tmp_path, client_secret_env="S", gateway_ca=str(tmp_path / "key.pem"))


def test_existing_file_is_kept_unless_forced(tmp_path, connection):
    (tmp_path / "agent.kubeconfig").write_text("keep me")
    with pytest.raises(CommandError, match="exists"):
        write_kubeconfig(tmp_path, client_secret_env="S")
    assert (tmp_path / "agent.kubeconfig").read_text() == "keep me"
    assert write_kubeconfig(tmp_path, "--force", client_secret_env="S")["kind"] == "Config"


class _Recorder(BaseHTTPRequestHandler):
    """Stands in for the gateway: records what kubectl sends, answers /version."""

    seen = []

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"major": "1", "minor": "37", "gitVersion": "v1.37.0-airlock-test"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder(tmp_path):
    """The recorder behind TLS: kubectl sends no credentials to a plain-http server."""
    ca = TestCA()
    certificate, key = ca.server_certificate()
    (tmp_path / "server.pem").write_bytes(certificate + key)
    (tmp_path / "gateway-ca.pem").write_bytes(ca.pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    _Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("exec_api_version", ["v1", "v1beta1"])
def test_kubectl_runs_the_plugin_and_sends_its_token(tmp_path, connection, idp, recorder, exec_api_version):
    """Real kubectl with the written kubeconfig: the gateway receives a token the validator accepts."""
    (tmp_path / "alice.secret").write_text("alice-secret")
    write_kubeconfig(
        tmp_path, "--exec-api-version", exec_api_version, issuer=idp.issuer,
        client_secret_file=str(tmp_path / "alice.secret"), audience=AUDIENCE,
        gateway_url=f"https://127.0.0.1:{recorder.server_address[1]}", gateway_ca=str(tmp_path / "gateway-ca.pem"),
        python=sys.executable,
    )
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(tmp_path / "agent.kubeconfig"), "get", "--raw", "/version"],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["gitVersion"] == "v1.37.0-airlock-test"
    [(path, authorization)] = _Recorder.seen
    assert path == "/k8s/prod/version"
    scheme, token = authorization.split(" ", 1)
    assert scheme == "Bearer"
    auth = Authenticator(AuthenticatorConfig(issuers=(IssuerConfig(issuer=idp.issuer, audiences=(AUDIENCE,)),)))
    principal = asyncio.run(auth.authenticate(token))
    assert (principal.username, principal.groups) == ("alice", ("sre", "dev"))
