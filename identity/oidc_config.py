"""Which identity providers the gateway trusts for agents' bearer JWTs, and how their claims map to a Principal.

Read from Django settings (``AIRLOCK_OIDC_*``) by :func:`config_from_settings`; validated when built, so a
misconfigured issuer stops the gateway at startup instead of refusing tokens later.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from jwt.algorithms import get_default_algorithms

DEFAULT_ALGORITHMS = ("RS256", "ES256", "PS256", "EdDSA")

# The only algorithms an issuer may be configured with: asymmetric ones, and
# each bound to the key type it needs.  HMAC ("HS*") and "none" are absent on
# purpose: a published public key must never be usable as an HMAC secret.
KEY_TYPE_FOR_ALGORITHM = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def check_url(url: object, what: str) -> str:
    """https URLs only; plain http is accepted for loopback hosts (tests, local demo)."""
    if not isinstance(url, str):
        raise ValueError(f"{what} must be a URL")
    parts = urlsplit(url)
    if not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{what} must be an absolute URL without query or fragment")
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(parts.hostname)):
        raise ValueError(f"{what} must use https (plain http only on loopback)")
    return url


def _string_tuple(value, what: str, allow_empty=False) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be a string or a list of non-empty strings")
    if not value and not allow_empty:
        raise ValueError(f"{what} must not be empty")
    return tuple(value)


@dataclass(frozen=True)
class IssuerConfig:
    """One trusted identity provider and how its claims map to a Principal."""

    issuer: str
    audiences: tuple[str, ...]
    username_claim: str = "sub"
    username_prefix: str = ""
    groups_claim: str = "groups"
    groups_prefix: str = ""
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    # Required in addition to exp, iss, aud and sub (always required).
    required_claims: tuple[str, ...] = ("iat",)
    # Accepted JOSE "typ" header values (RFC 9068: at+jwt); a token without typ
    # is accepted.  Empty: no check.
    token_types: tuple[str, ...] = ("at+jwt", "jwt")
    # Set to skip discovery.
    jwks_uri: str | None = None

    def __post_init__(self):
        check_url(self.issuer, "issuer")
        if self.jwks_uri is not None:
            check_url(self.jwks_uri, "jwks_uri")
        # Normalise list-ish fields, so audiences="gw" never becomes ("g", "w").
        for name in ("audiences", "algorithms", "required_claims", "token_types"):
            value = _string_tuple(getattr(self, name), name, allow_empty=name in ("required_claims", "token_types"))
            object.__setattr__(self, name, value)
        for name in ("username_claim", "groups_claim"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string")
        for name in ("username_prefix", "groups_prefix"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string")
        for alg in self.algorithms:
            if alg not in KEY_TYPE_FOR_ALGORITHM or alg not in get_default_algorithms():
                raise ValueError(f"algorithm {alg!r} is not allowed (asymmetric signature algorithms only)")

    @classmethod
    def from_mapping(cls, data: Mapping) -> IssuerConfig:
        """Build from settings JSON; ``audience`` may be a string or a list."""
        if not isinstance(data, Mapping):
            raise ValueError("each OIDC issuer must be a JSON object")
        data = dict(data)
        known = {f for f in cls.__dataclass_fields__} | {"audience"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown OIDC issuer setting(s): {', '.join(unknown)}")
        if "audience" in data:
            if "audiences" in data:
                raise ValueError("give either audience or audiences, not both")
            data["audiences"] = data.pop("audience")
        if "issuer" not in data or "audiences" not in data:
            raise ValueError("each OIDC issuer needs issuer and audience")
        return cls(**data)


@dataclass(frozen=True)
class AuthenticatorConfig:
    issuers: tuple[IssuerConfig, ...]
    leeway: float = 30.0  # seconds of clock skew tolerated for exp/nbf/iat
    jwks_ttl: float = 600.0  # how long a fetched key set is trusted
    refresh_cooldown: float = 30.0  # unknown-kid refreshes per issuer, at most one per this
    failure_backoff: float = 5.0  # after a failed fetch, answer "unavailable" without retrying
    token_cache_size: int = 10_000
    http_timeout: float = 5.0
    ca_file: str | None = None  # CA bundle for the identity providers' TLS
    max_token_bytes: int = 16 * 1024

    def __post_init__(self):
        names = [i.issuer for i in self.issuers]
        if len(set(names)) != len(names):
            raise ValueError("an OIDC issuer is configured twice")
        if self.leeway < 0 or self.jwks_ttl <= 0 or self.refresh_cooldown < 0 or self.failure_backoff < 0:
            raise ValueError("OIDC timing settings must not be negative")


def config_from_settings(settings) -> AuthenticatorConfig:
    """Read AIRLOCK_OIDC_* settings (see airlock/settings.py)."""
    raw = getattr(settings, "AIRLOCK_OIDC_ISSUERS", [])
    if not isinstance(raw, list):
        raise ValueError("AIRLOCK_OIDC_ISSUERS must be a JSON list")
    return AuthenticatorConfig(
        issuers=tuple(IssuerConfig.from_mapping(item) for item in raw),
        leeway=float(getattr(settings, "AIRLOCK_OIDC_LEEWAY", 30.0)),
        ca_file=getattr(settings, "AIRLOCK_OIDC_CA_FILE", None) or None,
    )
