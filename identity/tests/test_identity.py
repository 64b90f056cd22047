"""Agent token validation against a real OpenID provider (oidc-provider) and forged attacks."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from identity.oidc import Authenticator, TokenCache, authenticator_from_settings, parse_jwks
from identity.oidc_config import AuthenticatorConfig, IssuerConfig
from identity.principal import AuthenticationError, Principal
from tests.idp.fixtures import AUDIENCE, NAMESPACED_GROUPS
from tests.idp.harness import IdP


class FakeClock:
    """Monotonic clock for key-cache TTLs and cool-downs, advanced by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class CountingTransport(httpx.AsyncBaseTransport):
    """Real HTTP, but records each request's path; serves fake issuers from memory."""

    def __init__(self, fakes=None):
        self.inner = httpx.AsyncHTTPTransport()
        self.fakes = fakes or {}
        self.paths = []

    async def handle_async_request(self, request):
        self.paths.append(request.url.path)
        fake = self.fakes.get(request.url.host)
        if fake is not None:
            return fake(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self):
        """Kept open across the authenticator's per-fetch clients; closed by the fixture."""

    def count(self, suffix):
        return sum(1 for p in self.paths if p.endswith(suffix))


@pytest.fixture
async def transport():
    t = CountingTransport()
    yield t
    await t.inner.aclose()


@pytest.fixture
def clock():
    return FakeClock()


def issuer_for(idp, **overrides):
    return IssuerConfig(issuer=idp.issuer, audiences=(AUDIENCE,), **overrides)


def make_auth(transport, clock, *issuers, **config):
    return Authenticator(AuthenticatorConfig(issuers=issuers, **config), transport=transport, clock=clock)


async def refused(auth, token):
    """Authenticate expecting a refusal; the message must never echo the token."""
    with pytest.raises(AuthenticationError) as info:
        await auth.authenticate(token)
    message = str(info.value)
    assert message == info.value.message
    assert token not in message and token not in repr(info.value)
    return message


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def reencode(token, header=None, payload=None):
    """Replace a token's header and/or payload, keeping its (now mismatching) signature."""
    h, p, s = token.split(".")
    if header is not None:
        h = b64(json.dumps({**json.loads(unb64(h)), **header}).encode())
    if payload is not None:
        p = b64(json.dumps({**json.loads(unb64(p)), **payload}).encode())
    return f"{h}.{p}.{s}"


# -- real tokens from the real IdP -------------------------------------------------


