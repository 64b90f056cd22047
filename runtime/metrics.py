"""Airlock's Prometheus metrics: every metric object, defined once, and the listener that serves them.

Every package may import this module (runtime is the lowest layer) and increment a metric where
the event happens: the audit recorder (queue depth, append latency, events committed), the
identity chain and the gateway's authenticate stage (failures by reason), the upstream pool
(errors), the readiness checks (upstream reachability), and the gateway's request addon
(gateway.metrics: requests, latencies, held reviews, open streams, masking replacements).

Labels are bounded and never carry a secret: no path, no object name, no namespace, no token or
username; connection names only once the connection was found, and values that come from a
request (resource, detector) pass through :class:`Bounded`, which keeps the first
``MAX_VALUES`` distinct values per label and folds the rest into ``other``.

Several processes (``uvicorn --workers N``): set ``PROMETHEUS_MULTIPROC_DIR`` (the container
image sets ``/tmp/airlock-metrics``) and prometheus-client's multiprocess mode writes each
process's values to files there; whichever process holds the metrics port reads them all.  This
module prepares the directory before prometheus-client is imported (the library picks its mode
at import): it creates it, and removes the files of processes that are gone (a previous
container's, a dead worker's) and any stale file with this process's id, so the values served
are those of the processes running now.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from bisect import bisect_left

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_FILE_PID = re.compile(r"_(\d+)\.db\Z")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_multiprocess_dir(directory: str | None = None, pid: int | None = None) -> list[str]:
    """Create the multiprocess directory and remove the files no running process owns (and this
    process's own, which a fresh process cannot have written).  Returns the names removed."""
    directory = directory if directory is not None else os.environ.get(MULTIPROC_ENV)
    if not directory:
        return []
    pid = os.getpid() if pid is None else pid
    os.makedirs(directory, mode=0o700, exist_ok=True)
    removed = []
    for name in os.listdir(directory):
        match = _FILE_PID.search(name)
        if match is None:
            continue
        owner = int(match.group(1))
        if owner == pid or not _alive(owner):
            try:
                os.remove(os.path.join(directory, name))
                removed.append(name)
            except FileNotFoundError:
                pass
    return removed


prepare_multiprocess_dir()

# Imported after the directory is ready: prometheus-client chooses multiprocess mode at import.
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess)

MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))


class _ProcessId:
    """This process's id for prometheus-client's multiprocess values, kept rather than asked for.

    The library asks ``os.getpid()`` at every ``inc``/``observe`` to notice a fork (and then start
    the child's own files): a system call per value, seven per proxied request.  The id is read
    once and again in every child a fork makes (``os.register_at_fork``), so a forked child still
    writes its own files, as the library's check ensures."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.pid = os.getpid()

    def __call__(self) -> int:
        return self.pid


from prometheus_client import values as _values  # noqa: E402

if getattr(_values.ValueClass, "_multiprocess", False):
    # Before any metric's value exists (every metric is defined below): one class, one set of files.
    _values.ValueClass = _values.MultiProcessValue(process_identifier=_ProcessId())

OTHER = "other"
MAX_VALUES = 200
_LABEL_TEXT = re.compile(r"[a-z0-9][a-z0-9._/-]{0,126}\Z")


class Bounded:
    """At most ``limit`` distinct label values (lower-case names, dots, slashes, dashes; at most 127
    characters), the first ones seen; anything else is ``other``."""

    def __init__(self, limit: int = MAX_VALUES):
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value) -> str:
        if not value:
            return ""
        value = str(value)
        if value in self._seen:
            return value
        if not _LABEL_TEXT.match(value):
            return OTHER
        with self._lock:
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
        return value


class Children:
    """A labelled metric's children by label values in a plain dict, each as the function that records
    on it: ``Children.counting(REQUESTS)("prod", "get", "pods", "allow", "2xx")(1)``.

    prometheus-client's ``labels()`` checks, converts and locks on every call, its ``inc`` and
    ``observe`` check again and a histogram walks its buckets: the gateway records several values per
    request.  Here a child is made once per label values (by ``labels()``, so it is the one exposed)
    and then found by one dict lookup; its recording function writes the child's values directly,
    the same values ``inc``/``observe`` write (each value keeps its own lock, and its file in
    multiprocess mode).  Only for metrics whose children are never removed (no ``remove`` or
    ``clear``: these metrics' label values are bounded) and for amounts that are numbers, not NaN.
    It reads the children's attributes (``_value``, ``_sum``, ``_buckets``, ``_upper_bounds``) of
    the pinned prometheus-client; runtime/tests/test_metrics.py compares with its own recording.
    """

    def __init__(self, metric, recorder):
        self._metric = metric
        self._recorder = recorder  # child -> its recording function
        self._children: dict[tuple, object] = {}

    @classmethod
    def counting(cls, counter) -> "Children":
        """``inc(amount)`` of a counter's children (amount >= 0)."""
        return cls(counter, lambda child: child._value.inc)

    @classmethod
    def observing(cls, histogram) -> "Children":
        """``observe(amount)`` of a histogram's children: the bucket found by bisection."""
        return cls(histogram, _observer)

    def __call__(self, *values):
        record = self._children.get(values)
        if record is None:
            record = self._children[values] = self._recorder(self._metric.labels(*values))
        return record


def _observer(child):
    bounds = tuple(child._upper_bounds)  # ascending, +Inf last: every number has a bucket
    buckets = tuple(bucket.inc for bucket in child._buckets)
    add = child._sum.inc

    def observe(amount: float) -> None:
        add(amount)
        buckets[bisect_left(bounds, amount)](1)  # the first bound >= amount, as Histogram.observe

    return observe


connection_label = Bounded()
resource_label = Bounded()
detector_label = Bounded()

# Seconds: from under a millisecond (the gateway's own stages) to the minutes a held request waits.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
HOLD_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)

