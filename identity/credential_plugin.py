#!/usr/bin/env python3
"""Airlock's kubectl credential plugin: an OIDC access token as an ExecCredential.

kubectl runs this (``users[].user.exec`` in the kubeconfig written by
``manage.py kubeconfig``) and sends the printed token to the gateway.  It gets
the token from the identity provider's token endpoint (discovered from the
issuer) by client credentials, or by the device flow with --device, and caches
it in a private file until shortly before it expires.

Standard library only, and no imports from the Airlock project, so that any
python3 on an agent machine can run the file on its own.  The client secret is
read from a file or an environment variable, never from the command line, and
neither the secret nor the token is ever written to stderr.
"""

import argparse
import base64
import hashlib
import http.client
import ipaddress
import json
import os
import ssl
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
DEFAULT_API_VERSION = API_VERSIONS[0]
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
HTTP_TIMEOUT = 15
MAX_RESPONSE_BYTES = 1024 * 1024


class PluginError(Exception):
    pass


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: a redirected POST could carry the secret elsewhere."""

    def redirect_request(self, *args, **kwargs):
        return None


def _check_url(url, what):
    """https only; plain http is accepted for loopback hosts (tests, local demo)."""
    if not isinstance(url, str):
        raise PluginError(f"{what} is missing")
    parts = urllib.parse.urlsplit(url)
    loopback = parts.hostname == "localhost"
    try:
        loopback = loopback or ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        pass
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise PluginError(f"{what} must be an https URL (plain http only on loopback)")
    return url


class IdentityProvider:
    def __init__(self, issuer, ca_file=None):
        self.issuer = _check_url(issuer, "issuer")
        context = ssl.create_default_context(cafile=ca_file)
        self._opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))
        self._metadata = None

    def _request(self, url, form=None, headers=None):
        """(status, JSON object) for a GET, or a form POST when ``form`` is given."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url, data=data, headers={"Accept": "application/json", **(headers or {})})
        try:
            with self._opener.open(request, timeout=HTTP_TIMEOUT) as response:
                status, body = response.status, response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read(MAX_RESPONSE_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise PluginError(f"cannot reach the identity provider at {url}: {reason}") from None
        try:
            document = json.loads(body) if len(body) <= MAX_RESPONSE_BYTES else None
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise PluginError(f"the identity provider answered {url} with HTTP {status} and no JSON object")
        return status, document

    @property
    def metadata(self):
        if self._metadata is None:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            status, document = self._request(url)
            if status != 200:
                raise PluginError(f"issuer discovery failed: HTTP {status}")
            if document.get("issuer") != self.issuer:
                raise PluginError("the discovery document names a different issuer")
            self._metadata = document
        return self._metadata

    def endpoint(self, name):
        return _check_url(self.metadata.get(name), name)

    def post(self, endpoint, form, client_id, client_secret=None):
        """POST to an endpoint, authenticating with client_secret_basic (RFC 6749 2.3.1) if confidential."""
        headers = {}
        if client_secret is not None:
            pair = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form = {**form, "client_id": client_id}
        return self._request(self.endpoint(endpoint), form, headers)


def _oauth_error(document):
    """The OAuth error code only: it is short, standard and never secret."""
    code = document.get("error")
    if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) <= 64:
        return code
    return "unknown_error"


def _token_from(status, document):
    token = document.get("access_token")
    if status != 200 or not isinstance(token, str) or not token:
        raise PluginError(f"the identity provider refused the token request: {_oauth_error(document)}")
    if str(document.get("token_type", "")).lower() != "bearer":
        raise PluginError("the identity provider issued a token that is not a bearer token")
    expires_in = document.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or expires_in <= 0:
        raise PluginError("the identity provider did not say when the token expires")
    return {"access_token": token, "expires_at": time.time() + expires_in}


def resource_params(args):
    params = {}
    if args.scope:
        params["scope"] = args.scope
    if args.audience:
        params["resource"] = args.audience  # RFC 8707 resource indicator
    return params


def client_credentials(idp, args, secret):
    form = {"grant_type": "client_credentials", **resource_params(args)}
    return _token_from(*idp.post("token_endpoint", form, args.client_id, secret))


def device_flow(idp, args, secret, sleep=time.sleep):
    """RFC 8628: show the user a code on stderr, then poll until they approve."""
    if "device_authorization_endpoint" not in idp.metadata:
        raise PluginError("the identity provider does not offer the device flow")
    status, start = idp.post("device_authorization_endpoint", resource_params(args), args.client_id, secret)
    device_code, user_code = start.get("device_code"), start.get("user_code")
    if status != 200 or not isinstance(device_code, str) or not isinstance(user_code, str):
        raise PluginError(f"the identity provider refused the device authorization: {_oauth_error(start)}")
    where = start.get("verification_uri_complete") or start.get("verification_uri")
    print(f"To sign in, open {where} and enter the code {user_code}", file=sys.stderr, flush=True)
    interval = start.get("interval") if isinstance(start.get("interval"), int) else 5
    deadline = time.monotonic() + (start["expires_in"] if isinstance(start.get("expires_in"), int) else 600)
    form = {"grant_type": DEVICE_GRANT, "device_code": device_code}
    while time.monotonic() < deadline:
        sleep(interval)
        status, document = idp.post("token_endpoint", form, args.client_id, secret)
        error = _oauth_error(document) if status != 200 else None
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        return _token_from(status, document)
    raise PluginError("the device code expired before it was approved")


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "airlock")


