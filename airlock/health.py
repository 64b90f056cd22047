"""``/livez`` and ``/readyz``: answered by the router before Django (and its ALLOWED_HOSTS check:
the kubelet sends the pod's IP as Host), fast, and telling the caller nothing about the inside.

* ``/livez``: the process serves requests (its event loop runs).  No database, nothing shared:
  restarting the process would not fix a database outage.
* ``/readyz``: this process can serve agents now.  Its checks, each bounded by ``CHECK_SECONDS``:

  - ``database``: one round trip through the gateway's database pool (runtime.db);
  - ``redis``: a PING, when ``REDIS_URL`` is set;
  - ``audit``: the audit writer is not wedged: completion events have not been waiting longer
    than ``AIRLOCK_READY_AUDIT_STALL_SECONDS`` without a batch being committed;
  - ``upstream``: each connection's cluster answers HTTP at all (any status: a TLS handshake and a
    response, no credential sent), each result cached ``AIRLOCK_READY_UPSTREAM_CACHE_SECONDS`` so
    probes never hammer a cluster.  ``AIRLOCK_READY_UPSTREAMS`` says what readiness needs: ``one``
    (default: at least one reachable when there are connections: a cluster that is down is down
    for every replica, and taking them all out would cut the dashboard and every other
    connection too), ``every``, or ``off``; each connection's result is the metric
    ``airlock_upstream_up``, for alerts;
  - ``draining``: the process received SIGTERM.

  The answer is ``200 ok`` or ``503`` with the names of the failed checks: no host, error, DSN
  or connection name.  Details go to the log, once when a check starts failing (the error's
  class only: messages can carry DSNs) and once when it recovers.
"""

from __future__ import annotations

import asyncio
import logging
import time

from connections.models import Connection
from runtime import db, metrics
from runtime.timeouts import wait_at_most

log = logging.getLogger(__name__)

LIVE, READY = "/livez", "/readyz"
PATHS = frozenset({LIVE, READY})
CHECK_SECONDS = 2.0
UPSTREAM_POLICIES = ("one", "every", "off")


