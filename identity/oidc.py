"""Agent authentication: validate OIDC bearer JWTs locally.

Tokens are checked with PyJWT against the signing keys each trusted issuer
publishes (discovered from ``<issuer>/.well-known/openid-configuration``), so
no request waits on the identity provider except to refresh keys.  Key sets
are fetched with httpx (never blocking the event loop), cached for a TTL,
refreshed at most once per cool-down when a token names an unknown ``kid``
(key rotation), and concurrent misses share one fetch.  Validated tokens are
cached by SHA-256 until they expire, and only while the key that signed them
is still published.

Everything here is Django-free (the trusted issuers are :mod:`identity.oidc_config`);
:func:`authenticator_from_settings` is the thin layer that reads Django settings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import httpx
import jwt

from identity.oidc_config import (
    CLAIM_MISSING, KEY_TYPE_FOR_ALGORITHM, AuthenticatorConfig, IssuerConfig, check_url, claim_matches,
    claim_value, config_from_settings, top_level_claim,
)
from identity.principal import AuthenticationError, Principal

log = logging.getLogger(__name__)

# Claims every token must carry whatever the configuration says.
_ALWAYS_REQUIRED = ("exp", "iss", "aud", "sub")
_MAX_DOCUMENT_BYTES = 1024 * 1024
_MAX_KEYS = 100
_DISCOVERY_PATH = "/.well-known/openid-configuration"


class TokenCache:
    """Bounded LRU of validated tokens; an entry never outlives its token's ``exp``."""

    def __init__(self, max_entries: int, clock=time.time):
        self._entries: OrderedDict[bytes, tuple[float, object]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    def __len__(self):
        return len(self._entries)

    def get(self, key: bytes):
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if self._clock() >= expires_at:
            self._entries.pop(key, None)
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: bytes, value, expires_at: float) -> None:
        if self._max <= 0 or self._clock() >= expires_at:
            return
        self._entries[key] = (expires_at, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


def _key_fingerprint(jwk: dict) -> str:
    public = {k: jwk[k] for k in ("kty", "crv", "n", "e", "x", "y") if k in jwk}
    return hashlib.sha256(json.dumps(public, sort_keys=True).encode()).hexdigest()


def parse_jwks(document) -> tuple[dict, ...]:
    """The usable public signing keys of a JWKS document (others are skipped)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("JWKS document has no keys list")
    keys = []
    for jwk in document["keys"][:_MAX_KEYS]:
        if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # symmetric ("oct") and unknown key types are never used
        if jwk.get("use", "sig") != "sig" or "d" in jwk:
            continue  # encryption keys, and private keys published by mistake
        ops = jwk.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            continue
        if "kid" in jwk and not isinstance(jwk["kid"], str):
            continue
        keys.append(jwk)
    return tuple(keys)


@dataclass
class _IssuerKeys:
    """Per-issuer key cache and fetch bookkeeping (monotonic clock)."""

    keys: tuple[dict, ...] | None = None
    fingerprints: frozenset = frozenset()
    jwks_uri: str | None = None
    fetched_at: float = 0.0
    forced_at: float | None = None
    failed_at: float | None = None
    inflight: asyncio.Task | None = None
    prepared: dict = field(default_factory=dict)


_UNAVAILABLE = ("identity provider unavailable", "unavailable")


class Authenticator:
    """Validates bearer JWTs from the configured issuers and returns a :class:`Principal`."""

    def __init__(self, config: AuthenticatorConfig, *, transport: httpx.AsyncBaseTransport | None = None,
                 clock=time.monotonic):
        self.config = config
        self._issuers = {i.issuer: i for i in config.issuers}
        self._state = {i.issuer: _IssuerKeys() for i in config.issuers}
        self._cache = TokenCache(config.token_cache_size)
        self._transport = transport
        self._clock = clock
        self._verify = ssl.create_default_context(cafile=config.ca_file) if config.ca_file else True

    async def authenticate(self, token: str) -> Principal:
        if not isinstance(token, str) or not token or len(token) > self.config.max_token_bytes:
            raise AuthenticationError("malformed token", "malformed")
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            principal, fingerprint = cached
            state = self._state[principal.issuer]
            if fingerprint in state.fingerprints and not self._stale(state):
                return principal
        principal, fingerprint = await self._validate(token, digest)
        self._cache.put(digest, (principal, fingerprint), principal.expires_at)
        return principal

    async def _validate(self, token: str, digest: bytes) -> tuple[Principal, str]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthenticationError("malformed token", "malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in KEY_TYPE_FOR_ALGORITHM:
            raise AuthenticationError("algorithm not allowed", "algorithm")
        if "crit" in header:
            raise AuthenticationError("malformed token", "malformed")
        issuer = self._issuers.get(unverified.get("iss")) if isinstance(unverified.get("iss"), str) else None
        if issuer is None:
            raise AuthenticationError("token issuer not trusted", "issuer")
        if alg not in issuer.algorithms:
            raise AuthenticationError("algorithm not allowed", "algorithm")
        typ = header.get("typ")
        if typ is not None and issuer.token_types:
            normalized = typ.lower().removeprefix("application/") if isinstance(typ, str) else None
            if normalized not in {t.lower() for t in issuer.token_types}:
                raise AuthenticationError("token type not accepted", "type")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationError("malformed token", "malformed")

        candidates = await self._signing_keys(issuer, kid, alg)
        if not candidates:
            raise AuthenticationError("signing key not found", "key")
        for fingerprint, key in candidates:
            try:
                claims = self._decode(token, key, alg, issuer)
            except jwt.InvalidSignatureError:
                continue  # several candidates only for a token without kid: try the next
            except jwt.PyJWTError as exc:
                raise _translate(exc) from None
            return self._principal(issuer, claims, digest), fingerprint
        raise AuthenticationError("token signature invalid", "signature")

    def _decode(self, token: str, key: jwt.PyJWK, alg: str, issuer: IssuerConfig) -> dict:
        required = list(dict.fromkeys(_ALWAYS_REQUIRED + issuer.required_claims))
        return jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=list(issuer.audiences),
            issuer=issuer.issuer,
            leeway=self.config.leeway,
            options={"require": required, "enforce_minimum_key_length": True},
        )

    def _principal(self, issuer: IssuerConfig, claims: dict, digest: bytes) -> Principal:
        subject = claims["sub"]
        if not subject:
            raise AuthenticationError("token missing required claim sub", "claims")
        if issuer.authorized_parties:
            party = claim_value(claims, issuer.authorized_party_claim)
            if not isinstance(party, str) or party not in issuer.authorized_parties:
                raise AuthenticationError("token authorized party not accepted", "authorized_party")
        for name, allowed in issuer.required_claim_values:
            if not claim_matches(claim_value(claims, name), allowed):
                raise AuthenticationError(f"token claim {name} not accepted", "claims")
        username = claim_value(claims, issuer.username_claim)
        if not isinstance(username, str) or not username:
            raise AuthenticationError("token username claim missing or invalid", "claims")
        exp = claims["exp"]
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise AuthenticationError("malformed token", "malformed")
        groups = [issuer.groups_prefix + g for g in _groups(issuer, claims)] + list(issuer.static_groups)
        jti = claims.get("jti")
        return Principal(
            subject=subject,
            username=issuer.username_prefix + username,
            groups=tuple(dict.fromkeys(groups)),
            issuer=issuer.issuer,
            expires_at=float(exp),
            token_id=jti if isinstance(jti, str) and jti else "sha256:" + digest.hex(),
        )

    # -- signing keys -------------------------------------------------------

    def _stale(self, state: _IssuerKeys) -> bool:
        return state.keys is None or self._clock() - state.fetched_at >= self.config.jwks_ttl

    async def _signing_keys(self, issuer: IssuerConfig, kid: str | None, alg: str):
        state = self._state[issuer.issuer]
        refreshed = self._running_fetch(state) is not None or self._stale(state)
        if refreshed:
            await self._refresh(issuer, state)
        found = self._matching(state, kid, alg)
        if not found and not refreshed and (
            state.forced_at is None or self._clock() - state.forced_at >= self.config.refresh_cooldown
        ):
            # An unknown kid: the issuer may have rotated its keys.  Refetch,
            # but at most once per cool-down so bogus kids cannot flood the IdP.
            state.forced_at = self._clock()
            await self._refresh(issuer, state)
            found = self._matching(state, kid, alg)
        return found

    def _matching(self, state: _IssuerKeys, kid: str | None, alg: str) -> list[tuple[str, jwt.PyJWK]]:
        """Keys with this kid (or all, for a token without kid) that can verify ``alg``."""
        kty, crv = KEY_TYPE_FOR_ALGORITHM[alg]
        found = []
        for jwk in state.keys or ():
            if kid is not None and jwk.get("kid") != kid:
                continue
            if jwk.get("kty") != kty or (crv and jwk.get("crv") != crv) or jwk.get("alg", alg) != alg:
                continue
            fingerprint = _key_fingerprint(jwk)
            key = state.prepared.get((fingerprint, alg))
            if key is None:
                try:
                    key = jwt.PyJWK(jwk, algorithm=alg)
                except jwt.PyJWTError:
                    continue
                state.prepared[(fingerprint, alg)] = key
            found.append((fingerprint, key))
        return found

    @staticmethod
    def _running_fetch(state: _IssuerKeys) -> asyncio.Task | None:
        task = state.inflight
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            return None
        return task

    async def _refresh(self, issuer: IssuerConfig, state: _IssuerKeys) -> None:
        """Fetch the key set, sharing one fetch between concurrent callers."""
        task = self._running_fetch(state)
        if task is None:
            now = self._clock()
            if state.failed_at is not None and now - state.failed_at < self.config.failure_backoff:
                raise AuthenticationError(*_UNAVAILABLE)
            task = state.inflight = asyncio.get_running_loop().create_task(self._fetch(issuer, state))
        if not await asyncio.shield(task):
            raise AuthenticationError(*_UNAVAILABLE)

    async def _fetch(self, issuer: IssuerConfig, state: _IssuerKeys) -> bool:
        try:
            async with httpx.AsyncClient(transport=self._transport, verify=self._verify,
                                         timeout=self.config.http_timeout) as client:
                jwks_uri = issuer.jwks_uri or state.jwks_uri
                if jwks_uri is None or self._stale(state):
                    jwks_uri = await self._discover(client, issuer)
                keys = parse_jwks(await _get_json(client, jwks_uri))
        except Exception as exc:  # noqa: BLE001 - any failure to get keys fails closed
            state.failed_at = self._clock()
            log.warning("cannot fetch signing keys of %s: %s", issuer.issuer, _describe(exc))
            return False
        state.keys = keys
        state.fingerprints = frozenset(_key_fingerprint(k) for k in keys)
        state.prepared = {}
        state.jwks_uri = jwks_uri
        state.fetched_at = self._clock()
        state.failed_at = None
        return True

    @staticmethod
    async def _discover(client: httpx.AsyncClient, issuer: IssuerConfig) -> str:
        document = await _get_json(client, issuer.issuer.rstrip("/") + _DISCOVERY_PATH)
        if document.get("issuer") != issuer.issuer:
            raise ValueError("discovery document names a different issuer")
        return check_url(document.get("jwks_uri"), "jwks_uri")


async def _get_json(client: httpx.AsyncClient, url: str) -> dict:
    async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
        if response.status_code != 200:
            raise ValueError(f"GET {url} answered {response.status_code}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > _MAX_DOCUMENT_BYTES:
                raise ValueError(f"GET {url} answered more than {_MAX_DOCUMENT_BYTES} bytes")
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError(f"GET {url} did not answer a JSON object")
    return document


def _groups_left_out(issuer: IssuerConfig, claims: dict) -> bool:
    """Whether the IdP referenced a groups claim instead of sending it (a groups overage).

    OpenID Connect distributed claims (Core 5.6.2) name such a claim in ``_claim_names``; Entra ID
    does so when a user is in too many groups (and sets ``hasgroups`` in the implicit flow).
    """
    names = claims.get("_claim_names")
    referenced = set(names) if isinstance(names, dict) else set()
    if claims.get("hasgroups") is True:
        referenced.add("groups")
    return any(top_level_claim(name) in referenced for name in issuer.groups_claims)


def _groups(issuer: IssuerConfig, claims: dict) -> list[str]:
    """The groups the configured claims list (unprefixed); refuses an overage unless told to ignore it."""
    if issuer.groups_overage == "refuse" and _groups_left_out(issuer, claims):
        raise AuthenticationError(
            "token groups could not be read: the identity provider left them out of the token (groups overage)",
            "groups_overage",
        )
    groups = []
    for name in issuer.groups_claims:
        value = claim_value(claims, name)
        if value is CLAIM_MISSING:
            continue
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, list | tuple) or not all(isinstance(g, str) and g for g in value):
            raise AuthenticationError("token groups claim invalid", "claims")
        groups.extend(value)
    return groups


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _translate(exc: jwt.PyJWTError) -> AuthenticationError:
    """Map PyJWT's exceptions to specific messages that reveal nothing about the token."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return AuthenticationError("token expired", "expired")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return AuthenticationError("token not yet valid", "not_yet_valid")
    if isinstance(exc, jwt.InvalidAudienceError):
        return AuthenticationError("token audience not accepted", "audience")
    if isinstance(exc, jwt.InvalidIssuerError):
        return AuthenticationError("token issuer not trusted", "issuer")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return AuthenticationError(f"token missing required claim {exc.claim}", "claims")
    if isinstance(exc, jwt.InvalidSignatureError):
        return AuthenticationError("token signature invalid", "signature")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return AuthenticationError("algorithm not allowed", "algorithm")
    if isinstance(exc, jwt.InvalidKeyError):
        return AuthenticationError("signing key not accepted", "key")
    return AuthenticationError("malformed token", "malformed")


def authenticator_from_settings(settings=None) -> Authenticator | None:
    """The OIDC authenticator configured in ``settings`` (default: Django's), or None when no issuer is trusted."""
    from django.core.exceptions import ImproperlyConfigured

    if settings is None:
        from django.conf import settings

    try:
        config = config_from_settings(settings)
    except ValueError as exc:
        raise ImproperlyConfigured(f"OIDC settings: {exc}") from None
    return Authenticator(config) if config.issuers else None
