"""Validation of connection settings, shared by the model, the admin and add_connection.

Error messages describe the problem without echoing the value: a server URL
may carry userinfo, and a PEM field may have a private key pasted into it.
"""

import ipaddress
import re
import ssl
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ValidationError

# A DNS label: the connection name is a URL path segment (/k8s/<name>/).
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
NAME_HELP = "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
# What the gateway (/k8s/<name>/) and the agent lease API take for a connection's name before looking it up
# (also '_', which no valid name has: such a name is then not found).
CONNECTION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?$")

_HOST_LABEL_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$")
_PATH_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~-]+$")
# Header-safe visible ASCII, no spaces: tokens and prefixes end up in request headers.
_HEADER_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")


def validate_name(value: str) -> None:
    if not NAME_RE.match(value):
        raise ValidationError(f"Use {NAME_HELP}.", code="invalid")


def _validate_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL_RE.match(label) for label in labels):
        raise ValidationError("The server URL's host is not a valid DNS name or IP address.", code="invalid")


def validate_server_url(value: str) -> None:
    """https://host[:port][/path/prefix] — no userinfo, query or fragment."""
    if any(ch in value for ch in "?#\\") or any(ch.isspace() for ch in value):
        raise ValidationError(
            "The server URL must not contain a query, a fragment, backslashes or whitespace.", code="invalid"
        )
    parts = urlsplit(value)
    if parts.scheme != "https":
        raise ValidationError("The server URL must start with https://.", code="invalid")
    if "@" in parts.netloc:
        raise ValidationError(
            "The server URL must not contain a username or password; configure a credential instead.",
            code="invalid",
        )
    try:
        port = parts.port
    except ValueError:
        raise ValidationError("The server URL's port is not a number between 1 and 65535.", code="invalid") from None
    if port == 0:
        raise ValidationError("The server URL's port is not a number between 1 and 65535.", code="invalid")
    if not parts.hostname:
        raise ValidationError("The server URL has no host.", code="invalid")
    _validate_host(parts.hostname)
    path = parts.path.rstrip("/")
    if path:
        segments = path.split("/")[1:]
        if not all(_PATH_SEGMENT_RE.match(s) and s not in {".", ".."} for s in segments):
            raise ValidationError(
                "The server URL's path must be empty or a plain prefix such as /k8s/clusters/c-1 "
                "(letters, digits, '.', '_', '~', '-'; no empty, '.' or '..' segments).",
                code="invalid",
            )


def normalize_server_url(value: str) -> str:
    return value.strip().rstrip("/")


def normalize_pem(value: str) -> str:
    """LF line endings (browsers submit textareas with CRLF) and one final newline."""
    value = value.replace("\r\n", "\n").strip()
    return value + "\n" if value else ""


def _reject_private_key(value: str, field: str) -> None:
    if "PRIVATE KEY" in value:
        raise ValidationError(
            f"The {field} contains a private key; it must hold certificates only "
            "(the client key goes in its own write-only field).",
            code="private_key",
        )


def load_certificates(value: str, field: str) -> list[x509.Certificate]:
    """Parse PEM certificates; the field is shown in the admin, so a private key is refused."""
    _reject_private_key(value, field)
    try:
        return x509.load_pem_x509_certificates(value.encode("utf-8"))
    except (ValueError, UnicodeError):
        raise ValidationError(f"The {field} is not PEM-encoded X.509 certificates.", code="invalid_pem") from None


def validate_ca_bundle(value: str) -> None:
    load_certificates(value, "CA bundle")
    try:
        ssl.create_default_context(cadata=value)
    except ssl.SSLError:
        raise ValidationError("The CA bundle cannot be loaded as TLS trust anchors.", code="invalid_pem") from None


def validate_client_certificate(value: str) -> None:
    load_certificates(value, "client certificate")


def load_private_key(value: str):
    """Parse an unencrypted PEM private key; messages never include key material."""
    try:
        return serialization.load_pem_private_key(value.encode("utf-8"), password=None)
    except TypeError:
        raise ValidationError(
            "The client key is encrypted with a passphrase; store it unencrypted "
            "(it is encrypted at rest by Airlock).",
            code="encrypted_key",
        ) from None
    except (ValueError, UnicodeError, UnsupportedAlgorithm):
        raise ValidationError("The client key is not a PEM-encoded private key.", code="invalid_pem") from None


def validate_key_matches_certificate(leaf: x509.Certificate, key) -> None:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise ValidationError(
            "The client key does not belong to the client certificate (the first certificate in the PEM).",
            code="key_mismatch",
        )


def validate_token(value: str) -> None:
    if not _HEADER_TOKEN_RE.match(value):
        raise ValidationError(
            "The bearer token must be printable ASCII without spaces or line breaks.", code="invalid_token"
        )


def validate_user_prefix(value: str) -> None:
    if not _HEADER_TOKEN_RE.match(value):
        raise ValidationError(
            "The impersonation user prefix must be non-empty printable ASCII without spaces.", code="invalid"
        )
    if value.startswith("system:"):
        raise ValidationError(
            "The impersonation user prefix must not start with 'system:' (reserved by Kubernetes).", code="invalid"
        )


# What a trusted proxy's pattern lists may hold: globs of user or group names, at most this many.
MAX_PROXY_PATTERNS = 100
_PATTERN_TEXT_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,253}$")


def validate_proxy_patterns(value) -> None:
    """A JSON list of glob strings (``*`` and ``?``); none may name a ``system:`` identity, which no proxy
    can assert (identity.proxies)."""
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValidationError('Give a JSON list of patterns, e.g. ["*@example.com"].', code="proxy_pattern")
    if len(value) > MAX_PROXY_PATTERNS:
        raise ValidationError(f"At most {MAX_PROXY_PATTERNS} patterns.", code="proxy_pattern")
    for pattern in value:
        if not _PATTERN_TEXT_RE.match(pattern) or pattern != pattern.strip():
            raise ValidationError("A pattern is 1 to 253 printable characters without surrounding spaces.",
                                  code="proxy_pattern")
        if pattern.lower().startswith("system:"):
            raise ValidationError('Names starting with "system:" are never asserted through the gateway; '
                                  f"remove {pattern!r}.", code="proxy_pattern")


def validate_proxy_principal_field(value: str) -> None:
    """An issuer, subject or group a proxy's token is matched on, exactly: no control characters."""
    if value != value.strip() or any(ord(ch) < 0x20 or ord(ch) == 0x7f for ch in value):
        raise ValidationError("No control characters or surrounding spaces.", code="proxy_identity")
