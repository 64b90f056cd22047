"""The gateway's hot-path view of connections: an in-process cache, no ORM query per request.

`await registry(name)` (a :class:`ConnectionRegistry`, one per application) answers from memory.  On a miss it loads the row
through the ORM on the gateway's database pool (runtime.db: off the event
loop, bounded wait) and caches the result, including "no such enabled
connection" (negative entries, bounded in number); concurrent misses of one
name share one load.

Staleness bound: a save or delete of a Connection (or of one of its TrustedProxy rows, which
moves the connection's `updated_at`) in this process invalidates
every registry of the process at once (post_save/post_delete, and again on commit), and every other
process once the commit is announced (runtime.invalidation, over Redis).  Without that announcement,
changes made by another process are noticed because every entry is re-validated against
the row's `updated_at` when it is older than
settings.AIRLOCK_CONNECTION_REVALIDATE_SECONDS (default 5 s): a request may
use a connection's previous settings for at most that long after another
process changed it.  Re-validation is one indexed query per connection name
per interval (shared by concurrent requests), and the credentials are only
decrypted again when `updated_at` changed.  Writes that bypass `save()`
(queryset.update) are seen only if they also set `updated_at`.

While the database is unavailable an entry is still used for
settings.AIRLOCK_CACHE_STALE_SECONDS beyond the revalidation interval
(runtime.cache.refresh); past that, or for a name not cached,
runtime.db.DatabaseUnavailable propagates (a 503).
"""

import functools
import logging
import os
import ssl
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connections import incluster
from connections.models import Connection, CredentialKind, ImpersonationMode
from connections.timeouts import DEFAULT_TIMEOUTS
from identity.proxies import ProxyGrant
from connections.validation import NAME_RE
from masking.config import detectors_key
from runtime import db, invalidation
from runtime.cache import Flights, refresh, stale_seconds

log = logging.getLogger(__name__)

# Unknown names are cached too (so a flood of bogus names costs no queries);
# this caps how many, after which the negative entries are dropped wholesale.
MAX_NEGATIVE_ENTRIES = 1024

class ConnectionConfigurationError(Exception):
    """A stored connection cannot be turned into an upstream (e.g. no usable credential)."""