def cache_path(args):
    key = json.dumps([args.issuer, args.client_id, args.audience, args.scope, bool(args.device)])
    return os.path.join(args.cache_dir, hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def read_cache(path, min_validity):
    """A cached token valid for at least ``min_validity`` seconds, from a file only we can read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or info.st_uid != os.getuid():
            return None
        try:
            entry = json.loads(handle.read(MAX_RESPONSE_BYTES))
        except ValueError:
            return None
    if not isinstance(entry, dict) or not isinstance(entry.get("access_token"), str):
        return None
    expires_at = entry.get("expires_at")
    if not isinstance(expires_at, (int, float)) or expires_at - time.time() < min_validity:
        return None
    return entry


def write_cache(path, entry):
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.stat(directory).st_uid == os.getuid():
        os.chmod(directory, 0o700)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".token-")  # created 0600
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(entry, handle)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_secret(args):
    if args.client_secret_file:
        try:
            with open(args.client_secret_file, encoding="utf-8") as handle:
                secret = handle.read().strip()
        except OSError as exc:
            raise PluginError(f"cannot read the client secret file: {exc.strerror}") from None
    elif args.client_secret_env:
        secret = os.environ.get(args.client_secret_env, "").strip()
        if not secret:
            raise PluginError(f"the environment variable {args.client_secret_env} is not set or empty")
    else:
        return None
    if not secret:
        raise PluginError("the client secret is empty")
    return secret


def exec_credential(entry, api_version=DEFAULT_API_VERSION):
    """The ExecCredential; v1 and v1beta1 have the same shape for a bearer token."""
    expires = datetime.fromtimestamp(entry["expires_at"], tz=timezone.utc)
    return {
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "status": {"token": entry["access_token"], "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
    }


def exec_api_version(default):
    """The apiVersion to answer with: the one the client asks for in KUBERNETES_EXEC_INFO (kubectl,
    client-go and the Python client send it), else ``default`` (lightkube and kr8s send nothing and
    read only ``status``; the kubeconfig passes its own version as --api-version)."""
    raw = os.environ.get("KUBERNETES_EXEC_INFO")
    if not raw:
        return default
    try:
        api_version = json.loads(raw).get("apiVersion")
    except (ValueError, AttributeError):
        raise PluginError("KUBERNETES_EXEC_INFO is not a JSON object") from None
    if api_version not in API_VERSIONS:
        raise PluginError(f"the client asked for {api_version}; this plugin speaks {' and '.join(API_VERSIONS)}")
    return api_version


def get_credential(args):
    api_version = exec_api_version(args.api_version)
    secret = read_secret(args)
    if secret is None and not args.device:
        raise PluginError("give --client-secret-file or --client-secret-env (or --device)")
    path = None if args.no_cache else cache_path(args)
    entry = read_cache(path, args.min_validity) if path else None
    if entry is None:
        idp = IdentityProvider(args.issuer, ca_file=args.ca_file)
        entry = device_flow(idp, args, secret) if args.device else client_credentials(idp, args, secret)
        if path:
            try:
                write_cache(path, entry)
            except OSError as exc:
                print(f"airlock-credential: token not cached: {exc.strerror}", file=sys.stderr)
    return exec_credential(entry, api_version)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """Never echo stray arguments: they may be a secret typed on the command line."""
        if message.startswith("unrecognized arguments"):
            message = ("unrecognized arguments (a client secret is never taken from the command line: "
                       "use --client-secret-file or --client-secret-env)")
        super().error(message)


def parse_args(argv=None):
    parser = _Parser(
        prog="airlock-credential",
        allow_abbrev=False,
        description="Print an OIDC access token for kubectl as a client.authentication.k8s.io ExecCredential "
                    "(v1 or v1beta1, as the client asks).",
    )
    parser.add_argument("--issuer", required=True, help="OIDC issuer URL")
    parser.add_argument("--client-id", required=True)
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--client-secret-file", help="file holding the client secret")
    secret.add_argument("--client-secret-env", help="environment variable holding the client secret")
    parser.add_argument("--device", action="store_true", help="sign in a person with the device flow")
    parser.add_argument("--audience", help="the gateway's audience (sent as an RFC 8707 resource)")
    parser.add_argument("--scope", help="scopes to request, space-separated")
    parser.add_argument("--ca-file", help="CA bundle for the identity provider's TLS certificate")
    parser.add_argument("--cache-dir", default=default_cache_dir(), help="default: $XDG_CACHE_HOME/airlock")
    parser.add_argument("--no-cache", action="store_true", help="always ask the identity provider")
    parser.add_argument("--api-version", choices=API_VERSIONS, default=DEFAULT_API_VERSION,
                        help="ExecCredential version when the client does not say (no KUBERNETES_EXEC_INFO)")
    parser.add_argument("--min-validity", type=int, default=60,
                        help="reuse a cached token only if valid for at least this many seconds (default 60)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        credential = get_credential(args)
    except PluginError as exc:
        print(f"airlock-credential: {exc}", file=sys.stderr)
        return 1
    json.dump(credential, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
