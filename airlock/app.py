"""make_application(): the one place that builds and wires Airlock's ASGI application.

It builds, once per application, what the serving path shares and hands each part the collaborators
it needs (nothing is found through module globals):

* the connection registry (connections.registry), read by the gateway and by the Holder's previews;
* the authenticator (identity.chain), used by the gateway and passed to the agent lease API
  (approvals.agent_api) in the ASGI scope of the Django requests it routes;
* the policy cache (policy.cache), the audit Recorder (audit.recorder), the Secret value stores,
  the agent budgets and their counters (gateway.budgets, gateway.budgetstore: Redis when configured);
* the live-stream registry (approvals.live) and the lease cache (approvals.lease_check), whose
  lookups start the registry's airlock.leases listener;
* the Holder (approvals.hold), the GatewayApp (gateway.app), the approvals Sweeper, Django's
  ASGI application (static files served by it) and the router (airlock.routing);
* the MCP endpoint (mcpfront.server), which sends tool calls' requests through the GatewayApp in-process;
* the cache invalidation listener (runtime.invalidation): the rules, connections and leases another
  process changed are dropped here at once;
* the readiness checks behind ``/readyz`` (airlock.health) and the metrics listener
  (runtime.metrics, with the review and lease gauges of approvals.metrics), started and stopped
  with the lifespan.

The returned :class:`Airlock` is the ASGI application.  Its lifespan is :meth:`Airlock.lifespan`, an
async context manager: a failure while starting (the audit journal cannot be opened, say) is
answered with ``lifespan.startup.failed`` and its message, so the server exits instead of serving
without an audit trail.

Tests build the application here too, with ``overrides`` for the collaborators they replace.
"""

import logging
from contextlib import asynccontextmanager

from django.conf import settings as django_settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

from airlock.health import Readiness, health_application
from airlock.routing import router
from approvals.agent_api import AUTHENTICATOR
from approvals import lease_check
from approvals.hold import Holder
from approvals.lease_check import LeaseCache
from approvals.live import LiveStreams
from approvals.metrics import ReviewsAndLeases
from approvals.sweeper import Sweeper
from audit.recorder import Recorder
from connections import registry as connection_registry
from connections.registry import ConnectionRegistry
from policy import cache as policy_cache
from policy.cache import PolicyCache
from gateway import tracing as stage_tracing
from gateway.app import GatewayApp
from gateway.budgets import Budgets
from gateway.logcontext import RequestLogContext
from gateway.metrics import RequestMetrics
from gateway.secretvalues import SecretValueStores
from gateway.upstream import UpstreamPool
from identity.chain import build_authenticator
from mcpfront.server import Endpoint as McpEndpoint
from runtime import invalidation as cache_invalidation
from runtime.metrics import MetricsServer

log = logging.getLogger(__name__)

# What ``overrides`` may replace; each defaults to what production builds.
COLLABORATORS = frozenset({
    "registry", "authenticator", "policy", "recorder", "secret_values", "live", "leases", "holder",
    "sweeper", "django", "transport", "pool", "detectors", "on_started", "readiness", "metrics",
    "tracing", "addons", "budgets", "mcp", "invalidation",
})


def make_application(settings=None, **overrides) -> "Airlock":
    """Airlock's ASGI application, wired.

    ``settings``: where the AIRLOCK_* settings are read (default: Django's); the recorder and the
    policy and lease caches read Django's.  ``overrides``: collaborators to use instead of building
    them (see COLLABORATORS), e.g. ``holder=None`` (review rules then refuse), ``sweeper=None``,
    ``transport=`` an httpx transport for every upstream, ``on_started=`` a callable run with the
    application once it has started (airlock.asgi: the SIGTERM drain), ``metrics=None`` (no metrics
    listener whatever AIRLOCK_METRICS_PORT says).
    """
    unknown = set(overrides) - COLLABORATORS
    if unknown:
        raise TypeError(f"make_application() got unknown collaborators: {', '.join(sorted(unknown))}")
    config = settings if settings is not None else django_settings

    def given(name, build):
        return overrides[name] if name in overrides else build()

    registry = given("registry", ConnectionRegistry)
    tracing = given("tracing", lambda: stage_tracing.from_settings(config))  # None: off (AIRLOCK_OTEL_ENDPOINT)
    authenticator = given("authenticator", lambda: build_authenticator(config))
    recorder = given("recorder", Recorder)
    pool = overrides.get("pool")
    if tracing is not None:
        authenticator, recorder = tracing.authenticator(authenticator), tracing.recorder(recorder)
        if pool is None:
            pool = UpstreamPool(overrides.get("transport"), wrap=tracing.transport)
    # After the gateway's own (recording, lease binding): request metrics, the log lines' context, spans.
    addons = [RequestMetrics(), RequestLogContext(), *([tracing] if tracing is not None else []),
              *overrides.get("addons", ())]
    live = given("live", LiveStreams)
    leases = given("leases", lambda: LeaseCache(on_lookup=live.ensure_listener))
    holder = given("holder", lambda: Holder(connections=registry))
    gateway = GatewayApp(
        prefix=config.AIRLOCK_GATEWAY_PREFIX,
        connections=registry,
        authenticator=authenticator,
        policy=given("policy", PolicyCache),
        recorder=recorder,
        holder=holder,
        leases=leases,
        live=live,
        max_body=config.AIRLOCK_MAX_REQUEST_BODY,
        secret_values=given("secret_values", lambda: SecretValueStores.from_settings(config)),
        transport=overrides.get("transport"),
        pool=pool,
        detectors=overrides.get("detectors"),
        addons=addons,
        budgets=given("budgets", lambda: Budgets.from_settings(config)),
    )
    # The dashboard's own assets (htmx, asciinema-player) are vendored into static/ and served by
    # the app itself: no CDN, no separate web server.
    django_http = given("django", lambda: ASGIStaticFilesHandler(get_asgi_application()))
    readiness = given("readiness", lambda: Readiness.from_settings(config, gateway=gateway, registry=registry))
    metrics = given("metrics", lambda: metrics_server(config))
    django_api = with_authenticator(django_http, authenticator)
    # The MCP endpoint sends every tool call's requests through this gateway in-process (no side door).
    mcp = given("mcp", lambda: McpEndpoint(gateway=gateway, gateway_prefix=config.AIRLOCK_GATEWAY_PREFIX,
                                           authenticator=authenticator, policy=gateway.policy, django=django_api))
    invalidation = given("invalidation", lambda: invalidation_listener(config))
    return Airlock(
        gateway=gateway,
        routed=router(gateway, django_api, config.AIRLOCK_GATEWAY_PREFIX,
                      health=health_application(readiness), mcp=mcp),
        registry=registry,
        holder=holder,
        leases=leases,
        live=live,
        sweeper=given("sweeper", lambda: Sweeper.from_settings(config)),
        on_started=overrides.get("on_started"),
        readiness=readiness,
        metrics=metrics,
        tracing=tracing,
        mcp=mcp,
        invalidation=invalidation,
    )


