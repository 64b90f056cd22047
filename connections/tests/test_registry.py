import asyncio
import logging
import os
import ssl
import stat

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from cryptography.fernet import Fernet

from connections import crypto, registry
from connections.models import Connection
from connections.registry import Upstream
from connections.tests.conftest import TOKEN
from connections.tests.pki import Pki

class Clock:
    now = 1000.0

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    """Frozen registry time; advance it explicitly."""
    return Clock()


@pytest.fixture
def connections(clock):
    """This test's registry (an application's), on the frozen clock."""
    return registry.ConnectionRegistry(clock=lambda: clock.now)


@pytest.fixture
def get(connections):
    return async_to_sync(connections.get_upstream)  # thread-sensitive ORM calls then run on the test's thread


def test_warm_hit_makes_no_query(get, token_connection, clock, django_assert_num_queries):
    with django_assert_num_queries(2):  # the row, and its trusted proxies
        first = get("prod")
    with django_assert_num_queries(0):
        assert get("prod") is first
    assert first.server_url == "https://api.prod.example:6443"
    assert first.auth_headers() == {"Authorization": f"Bearer {TOKEN}"}


def test_save_invalidates_and_changes_cache_key(get, token_connection, clock, django_assert_num_queries):
    before = get("prod")
    token_connection.server_url = "https://api2.prod.example/"
    token_connection.full_clean()
    token_connection.save()
    with django_assert_num_queries(2):
        after = get("prod")
    assert after.server_url == "https://api2.prod.example"
    assert after.cache_key != before.cache_key


def test_delete_invalidates(get, token_connection, clock):
    assert get("prod") is not None
    token_connection.delete()
    assert get("prod") is None


def test_rename_invalidates_the_old_name(get, token_connection, clock):
    assert get("prod") is not None
    token_connection.name = "production"
    token_connection.save()
    assert get("prod") is None
    assert get("production").name == "production"


def test_disabled_connection_is_not_served(get, token_connection, clock):
    token_connection.enabled = False
    token_connection.save()
    assert get("prod") is None


