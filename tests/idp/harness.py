"""Run the test OpenID provider (idp.mjs) as a child process.

Plain Python (no pytest) so that fixtures, end-to-end tests and the demo can
all use it.  `npm ci` runs only when package-lock.json changed since the last
install (a stamp file inside node_modules holds the lockfile's hash).
"""

import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections import deque
from html.parser import HTMLParser
from pathlib import Path

import httpx

IDP_DIR = Path(__file__).resolve().parent
STAMP = IDP_DIR / "node_modules" / ".airlock-lock-sha256"
DEFAULT_CLIENTS = (
    {"client_id": "alice", "client_secret": "alice-secret", "groups": ["sre", "dev"]},
    {"client_id": "bob", "client_secret": "bob-secret", "groups": ["dev"]},
)


class IdPError(RuntimeError):
    pass


class _Forms(HTMLParser):
    """The forms of an HTML page: action and named input/button values."""

    def __init__(self, text):
        super().__init__()
        self.forms = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action"), "fields": {}})
        elif tag in ("input", "button") and attrs.get("name") and self.forms:
            self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or ""


def ensure_installed() -> None:
    """`npm ci` unless node_modules already matches package-lock.json."""
    lock_hash = hashlib.sha256((IDP_DIR / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == lock_hash:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise IdPError("npm is required to run the test identity provider")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(IDP_DIR)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    STAMP.write_text(lock_hash)


class IdP:
    """One running oidc-provider instance on 127.0.0.1."""

    def __init__(
        self,
        *,
        audience="https://airlock.test",
        clients=DEFAULT_CLIENTS,
        users=None,
        token_ttl=300,
        groups_claim="groups",
        issuer=None,
        shape=None,
        token_audience=None,
    ):
        """``shape``: issue tokens shaped like okta, entra, google, keycloak or dex tokens (shapes.mjs);
        ``token_audience``: their ``aud`` (a string or list) when it is not ``audience``."""
        self.audience = audience
        self.admin_token = os.urandom(16).hex()
        self._env = {
            **os.environ,
            "PORT": "0",
            "AUDIENCE": audience,
            "CLIENTS": json.dumps(list(clients)),
            "USERS": json.dumps(users or {}),
            "TOKEN_TTL": str(token_ttl),
            "GROUPS_CLAIM": groups_claim,
            "ADMIN_TOKEN": self.admin_token,
        }
        if issuer is not None:
            self._env["ISSUER"] = issuer
        if shape is not None:
            self._env["SHAPE"] = shape
        if token_audience is not None:
            self._env["TOKEN_AUDIENCE"] = json.dumps(token_audience)
        self._proc = None
        self._output = deque(maxlen=200)
        self.issuer = None
        self.port = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=20.0) -> "IdP":
        ensure_installed()
        node = shutil.which("node")
        if node is None:
            raise IdPError("node is required to run the test identity provider")
        self._proc = subprocess.Popen(
            [node, str(IDP_DIR / "idp.mjs")],
            env=self._env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        threading.Thread(target=self._drain, args=(ready,), daemon=True).start()
        if not ready.wait(timeout) or self.port is None:
            self.stop()
            raise IdPError("the identity provider did not start:\n" + self.output())
        self._wait_for_discovery(timeout)
        return self

    def _drain(self, ready):
        """Read the child's output (so it never blocks on a full pipe); spot the ready line."""
        for line in self._proc.stdout:
            self._output.append(line)
            if self.port is None and line.startswith("{"):
                info = json.loads(line)
                self.issuer, self.port = info["issuer"], info["port"]
                ready.set()
        ready.set()

    def _wait_for_discovery(self, timeout):
        response = httpx.get(f"{self.url}/.well-known/openid-configuration", timeout=timeout)
        response.raise_for_status()
        self.discovery = response.json()

    def output(self) -> str:
        return "".join(self._output)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def token_response(self, client_id, client_secret, **params) -> httpx.Response:
        return httpx.post(
            self.discovery["token_endpoint"],
            auth=(client_id, client_secret),
            data={"grant_type": "client_credentials", "scope": "kube", **params},
        )

    def get_token(self, client_id, client_secret) -> str:
        """A real client-credentials JWT access token."""
        response = self.token_response(client_id, client_secret)
        if response.status_code != 200:
            raise IdPError(f"token request failed: {response.status_code} {response.json().get('error')}")
        return response.json()["access_token"]

    def approve_device(self, verification_uri_complete, username, max_steps=8) -> None:
        """Play the person in the device flow: confirm the code, log in (any password), consent."""
        with httpx.Client(follow_redirects=True) as browser:
            page = browser.get(verification_uri_complete)
            for _ in range(max_steps):
                forms = _Forms(page.text).forms
                if not forms:
                    if "Sign-in Success" not in page.text:
                        raise IdPError("device flow did not succeed")
                    return
                fields = forms[0]["fields"]
                fields.pop("abort", None)
                if "login" in fields:
                    fields.update(login=username, password="any")
                page = browser.post(forms[0]["action"] or str(page.url), data=fields)
        raise IdPError("device flow did not finish")

    def device_token(self, client_id, username) -> str:
        """A person's access token by the device flow: start it, approve as ``username``, redeem the code."""
        start = httpx.post(self.discovery["device_authorization_endpoint"],
                           data={"client_id": client_id, "scope": "openid kube"})
        start.raise_for_status()
        self.approve_device(start.json()["verification_uri_complete"], username)
        response = httpx.post(self.discovery["token_endpoint"], data={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": start.json()["device_code"], "client_id": client_id,
        })
        if response.status_code != 200:
            raise IdPError(f"device token request failed: {response.status_code} {response.json().get('error')}")
        return response.json()["access_token"]

    def jwks(self) -> dict:
        return httpx.get(self.discovery["jwks_uri"]).json()

    def rotate(self, retire=False) -> str:
        """Sign with a new key from now on; retire=True also drops older keys from the JWKS."""
        response = httpx.post(
            f"{self.url}/admin/rotate",
            params={"retire": "1"} if retire else {},
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        response.raise_for_status()
        return response.json()["kid"]