def invalidation_listener(config) -> cache_invalidation.Listener:
    """This process's subscriber to the other processes' cache announcements (runtime.invalidation):
    compiled rules, connections and leases, the same invalidation the model signals do here."""
    return cache_invalidation.Listener.from_settings({
        "rules": lambda connection, _id: policy_cache.invalidate_all(connection),
        "connections": connection_registry.on_announcement,
        "leases": lambda connection, _id: lease_check.invalidate_all(connection),
    }, config)


def metrics_server(config) -> MetricsServer | None:
    """The /metrics listener AIRLOCK_METRICS_PORT asks for (None: none)."""
    port = getattr(config, "AIRLOCK_METRICS_PORT", None)
    if port is None:
        return None
    return MetricsServer(getattr(config, "AIRLOCK_METRICS_ADDRESS", "127.0.0.1"), port,
                         collectors=[ReviewsAndLeases()])


def with_authenticator(django_http, authenticator):
    """Django's application, its requests carrying the application's authenticator (approvals.agent_api)."""

    async def application(scope, receive, send):
        await django_http({**scope, AUTHENTICATOR: authenticator}, receive, send)

    return application


class Airlock:
    """The ASGI application: HTTP and WebSocket requests go to the router, the lifespan runs :meth:`lifespan`."""

    def __init__(self, *, gateway, routed, registry, holder, leases, live, sweeper, on_started=None, readiness=None,
                 metrics=None, tracing=None, mcp=None, invalidation=None):
        self.gateway = gateway
        self.routed = routed
        self.registry = registry
        self.holder = holder
        self.leases = leases
        self.live = live
        self.sweeper = sweeper  # None where Celery beat expires reviews and leases
        self.on_started = on_started
        self.readiness = readiness  # airlock.health.Readiness: /readyz
        self.metrics = metrics  # runtime.metrics.MetricsServer, or None
        self.tracing = tracing  # gateway.tracing.Tracing, or None
        self.mcp = mcp  # mcpfront.server.Endpoint, or None
        self.invalidation = invalidation  # runtime.invalidation.Listener, or None

    @property
    def recorder(self):
        return self.gateway.recorder

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self.serve_lifespan(receive, send)
        else:
            await self.routed(scope, receive, send)

    @asynccontextmanager
    async def lifespan(self):
        """Start the gateway (the recorder opens its journal and replays dead processes' journals) and
        the sweeper; on exit, stop them, the lease listener, and close the gateway (the recorder
        writes what it queued)."""
        await self.gateway.start()
        mcp_sessions = self.mcp.serving() if self.mcp is not None else None
        try:
            if mcp_sessions is not None:
                await mcp_sessions.__aenter__()
            if self.invalidation is not None:
                self.invalidation.start()
            if self.metrics is not None:
                self.metrics.start()
            if self.on_started is not None:
                self.on_started(self)
            if self.sweeper is not None:
                self.sweeper.start()
            yield self
        finally:
            if self.sweeper is not None:
                await self.sweeper.stop()
            if mcp_sessions is not None:
                await mcp_sessions.__aexit__(None, None, None)
            await self.live.stop_listener()
            if self.invalidation is not None:
                await self.invalidation.stop()
            await self.gateway.aclose()
            if self.metrics is not None:
                self.metrics.stop()
            if self.tracing is not None:
                self.tracing.shutdown()

    async def serve_lifespan(self, receive, send):
        """The ASGI lifespan protocol around :meth:`lifespan`; a failure is reported, never raised."""
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        context = self.lifespan()
        try:
            await context.__aenter__()
        except Exception as exc:
            log.error("airlock could not start: %s", type(exc).__name__, exc_info=True)
            await send({"type": "lifespan.startup.failed", "message": failure("could not start", exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        try:
            await context.__aexit__(None, None, None)
        except Exception as exc:
            log.error("airlock did not shut down cleanly: %s", type(exc).__name__, exc_info=True)
            await send({"type": "lifespan.shutdown.failed", "message": failure("did not shut down cleanly", exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})


def failure(what: str, exc: Exception) -> str:
    detail = str(exc)[:300]
    return f"airlock {what}: {type(exc).__name__}" + (f": {detail}" if detail else "")