def test_unknown_names_are_cached_until_created(get, db, keys, clock, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert get("later") is None
    with django_assert_num_queries(0):
        assert get("later") is None
    Connection.objects.create(name="later", server_url="https://later.example", bearer_token=TOKEN)
    assert get("later").name == "later"


def test_negative_entries_are_bounded(get, connections, db, keys, clock, monkeypatch):
    monkeypatch.setattr(registry, "MAX_NEGATIVE_ENTRIES", 3)
    for index in range(10):
        assert get(f"missing-{index}") is None
    assert sum(1 for entry in connections._entries.values() if entry.upstream is None) <= 3


def test_malformed_names_cost_no_query(get, db, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert get("../admin") is None
        assert get("Prod") is None


def test_changes_by_other_processes_are_seen_after_the_bound(get, token_connection, clock, django_assert_num_queries):
    """Another process's write fires no signal here: the revalidation interval is the staleness bound."""
    first = get("prod")
    Connection.objects.filter(pk=token_connection.pk).update(
        server_url="https://moved.example", updated_at=token_connection.updated_at.replace(year=2099)
    )
    clock.advance(4.9)
    with django_assert_num_queries(0):
        assert get("prod") is first
    clock.advance(0.2)
    with django_assert_num_queries(2):  # the row changed: it and its trusted proxies are read again
        assert get("prod").server_url == "https://moved.example"


def test_revalidation_keeps_the_same_upstream_when_unchanged(get, token_connection, clock, django_assert_num_queries):
    first = get("prod")
    clock.advance(60)
    with django_assert_num_queries(1):
        assert get("prod") is first  # same object: same SSL context and HTTP pool, no decryption


def test_revalidation_interval_is_configurable(get, token_connection, clock, settings, django_assert_num_queries):
    settings.AIRLOCK_CONNECTION_REVALIDATE_SECONDS = 0
    get("prod")
    with django_assert_num_queries(1):
        get("prod")


def test_undecryptable_credential_fails_closed_and_is_not_cached(get, connections, token_connection, keys, clock):
    keys(Fernet.generate_key().decode())
    for _ in range(2):
        with pytest.raises(crypto.CredentialDecryptionError, match="'prod'"):
            get("prod")
    assert "prod" not in connections._entries


def test_incomplete_credentials_fail_closed(get, db, keys, clock):
    Connection.objects.create(name="broken", server_url="https://broken.example")
    with pytest.raises(registry.ConnectionConfigurationError, match="'broken'"):
        get("broken")


def test_repr_and_str_hide_secrets(get, token_connection, cert_connection, pki, clock):
    for upstream in (get("prod"), get("dev")):
        text = repr(upstream) + str(upstream)
        assert upstream.name in text
        for secret in (TOKEN, pki.client.key, "PRIVATE KEY"):
            assert secret not in text


def test_client_certificate_connection_sends_no_authorization(get, cert_connection, clock):
    assert get("dev").auth_headers() == {}


def test_ssl_context_verifies_with_the_ca_bundle_and_is_cached(get, cert_connection, clock):
    upstream = get("dev")
    context = upstream.ssl_context()
    assert context is upstream.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1


def test_insecure_connection_warns_once(get, token_connection, clock, caplog):
    token_connection.verify_tls = False
    token_connection.save()
    with caplog.at_level(logging.WARNING, logger="connections.registry"):
        context = get("prod").ssl_context()
        token_connection.description = "edited"
        token_connection.save()
        get("prod").ssl_context()
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    warnings = [r for r in caplog.records if "TLS verification is disabled" in r.getMessage()]
    assert len(warnings) == 1 and "'prod'" in warnings[0].getMessage()


def test_client_key_files_are_private_and_removed(get, cert_connection, clock, monkeypatch):
    seen = []
    original = ssl.SSLContext.load_cert_chain

    def spy(self, certfile, keyfile=None, password=None):
        seen.append({path: stat.S_IMODE(os.stat(path).st_mode) for path in (certfile, keyfile)})
        seen.append(stat.S_IMODE(os.stat(os.path.dirname(keyfile)).st_mode))
        return original(self, certfile, keyfile, password)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    get("dev").ssl_context()
    modes, directory_mode = seen
    assert set(modes.values()) == {0o600} and directory_mode == 0o700
    assert not any(os.path.exists(path) for path in modes)


def upstream_for(pki, ca_pem, **kwargs):
    fields = dict(
        connection_id=1,
        name="tls",
        server_url="https://localhost",
        verify_tls=True,
        impersonation_mode="off",
        impersonation_user_prefix="airlock:",
        cache_key="1:tls:x",
        ca_bundle=ca_pem,
        client_certificate=pki.client.certificate,
        _client_key=pki.client.key,
    )
    return Upstream(**{**fields, **kwargs})


@pytest.fixture
async def mtls_server(pki, tmp_path):
    """A TLS server that requires a client certificate from the test CA and answers with its CN."""
    (tmp_path / "server.crt").write_text(pki.server.certificate)
    (tmp_path / "server.key").write_text(pki.server.key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    context.load_verify_locations(cadata=pki.ca_pem)
    context.verify_mode = ssl.CERT_REQUIRED

    async def handle(reader, writer):
        subject = dict(item[0] for item in writer.get_extra_info("peercert")["subject"])
        writer.write(subject["commonName"].encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_ssl_context_completes_mutual_tls(pki, mtls_server):
    context = upstream_for(pki, pki.ca_pem).ssl_context()
    reader, writer = await asyncio.open_connection("127.0.0.1", mtls_server, ssl=context, server_hostname="localhost")
    assert await reader.read() == b"airlock-gateway"
    writer.close()


async def test_ssl_context_rejects_a_server_from_another_ca(pki, mtls_server):
    context = upstream_for(pki, Pki().ca_pem).ssl_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection("127.0.0.1", mtls_server, ssl=context, server_hostname="localhost")


@pytest.mark.django_db(transaction=True)
async def test_concurrent_misses_share_one_load(connections, keys, monkeypatch):
    await sync_to_async(Connection.objects.create)(
        name="shared", server_url="https://shared.example", bearer_token=TOKEN
    )
    connections.clear()
    loads = []
    original = connections._load

    def counting(name, previous):
        loads.append(name)
        return original(name, previous)

    monkeypatch.setattr(connections, "_load", counting)
    results = await asyncio.gather(*(connections.get_upstream("shared") for _ in range(20)))
    assert loads == ["shared"]
    assert all(result is results[0] for result in results) and results[0].name == "shared"
