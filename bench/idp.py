"""A tiny OIDC issuer for the bench: discovery document and JWKS over HTTPS on 127.0.0.1, RS256 tokens.

The gateways of ``make bench`` authenticate the bench agent as production does: identity/oidc.py
fetches this issuer's discovery document and key set (trusting its CA through ``AIRLOCK_OIDC_CA_FILE``,
as docs/configuration.md says) and validates every request's JWT.  The issuer serves only those two
documents, from a thread of the bench process; the gateways fetch them once and cache the keys.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from kubesim.certs import generate_tls

AUDIENCE = "airlock"
KEY_ID = "bench-1"


class Issuer:
    """Start with :meth:`start`, stop with :meth:`stop`; :meth:`settings` is the gateways' environment."""

    def __init__(self, directory: Path):
        self.tls = generate_tls(directory)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.get_algorithm_by_name("RS256").to_jwk(self.key.public_key()))
        self._jwks = json.dumps({"keys": [jwk | {"kid": KEY_ID, "use": "sig", "alg": "RS256"}]}).encode()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> Issuer:
        documents: dict[str, bytes] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                body = documents.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):  # quiet: the bench's stderr is its progress
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        documents["/.well-known/openid-configuration"] = json.dumps({
            "issuer": self.url, "jwks_uri": f"{self.url}/keys", "id_token_signing_alg_values_supported": ["RS256"],
        }).encode()
        documents["/keys"] = self._jwks
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="bench-oidc-issuer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def settings(self) -> dict[str, str]:
        """The production settings that make a gateway trust this issuer (airlock/settings.py)."""
        issuer = {"issuer": self.url, "audience": [AUDIENCE], "groups_claim": "groups"}
        return {"AIRLOCK_OIDC_ISSUERS": json.dumps([issuer]), "AIRLOCK_OIDC_CA_FILE": str(self.tls.ca_file)}

    def token(self, subject: str, groups: list[str], *, lifetime: float = 6 * 3600, key=None) -> str:
        """An RFC 9068 access token for ``subject``, valid from now for ``lifetime`` seconds."""
        now = int(time.time())
        claims = {"iss": self.url, "aud": AUDIENCE, "sub": subject, "iat": now, "nbf": now,
                  "exp": now + int(lifetime), "groups": groups}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": KEY_ID, "typ": "at+jwt"})

    def forged_token(self, subject: str, groups: list[str]) -> str:
        """The same claims and key id, signed by another key: a gateway that validates JWTs refuses it."""
        return self.token(subject, groups, key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