async def test_valid_token_gives_principal_with_groups(idp, get_token, transport, clock):
    token = get_token("alice", "alice-secret")
    auth = make_auth(transport, clock, issuer_for(idp))
    principal = await auth.authenticate(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert principal == Principal(
        subject="alice",
        username="alice",
        groups=("sre", "dev"),
        issuer=idp.issuer,
        expires_at=float(claims["exp"]),
        token_id=claims["jti"],
    )
    assert token not in repr(principal)
    assert transport.count("/.well-known/openid-configuration") == 1
    assert transport.count("/jwks") == 1


async def test_validated_token_is_cached(idp, get_token, transport, clock):
    auth = make_auth(transport, clock, issuer_for(idp))
    token = get_token("bob", "bob-secret")
    first = await auth.authenticate(token)
    assert await auth.authenticate(token) is first


async def test_username_claim_and_prefixes(idp, get_token, transport, clock):
    auth = make_auth(
        transport, clock,
        issuer_for(idp, username_claim="client_id", username_prefix="oidc:", groups_prefix="oidc:"),
    )
    principal = await auth.authenticate(get_token("bob", "bob-secret"))
    assert principal.subject == "bob"
    assert principal.username == "oidc:bob"
    assert principal.groups == ("oidc:dev",)


async def test_missing_username_claim_is_refused(idp, get_token, transport, clock):
    auth = make_auth(transport, clock, issuer_for(idp, username_claim="email"))
    assert await refused(auth, get_token("bob", "bob-secret")) == "token username claim missing or invalid"


async def test_expired_token(idp, get_token, transport, clock):
    """A 2-second token: accepted, cached, then refused once exp passes (leeway 0)."""
    token = get_token("brief", "brief-secret")
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert exp - time.time() <= 3
    strict = make_auth(transport, clock, issuer_for(idp), leeway=0)
    lenient = make_auth(transport, clock, issuer_for(idp), leeway=30)
    assert (await strict.authenticate(token)).expires_at == exp
    while time.time() <= exp + 0.1:
        await asyncio.sleep(0.1)
    assert await refused(strict, token) == "token expired"
    assert (await lenient.authenticate(token)).subject == "brief"


async def test_wrong_audience(idp, get_token, transport, clock):
    auth = make_auth(transport, clock, IssuerConfig(issuer=idp.issuer, audiences=("https://other.test",)))
    assert await refused(auth, get_token("alice", "alice-secret")) == "token audience not accepted"


async def test_token_from_untrusted_issuer(idp, idp_namespaced, transport, clock):
    auth = make_auth(transport, clock, issuer_for(idp))
    token = idp_namespaced.get_token("carol", "carol-secret")
    assert await refused(auth, token) == "token issuer not trusted"
    assert transport.paths == []


async def test_impostor_claiming_a_trusted_issuer(idp, transport, clock):
    """Another provider that puts the trusted issuer's URL in `iss` signs with keys nobody published."""
    with IdP(audience=AUDIENCE, issuer=idp.issuer) as impostor:
        token = impostor.get_token("alice", "alice-secret")
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == idp.issuer
    auth = make_auth(transport, clock, issuer_for(idp))
    assert await refused(auth, token) == "signing key not found"


async def test_tampered_payload(idp, get_token, transport, clock):
    auth = make_auth(transport, clock, issuer_for(idp))
    token = reencode(get_token("bob", "bob-secret"), payload={"groups": ["system:masters"]})
    assert await refused(auth, token) == "token signature invalid"


async def test_tampered_signature(idp, get_token, transport, clock):
    auth = make_auth(transport, clock, issuer_for(idp))
    header, payload, signature = get_token("bob", "bob-secret").split(".")
    raw = bytearray(unb64(signature))
    raw[len(raw) // 2] ^= 0x01
    assert await refused(auth, f"{header}.{payload}.{b64(bytes(raw))}") == "token signature invalid"


async def test_hmac_signed_with_the_public_key_is_refused(idp, get_token, transport, clock):
    """Algorithm confusion: HS256 keyed with the issuer's own public key (PEM or JWK bytes)."""
    auth = make_auth(transport, clock, issuer_for(idp))
    real = get_token("alice", "alice-secret")
    kid = jwt.get_unverified_header(real)["kid"]
    jwk = next(k for k in idp.jwks()["keys"] if k["kid"] == kid)
    pem = jwt.PyJWK(jwk).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {**jwt.decode(real, options={"verify_signature": False}), "groups": ["system:masters"]}
    for secret in (pem, json.dumps(jwk).encode()):
        signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': kid}).encode())}." \
                        f"{b64(json.dumps(claims).encode())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert await refused(auth, f"{signing_input}.{b64(mac)}") == "algorithm not allowed"


async def test_alg_none_is_refused(idp, get_token, transport, clock):
    auth = make_auth(transport, clock, issuer_for(idp))
    real = get_token("alice", "alice-secret")
    header, payload, _ = reencode(real, header={"alg": "none"}).split(".")
    assert await refused(auth, f"{header}.{payload}.") == "algorithm not allowed"
    assert transport.paths == []


async def test_algorithm_outside_the_issuer_allow_list(idp, get_token, transport, clock):
    auth = make_auth(transport, clock, issuer_for(idp, algorithms=("ES256",)))
    assert await refused(auth, get_token("alice", "alice-secret")) == "algorithm not allowed"


async def test_rs256_key_cannot_verify_a_ps256_header(idp, get_token, transport, clock):
    auth = make_auth(transport, clock, issuer_for(idp))
    token = reencode(get_token("alice", "alice-secret"), header={"alg": "PS256"})
    assert await refused(auth, token) == "signing key not found"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "e30.e30.", "x" * 20000])
