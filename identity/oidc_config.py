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


# What the gateway does with a token whose groups the identity provider left out and only
# referenced (OpenID Connect distributed claims: ``_claim_names``; Entra ID's groups overage).
GROUPS_OVERAGE = ("refuse", "ignore")
CLAIM_MISSING = object()
CLAIM_INVALID = object()


def check_claim_name(name: object, what: str) -> str:
    """A top-level claim name, or an RFC 6901 JSON Pointer into nested objects (``/realm_access/roles``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string")
    if name.startswith("/"):
        for segment in name[1:].split("/"):
            if not segment or "~" in segment.replace("~0", "").replace("~1", ""):
                raise ValueError(f"{what} {name!r} is not a JSON Pointer to a nested claim (/object/member)")
    return name


def claim_value(claims: Mapping, name: str):
    """The value ``name`` (see :func:`check_claim_name`) selects in ``claims``.

    ``CLAIM_MISSING`` when a member on the way is absent, ``CLAIM_INVALID`` when a step is not an
    object: a pointer walks objects only (no array indices), the part of RFC 6901 claims need.
    """
    if not name.startswith("/"):
        return claims.get(name, CLAIM_MISSING)
    value = claims
    for segment in name[1:].split("/"):
        if not isinstance(value, Mapping):
            return CLAIM_INVALID
        value = value.get(segment.replace("~1", "/").replace("~0", "~"), CLAIM_MISSING)
        if value is CLAIM_MISSING:
            return CLAIM_MISSING
    return value


def top_level_claim(name: str) -> str:
    """The top-level claim a claim name or pointer starts in."""
    return name[1:].split("/", 1)[0].replace("~1", "/").replace("~0", "~") if name.startswith("/") else name


def _claim_values(value, what: str) -> tuple:
    """``required_claim_values``: {claim: value or [values]} -> ((claim, (values...)), ...)."""
    if isinstance(value, tuple) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        value = dict(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object of claim: value or [values]")
    pairs = []
    for name, allowed in value.items():
        check_claim_name(name, f"{what} claim")
        if not isinstance(allowed, (list, tuple)):
            allowed = (allowed,)
        if not allowed or not all(isinstance(v, (str, bool, int)) for v in allowed):
            raise ValueError(f"{what} for {name!r} must be a string, boolean or integer, or a non-empty list of them")
        pairs.append((name, tuple(allowed)))
    return tuple(pairs)


def claim_matches(value, allowed: tuple) -> bool:
    """Exact JSON equality: true is not 1, "1" is not 1."""
    return any(type(value) is type(a) and value == a for a in allowed)


@dataclass(frozen=True)
class IssuerConfig:
    """One trusted identity provider and how its claims map to a Principal.

    Claim names may be JSON Pointers (``/realm_access/roles``) into nested claims; a name that
    does not start with ``/`` is a top-level claim taken literally (``https://example.com/groups``).
    """

    issuer: str
    audiences: tuple[str, ...]
    username_claim: str = "sub"
    username_prefix: str = ""
    # One claim, or a list whose groups are joined (Entra ID: ["groups", "roles"]).
    groups_claim: str | tuple[str, ...] = "groups"
    groups_prefix: str = ""
    # Given, as written (no prefix), to every token this issuer entry accepts (Google: no groups claim).
    static_groups: tuple[str, ...] = ()
    # {claim: value or [values]}: the token is refused unless each claim holds one of its values.
    required_claim_values: tuple[tuple[str, tuple], ...] = ()
    # Client ids allowed to present tokens (checked in authorized_party_claim); empty: any client.
    authorized_parties: tuple[str, ...] = ()
    authorized_party_claim: str = "azp"
    # "refuse" (401) or "ignore" (as if the left-out groups were none) a groups overage.
    groups_overage: str = "refuse"
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
        optional = ("required_claims", "token_types", "static_groups", "authorized_parties")
        for name in ("audiences", "algorithms", *optional):
            value = _string_tuple(getattr(self, name), name, allow_empty=name in optional)
            object.__setattr__(self, name, value)
        for name in ("username_claim", "authorized_party_claim"):
            check_claim_name(getattr(self, name), name)
        if not isinstance(self.groups_claim, str):
            object.__setattr__(self, "groups_claim", _string_tuple(self.groups_claim, "groups_claim"))
        for name in self.groups_claims:
            check_claim_name(name, "groups_claim")
        for name in self.required_claims:
            if name.startswith("/"):
                raise ValueError("required_claims names top-level claims; use required_claim_values for nested ones")
        object.__setattr__(self, "required_claim_values",
                           _claim_values(self.required_claim_values, "required_claim_values"))
        if self.groups_overage not in GROUPS_OVERAGE:
            raise ValueError(f"groups_overage must be one of {', '.join(GROUPS_OVERAGE)}")
        for name in ("username_prefix", "groups_prefix"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string")
        for alg in self.algorithms:
            if alg not in KEY_TYPE_FOR_ALGORITHM or alg not in get_default_algorithms():
                raise ValueError(f"algorithm {alg!r} is not allowed (asymmetric signature algorithms only)")

    @property
    def groups_claims(self) -> tuple[str, ...]:
        return (self.groups_claim,) if isinstance(self.groups_claim, str) else self.groups_claim

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