@dataclass(frozen=True)
class Upstream:
    """Everything needed to talk to one cluster, immutable for one version of the row."""

    connection_id: int
    name: str
    server_url: str  # no trailing slash
    verify_tls: bool
    impersonation_mode: str
    impersonation_user_prefix: str
    # Changes whenever the row is saved, so HTTP client pools keyed by it are
    # rebuilt after an edit.
    cache_key: str
    ca_bundle: str = field(default="", repr=False)
    client_certificate: str = field(default="", repr=False)
    _bearer_token: str = field(default="", repr=False)
    _client_key: str = field(default="", repr=False)
    detectors: str = ""  # free-text detector configuration (masking.config.detectors_key); "" = defaults
    connect_timeout: float = DEFAULT_TIMEOUTS.connect
    first_byte_timeout: float = DEFAULT_TIMEOUTS.first_byte
    idle_timeout: float = DEFAULT_TIMEOUTS.idle
    # In-cluster connections: the pod's service-account token, followed as the kubelet rotates it.
    token_file: incluster.TokenFile | None = field(default=None, repr=False, compare=False)
    # The enabled TrustedProxy registrations: who may send Impersonate-User/-Group here (identity.proxies).
    trusted_proxies: tuple[ProxyGrant, ...] = ()

    @classmethod
    def from_connection(cls, connection: Connection) -> "Upstream":
        """Decrypts the credentials; raises CredentialDecryptionError naming the connection."""
        kind = connection.credential_kind
        if not kind:
            raise ConnectionConfigurationError(
                f"connection {connection.name!r} does not have exactly one complete credential "
                "(a bearer token, or a client certificate and key)"
            )
        token = connection.decrypt_bearer_token() if kind == CredentialKind.TOKEN else ""
        key = connection.decrypt_client_key() if kind == CredentialKind.CLIENT_CERTIFICATE else ""
        server_url, ca_bundle, token_file = connection.server_url, connection.ca_bundle, None
        if kind == CredentialKind.IN_CLUSTER:
            try:
                server_url = server_url or incluster.server_url_from_environment()
                ca_bundle = incluster.read_ca_file(settings.AIRLOCK_IN_CLUSTER_CA_FILE)
                token_file = incluster.TokenFile(settings.AIRLOCK_IN_CLUSTER_TOKEN_FILE,
                                                 check_seconds=settings.AIRLOCK_IN_CLUSTER_TOKEN_CHECK_SECONDS)
            except incluster.InClusterUnavailable as exc:
                raise ConnectionConfigurationError(f"connection {connection.name!r}: {exc}") from None
        return cls(
            connection_id=connection.pk,
            name=connection.name,
            server_url=server_url.rstrip("/"),
            verify_tls=connection.verify_tls,
            impersonation_mode=connection.impersonation_mode,
            impersonation_user_prefix=connection.impersonation_user_prefix,
            detectors=detectors_key(connection.masking_detectors),
            connect_timeout=connection.connect_timeout,
            first_byte_timeout=connection.first_byte_timeout,
            idle_timeout=connection.idle_timeout,
            cache_key=f"{connection.pk}:{connection.name}:{connection.updated_at.isoformat()}",
            ca_bundle=ca_bundle,
            client_certificate=connection.client_certificate if key else "",
            _bearer_token=token,
            _client_key=key,
            token_file=token_file,
            trusted_proxies=tuple(p.grant() for p in connection.trusted_proxies.filter(enabled=True).order_by("name"))
            if connection.pk is not None else (),
        )

    @property
    def impersonates(self) -> bool:
        return self.impersonation_mode == ImpersonationMode.IMPERSONATE

    def auth_headers(self) -> dict[str, str]:
        """Headers carrying the gateway's credential; empty for client-certificate connections.
        In-cluster: the service-account token as it is now (the file is re-read when it was rotated)."""
        token = self.token_file.token() if self.token_file is not None else self._bearer_token
        if token:
            return {"Authorization": f"Bearer {token}"}
        return {}

    def reread_credential(self) -> bool:
        """The cluster answered 401: look for a rotated token now.  True when the credential changed,
        so the request is worth sending once more; False for a credential that cannot change."""
        return self.token_file is not None and self.token_file.reread()

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS client context for this upstream, built once."""
        return self._ssl_context

    @cached_property
    def _ssl_context(self) -> ssl.SSLContext:
        if self.verify_tls:
            context = ssl.create_default_context(cadata=self.ca_bundle or None)
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            _warn_insecure(self.name, self.server_url)
        if self._client_key:
            _load_client_certificate(context, self.client_certificate, self._client_key)
        return context


_insecure_warned: set[str] = set()


def _warn_insecure(name: str, server_url: str) -> None:
    if name not in _insecure_warned:
        _insecure_warned.add(name)
        log.warning(
            "TLS verification is disabled for connection %r (%s): the API server's identity is not checked",
            name,
            server_url,
        )


def _load_client_certificate(context: ssl.SSLContext, certificate: str, key: str) -> None:
    """ssl only loads key pairs from files: write them 0600 in a private directory, delete right after."""
    with tempfile.TemporaryDirectory(prefix="airlock-tls-") as directory:  # created 0700
        paths = []
        for filename, content in (("client.crt", certificate), ("client.key", key)):
            path = os.path.join(directory, filename)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(content)
            paths.append(path)
        context.load_cert_chain(certfile=paths[0], keyfile=paths[1])


@dataclass(frozen=True)
class _Entry:
    upstream: Upstream | None
    connection_id: int | None
    updated_at: datetime | None
    checked_at: float


class ConnectionRegistry:
    """The hot path's connections, one per application (airlock.app builds it); ``await registry(name)``.

    Every registry of the process is invalidated by the Connection signals (connections.apps).
    """

    _instances: "weakref.WeakSet[ConnectionRegistry]" = weakref.WeakSet()
    _instances_lock = threading.Lock()

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()  # guards _entries writes and _generation; signal handlers may run in any thread
        self._entries: dict[str, _Entry] = {}
        self._generation = 0
        self._flights = Flights()
        with self._instances_lock:
            self._instances.add(self)

    async def __call__(self, name: str) -> Upstream | None:
        return await self.get_upstream(name)

    async def get_upstream(self, name: str) -> Upstream | None:
        """The enabled connection called `name`, or None (unknown or disabled); DatabaseUnavailable if it cannot tell."""
        entry = self._entries.get(name)
        age = self._clock() - entry.checked_at if entry is not None else None
        interval = settings.AIRLOCK_CONNECTION_REVALIDATE_SECONDS
        if age is not None and age < interval:
            return entry.upstream
        if not NAME_RE.match(name):
            return None
        return await refresh(
            self._flights, (name, self._generation), functools.partial(db.run, self._load, name, entry),
            stale=age is not None and age < interval + stale_seconds(), value=entry.upstream if entry else None,
        )

    def _load(self, name: str, previous: _Entry | None) -> Upstream | None:
        generation = self._generation
        row = Connection.objects.filter(name=name).first()
        if row is None or not row.enabled:
            upstream = None
        elif (
            previous is not None
            and previous.upstream is not None
            and previous.connection_id == row.pk
            and previous.updated_at == row.updated_at
        ):
            upstream = previous.upstream
        else:
            upstream = Upstream.from_connection(row)
        entry = _Entry(
            upstream=upstream,
            connection_id=row.pk if row else None,
            updated_at=row.updated_at if row else None,
            checked_at=self._clock(),
        )
        with self._lock:
            if generation != self._generation:
                return upstream  # the row changed while we read it; do not cache a possibly stale answer
            if upstream is None and name not in self._entries:
                negative = [cached for cached, e in self._entries.items() if e.upstream is None]
                if len(negative) >= MAX_NEGATIVE_ENTRIES:
                    for cached in negative:
                        del self._entries[cached]
            self._entries[name] = entry
        return upstream

    def invalidate(self, name: str, connection_id: int | None = None) -> None:
        """Drop cached entries for this name and for this row under any former name."""
        with self._lock:
            self._generation += 1
            for cached_name, entry in list(self._entries.items()):
                if cached_name == name or (connection_id is not None and entry.connection_id == connection_id):
                    del self._entries[cached_name]

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._generation += 1
            self._entries.clear()

    @classmethod
    def _all(cls) -> list["ConnectionRegistry"]:
        with cls._instances_lock:
            return list(cls._instances)

    @classmethod
    def invalidate_all(cls, name: str, connection_id: int | None = None) -> None:
        for registry in cls._all():
            registry.invalidate(name, connection_id)

    @classmethod
    def clear_all(cls) -> None:
        """Forget everything in every registry (tests whose database is rolled back behind the caches' back)."""
        for registry in cls._all():
            registry.clear()


def on_trusted_proxy_changed(sender, instance, using: str = "default", **kwargs) -> None:
    """post_save/post_delete receiver for a TrustedProxy: its connection's ``updated_at`` moves (so other
    processes reload it within their revalidation interval) and this process's registries forget it now."""
    connection_id = instance.connection_id
    Connection.objects.using(using).filter(pk=connection_id).update(updated_at=timezone.now())
    name = Connection.objects.using(using).filter(pk=connection_id).values_list("name", flat=True).first() or ""
    ConnectionRegistry.invalidate_all(name, connection_id)
    transaction.on_commit(lambda: ConnectionRegistry.invalidate_all(name, connection_id), using=using)


def on_connection_changed(sender, instance: Connection, using: str = "default", **kwargs) -> None:
    """post_save/post_delete receiver: invalidate every registry now, and again once the transaction commits."""
    name, pk = instance.name, instance.pk
    ConnectionRegistry.invalidate_all(name, pk)
    transaction.on_commit(lambda: ConnectionRegistry.invalidate_all(name, pk), using=using)
    invalidation.announce_on_commit("connections", name, pk, using=using)


def on_announcement(name: str | None, connection_id: int | None) -> None:
    """runtime.invalidation's invalidator: another process saved or deleted this connection (None: any)."""
    if name is None:
        ConnectionRegistry.clear_all()
    else:
        ConnectionRegistry.invalidate_all(name, connection_id)