async def test_malformed_tokens(idp, transport, clock, token):
    auth = make_auth(transport, clock, issuer_for(idp))
    with pytest.raises(AuthenticationError) as info:
        await auth.authenticate(token)
    assert info.value.message in {"malformed token", "algorithm not allowed"}
    assert transport.paths == []


# -- key rotation and the key cache ----------------------------------------------------


async def test_key_rotation(rotating_idp, transport, clock):
    idp = rotating_idp
    auth = make_auth(transport, clock, issuer_for(idp))
    old = idp.get_token("alice", "alice-secret")
    assert (await auth.authenticate(old)).subject == "alice"
    assert transport.count("/jwks") == 1

    new_kid = idp.rotate()  # new key signs; the old one stays published
    new = idp.get_token("alice", "alice-secret")
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    assert (await auth.authenticate(new)).subject == "alice"
    assert transport.count("/jwks") == 2  # one refresh for the unknown kid
    assert (await auth.authenticate(old)).subject == "alice"

    clock.advance(31)
    newest_kid = idp.rotate(retire=True)  # everything older is withdrawn
    newest = idp.get_token("alice", "alice-secret")
    assert jwt.get_unverified_header(newest)["kid"] == newest_kid
    assert (await auth.authenticate(newest)).subject == "alice"
    assert transport.count("/jwks") == 3
    # Both earlier tokens were cached, but their keys are gone from the JWKS.
    assert await refused(auth, old) == "signing key not found"
    assert await refused(auth, new) == "signing key not found"

    fresh = make_auth(transport, clock, issuer_for(idp))
    assert await refused(fresh, old) == "signing key not found"
    assert (await fresh.authenticate(newest)).subject == "alice"


async def test_unknown_kid_refresh_is_rate_limited(idp, get_token, transport, clock):
    auth = make_auth(transport, clock, issuer_for(idp), refresh_cooldown=30)
    real = get_token("alice", "alice-secret")
    await auth.authenticate(real)
    assert transport.count("/jwks") == 1
    bogus = reencode(real, header={"kid": "no-such-key"})
    assert await refused(auth, bogus) == "signing key not found"
    assert transport.count("/jwks") == 2
    for _ in range(5):
        assert await refused(auth, bogus) == "signing key not found"
    assert transport.count("/jwks") == 2
    clock.advance(30)
    assert await refused(auth, bogus) == "signing key not found"
    assert transport.count("/jwks") == 3
    assert transport.count("/.well-known/openid-configuration") == 1


async def test_key_set_expires_after_ttl(idp, get_token, transport, clock):
    auth = make_auth(transport, clock, issuer_for(idp), jwks_ttl=600)
    token = get_token("alice", "alice-secret")
    await auth.authenticate(token)
    clock.advance(599)
    await auth.authenticate(token)
    assert transport.count("/jwks") == 1
    clock.advance(1)
    await auth.authenticate(token)
    assert transport.count("/jwks") == 2
    assert transport.count("/.well-known/openid-configuration") == 2


async def test_concurrent_misses_share_one_fetch(idp, transport, clock):
    auth = make_auth(transport, clock, issuer_for(idp))
    tokens = [idp.get_token("alice", "alice-secret") for _ in range(3)] + [idp.get_token("bob", "bob-secret")]
    principals = await asyncio.gather(*(auth.authenticate(t) for t in tokens * 5))
    assert {p.subject for p in principals} == {"alice", "bob"}
    assert transport.count("/.well-known/openid-configuration") == 1
    assert transport.count("/jwks") == 1


# -- identity provider unavailable ------------------------------------------------------


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_identity_provider_down(idp, get_token, transport, clock):
    issuer = IssuerConfig(issuer=f"http://127.0.0.1:{closed_port()}", audiences=(AUDIENCE,))
    auth = make_auth(transport, clock, issuer, failure_backoff=5)
    token = jwt.encode(  # any well-formed token naming that issuer
        {"iss": issuer.issuer, "aud": AUDIENCE, "sub": "x", "exp": time.time() + 60, "iat": time.time()},
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        algorithm="RS256",
        headers={"kid": "k"},
    )
    assert await refused(auth, token) == "identity provider unavailable"
    assert len(transport.paths) == 1
    assert await refused(auth, token) == "identity provider unavailable"
    assert len(transport.paths) == 1  # within the back-off: no new attempt
    clock.advance(5)
    assert await refused(auth, token) == "identity provider unavailable"
    assert len(transport.paths) == 2


