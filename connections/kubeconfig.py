"""Extract one cluster's server and static credential from a kubeconfig.

The gateway authenticates itself with a stored, static credential, so users
that obtain credentials at run time (exec or auth-provider plugins) or use
basic auth are refused rather than half-imported.  Error messages name the
kubeconfig entry and key, never a credential value.
"""

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from connections.validation import NAME_RE


class KubeconfigError(Exception):
    pass


@dataclass(frozen=True)
class ImportedCluster:
    context: str
    server_url: str
    ca_bundle: str
    insecure_skip_tls_verify: bool
    bearer_token: str = field(default="", repr=False)
    client_certificate: str = field(default="", repr=False)
    client_key: str = field(default="", repr=False)


# Keys whose meaning the gateway cannot honour: importing without them would
# silently connect differently from kubectl.
_UNSUPPORTED_CLUSTER_KEYS = {"proxy-url": "an HTTP proxy", "tls-server-name": "a TLS server name override"}
_UNSUPPORTED_USER_KEYS = {
    "exec": "an exec credential plugin",
    "auth-provider": "an auth-provider plugin",
    "username": "basic authentication",
    "password": "basic authentication",
    "as": "impersonation",
    "as-uid": "impersonation",
    "as-groups": "impersonation",
    "as-user-extra": "impersonation",
}


def load(path: Path) -> dict:
    """Parse a kubeconfig file; a YAML error reports its position only (the line may hold a secret)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KubeconfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeError:
        raise KubeconfigError(f"{path} is not UTF-8 text") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise KubeconfigError(f"{path} is not valid YAML{where}") from None
    if not isinstance(config, dict):
        raise KubeconfigError(f"{path} is not a kubeconfig (expected a mapping at the top level)")
    return config


def _named(config: dict, section: str, name: str, inner: str) -> dict:
    entries = config.get(section) or []
    if not isinstance(entries, list):
        raise KubeconfigError(f"'{section}' must be a list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(inner) or {}
            if not isinstance(value, dict):
                raise KubeconfigError(f"{section}[{name}].{inner} must be a mapping")
            return value
    raise KubeconfigError(f"no entry named {name!r} in '{section}'")


def _string(mapping: dict, key: str, where: str) -> str:
    value = mapping.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise KubeconfigError(f"{where}.{key} must be a string")
    return value


def _data(mapping: dict, key: str, where: str) -> str:
    encoded = _string(mapping, key, where)
    if not encoded:
        return ""
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise KubeconfigError(f"{where}.{key} is not base64-encoded PEM text") from None


def _file(mapping: dict, key: str, where: str, base_dir: Path) -> str:
    name = _string(mapping, key, where)
    if not name:
        return ""
    path = base_dir / name  # relative paths are relative to the kubeconfig, as in kubectl
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KubeconfigError(f"cannot read {where}.{key} file {path}: {exc.strerror}") from None
    except UnicodeError:
        raise KubeconfigError(f"{where}.{key} file {path} is not UTF-8 text") from None


def resolve(config: dict, base_dir: Path, context: str | None = None) -> ImportedCluster:
    context_name = context or _string(config, "current-context", "kubeconfig")
    if not context_name:
        raise KubeconfigError("the kubeconfig has no current-context; choose one with --context")
    ctx = _named(config, "contexts", context_name, "context")
    cluster_name = _string(ctx, "cluster", f"contexts[{context_name}]")
    user_name = _string(ctx, "user", f"contexts[{context_name}]")
    if not cluster_name or not user_name:
        raise KubeconfigError(f"context {context_name!r} must name a cluster and a user")

    cluster = _named(config, "clusters", cluster_name, "cluster")
    where = f"clusters[{cluster_name}]"
    for key, meaning in _UNSUPPORTED_CLUSTER_KEYS.items():
        if cluster.get(key):
            raise KubeconfigError(f"{where} uses {meaning} ({key}), which the gateway does not support")
    server = _string(cluster, "server", where)
    if not server:
        raise KubeconfigError(f"{where} has no server")
    ca_bundle = _data(cluster, "certificate-authority-data", where) or _file(
        cluster, "certificate-authority", where, base_dir
    )
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise KubeconfigError(f"{where}.insecure-skip-tls-verify must be true or false")

    user = _named(config, "users", user_name, "user")
    where = f"users[{user_name}]"
    for key, meaning in _UNSUPPORTED_USER_KEYS.items():
        if user.get(key):
            raise KubeconfigError(
                f"{where} uses {meaning} ({key}); the gateway needs a static credential: "
                "a bearer token (token/tokenFile) or a client certificate and key"
            )
    token = _string(user, "token", where) or _file(user, "tokenFile", where, base_dir)
    certificate = _data(user, "client-certificate-data", where) or _file(
        user, "client-certificate", where, base_dir
    )
    key = _data(user, "client-key-data", where) or _file(user, "client-key", where, base_dir)
    token = token.strip()
    if token and (certificate or key):
        raise KubeconfigError(
            f"{where} has both a token and a client certificate; the gateway uses exactly one"
        )
    if not token and not (certificate and key):
        raise KubeconfigError(
            f"{where} has no static credential: it needs a token, tokenFile, or a client certificate and key"
        )
    return ImportedCluster(
        context=context_name,
        server_url=server,
        ca_bundle=ca_bundle,
        insecure_skip_tls_verify=insecure,
        bearer_token=token,
        client_certificate=certificate,
        client_key=key,
    )


def default_name(context: str) -> str:
    """A connection name derived from a context name such as 'kind-dev' or 'admin@prod'."""
    name = re.sub(r"[^a-z0-9-]+", "-", context.lower()).strip("-")[:63].strip("-")
    if not NAME_RE.match(name):
        raise KubeconfigError(f"cannot derive a connection name from context {context!r}; pass --name")
    return name