class Readiness:
    """The readiness checks of one application (airlock.app wires it; :meth:`check` runs them)."""

    def __init__(self, *, gateway, registry, redis_url: str | None = None, upstreams: str = "one",
                 upstream_cache_seconds: float = 10.0, audit_stall_seconds: float = 30.0,
                 check_seconds: float = CHECK_SECONDS, clock=time.monotonic, connection_names=None):
        if upstreams not in UPSTREAM_POLICIES:
            raise ValueError(f"AIRLOCK_READY_UPSTREAMS must be one of {', '.join(UPSTREAM_POLICIES)}, not {upstreams!r}")
        self.gateway = gateway
        self.registry = registry
        self.redis_url = redis_url
        self.upstreams = upstreams
        self.upstream_cache_seconds = upstream_cache_seconds
        self.audit_stall_seconds = audit_stall_seconds
        self.check_seconds = check_seconds
        self.clock = clock
        self.connection_names = connection_names or _connection_names
        self._upstream: dict[str, tuple[float, bool]] = {}  # connection -> (checked at, reachable)
        self._upstream_lock = asyncio.Lock()
        self._failing: set[str] = set()

    @classmethod
    def from_settings(cls, config, *, gateway, registry) -> Readiness:
        return cls(gateway=gateway, registry=registry, redis_url=getattr(config, "REDIS_URL", None),
                   upstreams=getattr(config, "AIRLOCK_READY_UPSTREAMS", "one"),
                   upstream_cache_seconds=getattr(config, "AIRLOCK_READY_UPSTREAM_CACHE_SECONDS", 10.0),
                   audit_stall_seconds=getattr(config, "AIRLOCK_READY_AUDIT_STALL_SECONDS", 30.0))

    async def check(self) -> list[str]:
        """The names of the checks that failed (empty: ready)."""
        checks = {"database": self._database(), "audit": self._audit(), "draining": self._draining()}
        if self.redis_url:
            checks["redis"] = self._redis()
        if self.upstreams != "off":
            checks["upstream"] = self._upstream_check()
        results = await asyncio.gather(*(self._bounded(name, check) for name, check in checks.items()))
        failed = [name for name, ok in zip(checks, results) if not ok]
        metrics.READY.set(0 if failed else 1)
        return failed

    async def _bounded(self, name: str, check) -> bool:
        try:
            detail = await wait_at_most(check, self.check_seconds)
        except TimeoutError:
            detail = f"no answer within {self.check_seconds:g}s"
        except Exception as exc:
            detail = type(exc).__name__
        self._report(name, detail)
        return detail is None

    def _report(self, name: str, detail: str | None) -> None:
        if detail is None:
            if name in self._failing:
                self._failing.discard(name)
                log.warning("readiness: %s recovered", name)
        elif name not in self._failing:
            self._failing.add(name)
            log.warning("readiness: %s failed (%s)", name, detail)

    # -- the checks: each returns None when it passes, else a short reason for the log --------------

    async def _database(self) -> str | None:
        await db.run(db.ping)
        return None

    async def _audit(self) -> str | None:
        stalled = self.gateway.recorder.stalled_seconds()
        if stalled > self.audit_stall_seconds:
            return f"{self.gateway.recorder.pending} audit events waiting {stalled:.0f}s for a commit"
        return None

    async def _draining(self) -> str | None:
        return "the process is shutting down" if self.gateway.draining else None

    async def _redis(self) -> str | None:
        from redis import asyncio as aioredis

        client = aioredis.Redis.from_url(self.redis_url, socket_connect_timeout=self.check_seconds,
                                         socket_timeout=self.check_seconds)
        try:
            await client.ping()
        finally:
            await client.aclose()
        return None

    async def _upstream_check(self) -> str | None:
        async with self._upstream_lock:  # concurrent probes share one round of checks
            try:
                names = await db.run(self.connection_names)
            except Exception:
                names = list(self._upstream)  # the database check reports the database
            now = self.clock()
            for gone in set(self._upstream) - set(names):
                del self._upstream[gone]
            due = [name for name in names
                   if name not in self._upstream or now - self._upstream[name][0] >= self.upstream_cache_seconds]
            if due:
                results = await asyncio.gather(*(self._reach(name) for name in due))
                for name, ok in zip(due, results):
                    self._upstream[name] = (self.clock(), ok)
        down = sorted(name for name, (_, ok) in self._upstream.items() if not ok)
        if not self._upstream or not down:
            return None
        if self.upstreams == "every" or len(down) == len(self._upstream):
            return f"unreachable: {', '.join(down)}"
        return None

    async def _reach(self, name: str) -> bool:
        """Whether ``name``'s cluster answers HTTP (any status); logged when that changes."""
        ok, detail = True, ""
        previous = self._upstream.get(name)
        try:
            upstream = await self.registry(name)
        except Exception:  # the database is away and the registry's copy too old: not the cluster's fault
            return previous[1] if previous is not None else True
        if upstream is None:
            return True  # removed meanwhile
        try:
            client = self.gateway.pool.client(upstream)
            response = await wait_at_most(client.get(upstream.server_url + "/livez"), self.check_seconds * 0.9)
            await response.aclose()
        except TimeoutError:
            ok, detail = False, "no answer"
        except Exception as exc:
            ok, detail = False, type(exc).__name__
        metrics.UPSTREAM_UP.labels(metrics.connection_label(name)).set(1 if ok else 0)
        if previous is None or previous[1] != ok:
            if ok and previous is not None:
                log.warning("readiness: connection %s reachable again", name)
            elif not ok:
                log.warning("readiness: connection %s unreachable (%s)", name, detail)
        return ok


def _connection_names() -> list[str]:
    return list(Connection.objects.values_list("name", flat=True))


def health_application(readiness: Readiness | None):
    """The ASGI application for ``/livez`` and ``/readyz`` (GET and HEAD)."""

    async def application(scope, receive, send):
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _answer(send, 405, b"method not allowed\n", method, [(b"allow", b"GET, HEAD")])
            return
        if scope["path"] == LIVE or readiness is None:
            await _answer(send, 200, b"ok\n", method)
            return
        failed = await readiness.check()
        if failed:
            await _answer(send, 503, ("not ready: " + ",".join(failed) + "\n").encode("ascii"), method)
        else:
            await _answer(send, 200, b"ok\n", method)

    return application


async def _answer(send, status: int, body: bytes, method: str, extra=()):
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