async def test_hanging_provider_does_not_block_the_event_loop(transport, clock):
    connected = asyncio.Event()
    connections = []

    async def hang(reader, writer):
        connections.append(writer)
        connected.set()
        await reader.read()  # never answers

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    issuer = IssuerConfig(issuer=f"http://127.0.0.1:{port}", audiences=(AUDIENCE,))
    auth = make_auth(transport, clock, issuer, http_timeout=1)
    token = jwt.encode(
        {"iss": issuer.issuer, "aud": AUDIENCE, "sub": "x", "exp": time.time() + 60, "iat": time.time()},
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        algorithm="RS256",
    )
    pending = asyncio.create_task(auth.authenticate(token))
    await connected.wait()  # this coroutine runs while the fetch is in flight
    assert not pending.done()
    with pytest.raises(AuthenticationError) as info:
        await pending
    assert info.value.message == "identity provider unavailable"
    for writer in connections:
        writer.close()
    server.close()
    await server.wait_closed()


# -- several issuers, namespaced groups --------------------------------------------------


async def test_several_issuers_and_namespaced_groups_claim(idp, idp_namespaced, transport, clock):
    auth = make_auth(
        transport, clock,
        issuer_for(idp),
        issuer_for(idp_namespaced, groups_claim=NAMESPACED_GROUPS, username_prefix="ns:", groups_prefix="ns:"),
    )
    alice = await auth.authenticate(idp.get_token("alice", "alice-secret"))
    carol = await auth.authenticate(idp_namespaced.get_token("carol", "carol-secret"))
    assert (alice.issuer, alice.username, alice.groups) == (idp.issuer, "alice", ("sre", "dev"))
    assert (carol.issuer, carol.username, carol.groups) == (idp_namespaced.issuer, "ns:carol", ("ns:ops",))


async def test_namespaced_claim_is_not_read_from_the_plain_name(idp_namespaced, transport, clock):
    auth = make_auth(transport, clock, issuer_for(idp_namespaced))
    principal = await auth.authenticate(idp_namespaced.get_token("carol", "carol-secret"))
    assert principal.groups == ()


# -- attacks and shapes the real IdP cannot produce: a fake issuer with our own keys ----


FAKE_ISSUER = "https://fake-idp.test"


class FakeIssuer:
    def __init__(self, *keys):
        self.keys = keys  # (kid or None, private key, alg)

    def jwks(self):
        out = []
        for kid, key, alg in self.keys:
            jwk = json.loads(jwt.get_algorithm_by_name(alg).to_jwk(key.public_key()))
            if kid is not None:
                jwk["kid"] = kid
            out.append(jwk)
        return {"keys": out}

    def __call__(self, request):
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": FAKE_ISSUER, "jwks_uri": f"{FAKE_ISSUER}/keys"})
        if request.url.path == "/keys":
            return httpx.Response(200, json=self.jwks())
        return httpx.Response(404)

    def token(self, index=0, claims=None, headers=None, drop=(), with_kid=True):
        kid, key, alg = self.keys[index]
        now = int(time.time())
        body = {"iss": FAKE_ISSUER, "aud": AUDIENCE, "sub": "mallory", "iat": now, "exp": now + 60,
                "groups": ["dev"], **(claims or {})}
        for name in drop:
            body.pop(name)
        header = {"kid": kid} if kid and with_kid else {}
        return jwt.encode(body, key, algorithm=alg, headers={**header, **(headers or {})})