# -- requests (gateway.metrics) -----------------------------------------------------------------
REQUESTS = Counter(
    "airlock_requests", "Requests through the gateway, by connection, verb, resource, decision and status class.",
    ["connection", "verb", "resource", "decision", "code"])
REQUEST_SECONDS = Histogram(
    "airlock_request_duration_seconds",
    "Whole request time (arrival to answer complete) of requests that are not long-lived streams, "
    "time held for review included.", ["connection", "verb", "decision"], buckets=LATENCY_BUCKETS)
OVERHEAD_SECONDS = Histogram(
    "airlock_gateway_overhead_seconds",
    "The gateway's own time before forwarding (parse, authenticate, authorize, record), time held for review "
    "excluded.", ["connection", "verb"], buckets=LATENCY_BUCKETS)
UPSTREAM_SECONDS = Histogram(
    "airlock_upstream_duration_seconds",
    "From forwarding to the answer complete (the cluster's time, and the response's masking) of requests that "
    "are not long-lived streams.", ["connection", "verb"], buckets=LATENCY_BUCKETS)
HELD = Gauge("airlock_reviews_held", "Requests held now, waiting for a reviewer.", ["connection"],
             multiprocess_mode="livesum")
HOLD_SECONDS = Histogram("airlock_review_hold_seconds", "How long held requests waited for a reviewer.",
                         ["connection"], buckets=HOLD_BUCKETS)
STREAMS_OPEN = Gauge("airlock_streams_open", "Long-lived streams open now, by kind.", ["kind"],
                     multiprocess_mode="livesum")
MASKED = Counter("airlock_masking_replacements", "Values masked in answers to agents, by detector.", ["detector"])

# -- agent budgets (gateway.budgets) -------------------------------------------------------------
BUDGET_KINDS = frozenset({"rate", "quota", "concurrent", "loop"})
BUDGET_THROTTLES = Counter(
    "airlock_budget_throttles", "Requests answered 429 because an agent budget ran out, by connection and budget "
    "(rate, quota, concurrent, loop).", ["connection", "budget"])
BUDGET_STORE_FAILURES = Counter(
    "airlock_budget_store_failures", "Budget counts that could not be made (Redis away or slow), by what "
    "followed: refused (a budgeted request, 503) or skipped (loop detection let the request on).", ["effect"])

# -- identity ------------------------------------------------------------------------------------
AUTHN_FAILURES = Counter("airlock_authentication_failures", "Bearer tokens refused, by reason.", ["reason"])

# -- audit ---------------------------------------------------------------------------------------
AUDIT_QUEUE = Gauge("airlock_audit_queue_depth", "Audit completion events waiting to be committed.",
                    multiprocess_mode="livesum")
AUDIT_APPEND_SECONDS = Histogram(
    "airlock_audit_append_seconds", "Time to append to the audit chain: one commit before forwarding (commit) "
    "or one batch of completions (batch).", ["kind"], buckets=LATENCY_BUCKETS)
