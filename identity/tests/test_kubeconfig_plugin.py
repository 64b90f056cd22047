"""The kubectl credential plugin, run as kubectl runs it, against the real test IdP."""

import json
import os
import re
import stat
import subprocess
import sys
from datetime import datetime, timezone

import jwt
import pytest

from identity.oidc import Authenticator
from identity.oidc_config import AuthenticatorConfig, IssuerConfig
from tests.idp.fixtures import AUDIENCE

PLUGIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "credential_plugin.py")


@pytest.fixture
def cache_home(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "alice.secret"
    path.write_text("alice-secret\n")
    return path


def run_plugin(*args, cache_home, env=None):
    """python3 -I -S: no site-packages and no project on sys.path, as on a bare agent machine."""
    return subprocess.run(
        [sys.executable, "-I", "-S", PLUGIN, *args],
        env={"PATH": os.environ["PATH"], "HOME": str(cache_home.parent), "XDG_CACHE_HOME": str(cache_home),
             **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def credential(result, api_version="client.authentication.k8s.io/v1"):
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["apiVersion"] == api_version
    assert document["kind"] == "ExecCredential"
    return document["status"]


async def validate(idp, token):
    auth = Authenticator(AuthenticatorConfig(issuers=(IssuerConfig(issuer=idp.issuer, audiences=(AUDIENCE,)),)))
    return await auth.authenticate(token)


async def test_client_credentials_exec_credential(idp, secret_file, cache_home):
    result = run_plugin("--issuer", idp.issuer, "--client-id", "alice", "--client-secret-file", str(secret_file),
                        "--audience", AUDIENCE, "--scope", "kube", cache_home=cache_home)
    status = credential(result)
    principal = await validate(idp, status["token"])
    assert (principal.username, principal.groups) == ("alice", ("sre", "dev"))
    expires = datetime.strptime(status["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs(expires.timestamp() - principal.expires_at) <= 2
    assert result.stderr == ""


def cache_files(cache_home):
    return sorted((cache_home / "airlock").glob("*.json"))


def test_token_is_cached_in_a_private_file(idp, secret_file, cache_home):
    args = ("--issuer", idp.issuer, "--client-id", "alice", "--client-secret-file", str(secret_file))
    first = credential(run_plugin(*args, cache_home=cache_home))
    [path] = cache_files(cache_home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    second = credential(run_plugin(*args, cache_home=cache_home))
    assert second == first  # a second token request would carry a new jti

    path.chmod(0o644)  # someone else could have read or planted it: not trusted
    third = credential(run_plugin(*args, cache_home=cache_home))
    assert third["token"] != first["token"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_token_close_to_expiry_is_not_reused(idp, secret_file, cache_home):
    args = ("--issuer", idp.issuer, "--client-id", "alice", "--client-secret-file", str(secret_file),
            "--min-validity", "400")  # the IdP's tokens live 300 s
    first = credential(run_plugin(*args, cache_home=cache_home))
    second = credential(run_plugin(*args, cache_home=cache_home))
    assert first["token"] != second["token"]


def test_separate_clients_have_separate_cache_entries(idp, secret_file, cache_home):
    alice = credential(run_plugin("--issuer", idp.issuer, "--client-id", "alice", "--client-secret-file",
                                  str(secret_file), cache_home=cache_home))
    bob = credential(run_plugin("--issuer", idp.issuer, "--client-id", "bob", "--client-secret-env", "BOB_SECRET",
                                cache_home=cache_home, env={"BOB_SECRET": "bob-secret"}))
    assert jwt.decode(alice["token"], options={"verify_signature": False})["sub"] == "alice"
    assert jwt.decode(bob["token"], options={"verify_signature": False})["sub"] == "bob"
    assert len(cache_files(cache_home)) == 2


def test_wrong_secret_is_reported_without_leaking_it(idp, cache_home):
    result = run_plugin("--issuer", idp.issuer, "--client-id", "alice", "--client-secret-env", "SECRET",
                        "--no-cache", cache_home=cache_home, env={"SECRET": "not-the-secret"})
    assert result.returncode == 1
    assert result.stdout == ""
    assert "refused the token request: invalid_client" in result.stderr
    assert "not-the-secret" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--client-secret-env", "UNSET"), {}, "environment variable UNSET is not set or empty"),
        (("--client-secret-file", "/nonexistent/secret"), {}, "cannot read the client secret file"),
        ((), {}, "give --client-secret-file or --client-secret-env"),
        (("--client-secret-env", "S"), {"S": "x", "KUBERNETES_EXEC_INFO": json.dumps(
            {"apiVersion": "client.authentication.k8s.io/v1alpha1"})}, "this plugin speaks"),
    ],
)
def test_usage_errors(idp, cache_home, args, env, message):
    result = run_plugin("--issuer", idp.issuer, "--client-id", "alice", *args, cache_home=cache_home, env=env)
    assert result.returncode == 1
    assert message in result.stderr


V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"


@pytest.mark.parametrize(
    ("args", "exec_info", "answered"),
    [
        ((), None, V1),  # no KUBERNETES_EXEC_INFO and no --api-version
        (("--api-version", V1BETA1), None, V1BETA1),  # lightkube and kr8s send no KUBERNETES_EXEC_INFO
        ((), V1BETA1, V1BETA1),  # kubectl and the Python client with a v1beta1 kubeconfig
        (("--api-version", V1BETA1), V1, V1),  # what the client asks for wins
    ],
)
def test_answers_in_the_version_the_client_asks_for(idp, secret_file, cache_home, args, exec_info, answered):
    env = {"KUBERNETES_EXEC_INFO": json.dumps({"apiVersion": exec_info, "kind": "ExecCredential",
                                               "spec": {"interactive": False}})} if exec_info else {}
    result = run_plugin("--issuer", idp.issuer, "--client-id", "alice", "--client-secret-file", str(secret_file),
                        *args, cache_home=cache_home, env=env)
    assert credential(result, answered)["token"].count(".") == 2


def test_secret_is_never_taken_from_the_command_line(idp, cache_home):
    result = run_plugin("--issuer", idp.issuer, "--client-id", "alice", "--client-secret", "alice-secret",
                        cache_home=cache_home)
    assert result.returncode == 2
    assert "never taken from the command line" in result.stderr
    assert "alice-secret" not in result.stderr


def test_plain_http_issuer_only_on_loopback(cache_home):
    result = run_plugin("--issuer", "http://idp.example", "--client-id", "a", "--client-secret-env", "S",
                        cache_home=cache_home, env={"S": "x"})
    assert result.returncode == 1
    assert "must be an https URL" in result.stderr


async def test_device_flow(idp, cache_home):
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", PLUGIN, "--issuer", idp.issuer, "--client-id", "device-agent", "--device",
         "--scope", "kube"],
        env={"PATH": os.environ["PATH"], "XDG_CACHE_HOME": str(cache_home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        prompt = process.stderr.readline()
        match = re.fullmatch(r"To sign in, open (\S+) and enter the code (\S+)\n", prompt)
        assert match, prompt
        assert match.group(1).endswith(f"user_code={match.group(2)}")
        idp.approve_device(match.group(1), "carol")
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, stderr
    principal = await validate(idp, json.loads(stdout)["status"]["token"])
    assert (principal.username, principal.groups) == ("carol", ("oncall",))