@pytest.fixture
async def fake():
    issuer = FakeIssuer(
        ("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        ("ec-1", ec.generate_private_key(ec.SECP256R1()), "ES256"),
    )
    t = CountingTransport({"fake-idp.test": issuer})
    issuer.transport = t
    yield issuer
    await t.inner.aclose()


def fake_auth(fake, clock, **overrides):
    return make_auth(fake.transport, clock, IssuerConfig(issuer=FAKE_ISSUER, audiences=(AUDIENCE,), **overrides))


async def test_es256_tokens(fake, clock):
    principal = await fake_auth(fake, clock).authenticate(fake.token(1))
    assert (principal.username, principal.groups) == ("mallory", ("dev",))


async def test_token_without_kid_is_tried_against_matching_keys(fake, clock):
    fake.keys = ((None, fake.keys[0][1], "RS256"), ("rsa-2", rsa.generate_private_key(65537, 2048), "RS256"))
    auth = fake_auth(fake, clock)
    assert (await auth.authenticate(fake.token(0))).subject == "mallory"
    assert (await auth.authenticate(fake.token(1, with_kid=False))).subject == "mallory"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop": ("sub",)}, "token missing required claim sub"),
        ({"drop": ("exp",)}, "token missing required claim exp"),
        ({"drop": ("iat",)}, "token missing required claim iat"),
        ({"claims": {"sub": ""}}, "token missing required claim sub"),
        ({"claims": {"nbf": int(time.time()) + 3600}}, "token not yet valid"),
        ({"claims": {"iat": int(time.time()) + 3600}}, "token not yet valid"),
        ({"claims": {"groups": [1]}}, "token groups claim invalid"),
        ({"claims": {"aud": ["https://other.test", AUDIENCE]}}, None),
        ({"headers": {"typ": "application/at+jwt"}}, None),
        ({"headers": {"typ": "id_token+jwt"}}, "token type not accepted"),
        ({"headers": {"crit": ["exp"]}}, "malformed token"),
    ],
)
async def test_forged_claims_and_headers(fake, clock, kwargs, message):
    auth = fake_auth(fake, clock)
    token = fake.token(**kwargs)
    if message is None:
        assert (await auth.authenticate(token)).subject == "mallory"
    else:
        assert await refused(auth, token) == message


async def test_non_string_kid_is_malformed(fake, clock):
    assert await refused(fake_auth(fake, clock), reencode(fake.token(), header={"kid": 7})) == "malformed token"


async def test_symmetric_and_private_keys_in_jwks_are_never_used(fake, clock):
    rsa_key = fake.keys[0][1]
    private_jwk = json.loads(jwt.get_algorithm_by_name("RS256").to_jwk(rsa_key))
    document = {"keys": [
        {"kty": "oct", "kid": "rsa-1", "k": b64(b"secret")},
        {**private_jwk, "kid": "rsa-1"},
        {**private_jwk, "kid": "enc", "use": "enc"},
    ]}
    assert parse_jwks(document) == ()
    hs = jwt.encode({"iss": FAKE_ISSUER}, b"secret" * 6, algorithm="HS256", headers={"kid": "rsa-1"})
    assert await refused(fake_auth(fake, clock), hs) == "algorithm not allowed"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_short_rsa_keys_are_refused(fake, clock):
    fake.keys = (("weak", rsa.generate_private_key(65537, 1024), "RS256"),)
    assert await refused(fake_auth(fake, clock), fake.token()) == "signing key not accepted"


async def test_discovery_naming_another_issuer_fails_closed(fake, clock):
    auth = make_auth(fake.transport, clock, IssuerConfig(issuer=FAKE_ISSUER + "/realm", audiences=(AUDIENCE,)))
    token = fake.token(claims={"iss": FAKE_ISSUER + "/realm"})
    assert await refused(auth, token) == "identity provider unavailable"


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"issuer": "https://idp.test", "audience": "a", "algorithms": ["HS256"]}, "not allowed"),
        ({"issuer": "https://idp.test", "audience": "a", "algorithms": ["none"]}, "not allowed"),
        ({"issuer": "https://idp.test", "audience": "a", "algorithms": []}, "must not be empty"),
        ({"issuer": "http://idp.test", "audience": "a"}, "https"),
        ({"issuer": "https://idp.test", "audience": []}, "must not be empty"),
        ({"issuer": "https://idp.test"}, "needs issuer and audience"),
        ({"issuer": "https://idp.test", "audience": "a", "group_claim": "g"}, "unknown"),
        ({"issuer": "https://idp.test", "audience": "a", "jwks_uri": "http://idp.test/jwks"}, "https"),
    ],
)
def test_issuer_settings_are_validated(settings, error):
    with pytest.raises(ValueError, match=error):
        IssuerConfig.from_mapping(settings)