AUDIT_COMMITTED = Counter("airlock_audit_events_committed", "Audit events committed to the chain.")
AUDIT_FAILURES = Counter("airlock_audit_write_failures", "Audit appends that failed (a batch is retried).",
                         ["kind"])

# -- upstream ------------------------------------------------------------------------------------
UPSTREAM_ERRORS = Counter("airlock_upstream_errors",
                          "Requests to a cluster that got no answer, by connection and error class.",
                          ["connection", "error"])
UPSTREAM_UP = Gauge("airlock_upstream_up",
                    "Whether the readiness check reached the connection's cluster (1) or not (0).",
                    ["connection"], multiprocess_mode="livemax")

# -- readiness -----------------------------------------------------------------------------------
READY = Gauge("airlock_ready", "Whether the last readiness check passed (1) or not (0).",
              multiprocess_mode="livemin")

UPSTREAM_ERROR_CLASSES = frozenset({
    "ConnectError", "ConnectTimeout", "ReadError", "ReadTimeout", "WriteError", "WriteTimeout", "PoolTimeout",
    "RemoteProtocolError", "LocalProtocolError", "ProxyError", "UnsupportedProtocol", "CloseError",
    "NetworkError", "TimeoutException", "TransportError", "ProtocolError",
})


def upstream_error(connection: str, exc: BaseException) -> None:
    """Count a request to ``connection``'s cluster that failed with ``exc`` (its class name, bounded)."""
    name = type(exc).__name__
    UPSTREAM_ERRORS.labels(connection_label(connection), name if name in UPSTREAM_ERROR_CLASSES else OTHER).inc()


AUTHN_REASONS = frozenset({
    "missing", "malformed", "invalid", "expired", "not_yet_valid", "audience", "issuer", "signature", "algorithm",
    "key", "claims", "type", "authorized_party", "unavailable", "groups_overage", "no_authenticator",
})


def authentication_failed(reason: str) -> None:
    AUTHN_FAILURES.labels(reason if reason in AUTHN_REASONS else OTHER).inc()


# -- serving -------------------------------------------------------------------------------------


def exposition_registry(collectors=()) -> CollectorRegistry:
    """The registry a scrape reads: this process's metrics (or, in multiprocess mode, every process's
    files) and ``collectors`` (values read when scraped, e.g. approvals.metrics)."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Default())
    for collector in collectors:
        registry.register(collector)
    return registry


class _Default:
    """The process's default registry, as one collector of another registry."""

    def collect(self):
        return REGISTRY.collect()


def metric_names(registry: CollectorRegistry | None = None) -> set[str]:
    """Every sample name the registry exposes (``_total``, ``_bucket``, ... included) and every family name."""
    registry = registry if registry is not None else exposition_registry()
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


class MetricsServer:
    """``GET /metrics`` (and nothing else) on its own port, in a daemon thread.

    With several worker processes only one can bind the port; the others retry every
    ``retry_seconds``, so a worker that dies hands the port to another.  ``port`` 0 binds any free
    port (tests); :attr:`port` is the one bound.
    """

    def __init__(self, address: str, port: int, collectors=(), retry_seconds: float = 5.0):
        self.address = address
        self.requested_port = port
        self.registry = exposition_registry(collectors)
        self.retry_seconds = retry_seconds
        self.port: int | None = None
        self._server = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self._bind():
            self._thread = threading.Thread(target=self._retry, name="airlock-metrics-bind", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _retry(self) -> None:
        while not self._stopped.wait(self.retry_seconds):
            if self._bind():
                return

    def _bind(self) -> bool:
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        from prometheus_client.exposition import ThreadingWSGIServer

        class Quiet(WSGIRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - the base class's signature
                pass

        try:
            server = make_server(self.address, self.requested_port, self._app, ThreadingWSGIServer,
                                 handler_class=Quiet)
        except OSError as exc:
            if self._thread is None:
                log.info("metrics port %s:%s is taken (%s); another process serves it, retrying every %gs",
                         self.address, self.requested_port, type(exc).__name__, self.retry_seconds)
            return False
        if self._stopped.is_set():
            server.server_close()
            return True
        self._server = server
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, name="airlock-metrics", daemon=True).start()
        log.info("metrics on http://%s:%d/metrics", self.address, self.port)
        return True

    def _app(self, environ, start_response):
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: metrics are at /metrics\n"]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain; charset=utf-8"),
                                                      ("Allow", "GET, HEAD")])
            return [b"method not allowed\n"]
        body = render(self.registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]