def test_issuer_settings_from_mapping():
    config = IssuerConfig.from_mapping({
        "issuer": "https://idp.test", "audience": "gw", "groups_claim": NAMESPACED_GROUPS, "algorithms": "ES256",
    })
    assert config.audiences == ("gw",)
    assert config.algorithms == ("ES256",)
    assert config.groups_claim == NAMESPACED_GROUPS


def test_single_strings_become_tuples():
    config = IssuerConfig(issuer="https://idp.test", audiences="gw", algorithms="ES256")
    assert (config.audiences, config.algorithms) == (("gw",), ("ES256",))


def test_duplicate_issuers_are_refused():
    one = IssuerConfig(issuer="https://idp.test", audiences=("a",))
    with pytest.raises(ValueError, match="twice"):
        AuthenticatorConfig(issuers=(one, one))


def test_authenticator_from_settings():
    issuers = [{"issuer": "https://idp.test", "audience": ["gw"], "username_prefix": "idp:"}]
    with override_settings(AIRLOCK_OIDC_ISSUERS=issuers, AIRLOCK_OIDC_LEEWAY=5.0):
        auth = authenticator_from_settings()
    assert auth.config.leeway == 5.0
    assert auth.config.issuers == (IssuerConfig(issuer="https://idp.test", audiences=("gw",), username_prefix="idp:"),)
    with override_settings(AIRLOCK_OIDC_ISSUERS=[]):
        assert authenticator_from_settings() is None
    with override_settings(AIRLOCK_OIDC_ISSUERS=[{"issuer": "https://idp.test", "audience": "gw", "algorithms": "HS256"}]):
        with pytest.raises(ImproperlyConfigured, match="not allowed"):
            authenticator_from_settings()


# -- the validated-token cache ------------------------------------------------------------


def test_token_cache_never_outlives_expiry():
    now = FakeClock()
    cache = TokenCache(10, clock=now)
    cache.put(b"a", "A", expires_at=now.now + 5)
    cache.put(b"gone", "G", expires_at=now.now)
    assert cache.get(b"a") == "A"
    assert cache.get(b"gone") is None
    now.advance(5)
    assert cache.get(b"a") is None
    assert len(cache) == 0


def test_token_cache_is_bounded_lru():
    now = FakeClock()
    cache = TokenCache(2, clock=now)
    cache.put(b"a", "A", now.now + 60)
    cache.put(b"b", "B", now.now + 60)
    assert cache.get(b"a") == "A"  # a is now the most recently used
    cache.put(b"c", "C", now.now + 60)
    assert len(cache) == 2
    assert cache.get(b"b") is None
    assert (cache.get(b"a"), cache.get(b"c")) == ("A", "C")


def test_single_issuer_environment_shorthand():
    """AIRLOCK_OIDC_ISSUER & co. add one issuer to the JSON list (settings are read at start-up)."""
    env = {
        **os.environ,
        "AIRLOCK_OIDC_ISSUERS": json.dumps([{"issuer": "https://a.test", "audience": "gw"}]),
        "AIRLOCK_OIDC_ISSUER": "https://b.test",
        "AIRLOCK_OIDC_AUDIENCE": "gw,gw2",
        "AIRLOCK_OIDC_GROUPS_CLAIM": NAMESPACED_GROUPS,
        "AIRLOCK_OIDC_USERNAME_CLAIM": "email",
    }
    code = (
        "import django, json; django.setup(); from identity.oidc_config import config_from_settings;"
        "from django.conf import settings; c = config_from_settings(settings);"
        "print(json.dumps([[i.issuer, i.audiences, i.username_claim, i.groups_claim] for i in c.issuers]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    assert json.loads(out.stdout) == [
        ["https://a.test", ["gw"], "sub", "groups"],
        ["https://b.test", ["gw", "gw2"], "email", NAMESPACED_GROUPS],
    ]
