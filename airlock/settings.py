"""Airlock settings, read from environment variables.

Every setting has an embedded default so that a fresh clone runs with no
configuration (SQLite, in-memory channel layer).  Defaults that are only safe
for development are collected in DEV_ONLY_DEFAULTS and refused when
AIRLOCK_ENV=production.

Long because Django reads one settings module: every setting, its default and its production check
stay side by side (docs/configuration.md is checked against it).
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("AIRLOCK_VAR_DIR", BASE_DIR / ".var"))

AIRLOCK_ENV = os.environ.get("AIRLOCK_ENV", "development")
PRODUCTION = AIRLOCK_ENV == "production"

# Development-only values.  They are public (they are in this file), so a
# production deployment that still uses one of them is refused at start-up.
DEV_ONLY_DEFAULTS = {
    "AIRLOCK_SECRET_KEY": "dev-only-insecure-secret-key-do-not-use-in-production",
    # A Fernet key for credentials at rest; generate real ones with
    # `manage.py rotate_credential_keys --generate`.
    "AIRLOCK_FIELD_ENCRYPTION_KEYS": "ZGV2LW9ubHktZmVybmV0LWtleS1ub3QtZm9yLXByb2Q=",
    # An HMAC key for the audit chain (audit/keys.py); generate real ones with
    # `manage.py audit_keys --generate`.
    "AIRLOCK_AUDIT_KEYS": "ZGV2LW9ubHktYXVkaXQtY2hhaW4ta2V5LW5vdC1mb3ItcHJvZHVjdGlvbg==",
}


def env(name, default=None):
    value = os.environ.get(name)
    if value is not None and value != "":
        return value
    if name in DEV_ONLY_DEFAULTS:
        if PRODUCTION:
            raise ImproperlyConfigured(f"{name} must be set when AIRLOCK_ENV=production")
        return DEV_ONLY_DEFAULTS[name]
    return default


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name, default=""):
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


SECRET_KEY = env("AIRLOCK_SECRET_KEY")
if PRODUCTION and SECRET_KEY in DEV_ONLY_DEFAULTS.values():
    raise ImproperlyConfigured("AIRLOCK_SECRET_KEY uses a development default")

FIELD_ENCRYPTION_KEYS = env_list("AIRLOCK_FIELD_ENCRYPTION_KEYS")
if PRODUCTION and set(FIELD_ENCRYPTION_KEYS) & set(DEV_ONLY_DEFAULTS.values()):
    raise ImproperlyConfigured("AIRLOCK_FIELD_ENCRYPTION_KEYS contains a development default")

# Audit chain keys (audit/keys.py): the first signs, every one verifies.  Kept out of the
# database on purpose: whoever can write the audit tables must not be able to re-sign them.
AIRLOCK_AUDIT_KEYS = env_list("AIRLOCK_AUDIT_KEYS")
if PRODUCTION and set(AIRLOCK_AUDIT_KEYS) & set(DEV_ONLY_DEFAULTS.values()):
    raise ImproperlyConfigured("AIRLOCK_AUDIT_KEYS contains a development default")

DEBUG = env_bool("AIRLOCK_DEBUG", default=not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("AIRLOCK_DEBUG must be off when AIRLOCK_ENV=production")

ALLOWED_HOSTS = env_list("AIRLOCK_ALLOWED_HOSTS", "" if PRODUCTION else "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("AIRLOCK_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    # daphne's app makes `manage.py runserver` serve ASGI; its ready() imports Twisted (about 16 MiB in
    # every process), which the gateway's workers (uvicorn), Celery and other commands do not need.
    *(["daphne"] if sys.argv[1:2] == ["runserver"] else []),
    "airlock.apps.AdminConfig",  # django.contrib.admin, with airlock.admin.AirlockAdminSite
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "channels",
    "connections",
    "policy",
    "gateway",
    "approvals",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A view that cannot reach the database answers 503, not a 500 and a traceback.
    "runtime.unavailable.DatabaseUnavailableMiddleware",
]
# The reviewer REST API answers a database it cannot reach with 503 {"detail": ...}.
REST_FRAMEWORK = {"EXCEPTION_HANDLER": "runtime.unavailable.api_exception_handler"}

ROOT_URLCONF = "airlock.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "airlock.asgi.application"


def postgres_options() -> dict:
    """libpq settings so that a lost database is noticed in seconds, not minutes.

    Give up connecting after a few seconds; notice a server that vanished (packets dropped, not
    refused) through TCP keepalives and tcp_user_timeout instead of the kernel's ~15 minutes;
    statement and lock timeouts bound what a slow or locked server can hold.
    """
    options = {
        "connect_timeout": max(2, int(float(env("AIRLOCK_DB_CONNECT_TIMEOUT_SECONDS", "3")))),
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 3,
        "keepalives_count": 3,
        "tcp_user_timeout": int(float(env("AIRLOCK_DB_TCP_USER_TIMEOUT_SECONDS", "10")) * 1000),
    }
    server = " ".join(
        f"-c {name}={int(float(env(variable, default)) * 1000)}"
        for name, variable, default in (
            ("statement_timeout", "AIRLOCK_DB_STATEMENT_TIMEOUT_SECONDS", "30"),
            ("lock_timeout", "AIRLOCK_DB_LOCK_TIMEOUT_SECONDS", "10"),
        )
        if float(env(variable, default)) > 0
    )
    if server:
        options["options"] = server
    return options


DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    # Connections are kept for a minute, checked before reuse and replaced after a failure.
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Options given in DATABASE_URL win.
        DATABASES["default"]["OPTIONS"] = postgres_options() | DATABASES["default"].get("OPTIONS", {})
else:
    if PRODUCTION:
        raise ImproperlyConfigured("DATABASE_URL must be set when AIRLOCK_ENV=production")
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env("AIRLOCK_SQLITE_PATH", str(VAR_DIR / "airlock.sqlite3")),
            # The audit writer thread and request handlers share the file: WAL lets
            # readers run beside the writer, and writers wait instead of failing.
            "OPTIONS": {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"},
            # A file, not shared-cache memory: shared-cache readers fail at once
            # ("table is locked") while another connection writes.
            "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"airlock-test-{os.getpid()}.sqlite3")},
        }
    }

REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout unless told otherwise, the same 5 s channels-redis
            # blocks in BZPOPMIN on an idle channel: a receive then fails instead of returning empty (the lease
            # listener restarted every few idle seconds, missing what was sent meanwhile).  10 s still ends a
            # read from a Redis that stopped answering.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 10}]},
        }
    }
else:
    if PRODUCTION:
        raise ImproperlyConfigured("REDIS_URL must be set when AIRLOCK_ENV=production")
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", REDIS_URL or "cache+memory://")
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# The approvals sweeper marks expired leases (ending their live sessions) and stale reviews.
# The audit anchor signs the chain head and appends it to AIRLOCK_AUDIT_ANCHOR_FILE; events
# newer than the last anchor are the ones a database writer could delete without a trace.
AIRLOCK_AUDIT_ANCHOR_SECONDS = float(env("AIRLOCK_AUDIT_ANCHOR_SECONDS", "60"))
# Audit journals of dead gateway processes (AIRLOCK_AUDIT_JOURNAL_DIR, when the worker shares it) are replayed.
AIRLOCK_AUDIT_RECOVER_SECONDS = float(env("AIRLOCK_AUDIT_RECOVER_SECONDS", "60"))
AIRLOCK_APPROVALS_SWEEP_SECONDS = float(env("AIRLOCK_APPROVALS_SWEEP_SECONDS", "15"))
# Without Celery beat (the single-box demo, a development server) each gateway process runs the
# same sweep on that interval (approvals/sweeper.py); on by default outside production, where
# docker-compose.yml runs beat.  Running both does no harm.
AIRLOCK_APPROVALS_SWEEP_IN_GATEWAY = env_bool("AIRLOCK_APPROVALS_SWEEP_IN_GATEWAY", not PRODUCTION)
CELERY_BEAT_SCHEDULE = {
    "approvals-sweep": {
        "task": "approvals.tasks.sweep",
        "schedule": AIRLOCK_APPROVALS_SWEEP_SECONDS,
    },
    "audit-anchor": {
        "task": "audit.tasks.anchor",
        "schedule": AIRLOCK_AUDIT_ANCHOR_SECONDS,
        "options": {"expires": AIRLOCK_AUDIT_ANCHOR_SECONDS},
    },
    "audit-recover": {
        "task": "audit.tasks.recover_journals",
        "schedule": AIRLOCK_AUDIT_RECOVER_SECONDS,
        "options": {"expires": AIRLOCK_AUDIT_RECOVER_SECONDS},
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env("AIRLOCK_STATIC_ROOT", str(VAR_DIR / "static")))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# kube-apiserver accepts request bodies up to 3 MiB; leave room for headers.
AIRLOCK_MAX_REQUEST_BODY = int(env("AIRLOCK_MAX_REQUEST_BODY", str(3 * 1024 * 1024 + 64 * 1024)))
DATA_UPLOAD_MAX_MEMORY_SIZE = AIRLOCK_MAX_REQUEST_BODY

# Upper bound (seconds) on how long a gateway process may use a connection's
# previous settings after another process changed it (connections/registry.py).
AIRLOCK_CONNECTION_REVALIDATE_SECONDS = float(env("AIRLOCK_CONNECTION_REVALIDATE_SECONDS", "5"))

# In-cluster connections (connections/incluster.py): the gateway pod's projected service-account
# token and the cluster CA, where the kubelet mounts them.  The token file is checked for a
# rotation (a stat) at most every TOKEN_CHECK_SECONDS and read again when it changed, at least
# every minute, and after a 401 from the cluster.
AIRLOCK_IN_CLUSTER_TOKEN_FILE = env("AIRLOCK_IN_CLUSTER_TOKEN_FILE", "/var/run/secrets/kubernetes.io/serviceaccount/token")
AIRLOCK_IN_CLUSTER_CA_FILE = env("AIRLOCK_IN_CLUSTER_CA_FILE", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
AIRLOCK_IN_CLUSTER_TOKEN_CHECK_SECONDS = float(env("AIRLOCK_IN_CLUSTER_TOKEN_CHECK_SECONDS", "5"))

# OpenTelemetry traces (gateway/tracing.py): off unless an OTLP/HTTP traces endpoint is given,
# e.g. http://otel-collector:4318/v1/traces.  The exporter's other settings (headers, timeout,
# certificate, compression) and the resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) come
# from the standard OTEL_* variables; OTEL_SDK_DISABLED=true keeps tracing off.
AIRLOCK_OTEL_ENDPOINT = env("AIRLOCK_OTEL_ENDPOINT")

# On SIGTERM/SIGINT the gateway ends its open watches and exec/attach/port-forward streams
# (ERROR event, Status on the error channel) and waits at most this long (seconds) for them to
# close before the server's own shutdown runs (airlock/drain.py); at the end of that shutdown the
# audit recorder gets at most this long again to commit what is queued (what a database that does
# not answer keeps it from committing stays in the audit journal for the next start).
AIRLOCK_DRAIN_SECONDS = float(env("AIRLOCK_DRAIN_SECONDS", "5"))

# Upper bound (seconds) on how long a gateway process may use a connection's
# previous rules after another process changed them (policy/cache.py PolicyCache).
AIRLOCK_POLICY_CACHE_SECONDS = float(env("AIRLOCK_POLICY_CACHE_SECONDS", "5"))

# Masking by value (gateway/secretvalues.py): each connection's credential lists and watches
# Secrets and their values are masked wherever they appear.  A request waits up to SYNC_SECONDS
# for the first list, and is refused (503) when the values are unknown, older than
# MAX_STALE_SECONDS, or larger than MAX_BYTES (bytes of values; ~65 bytes of memory each).  "off" turns masking by value off (then a Secret
# value copied elsewhere is masked only where a detector sees it).
AIRLOCK_SECRET_VALUE_MASKING = env("AIRLOCK_SECRET_VALUE_MASKING", "on")
if AIRLOCK_SECRET_VALUE_MASKING not in ("on", "off"):
    raise ImproperlyConfigured('AIRLOCK_SECRET_VALUE_MASKING must be "on" or "off"')
AIRLOCK_SECRET_VALUES_SYNC_SECONDS = float(env("AIRLOCK_SECRET_VALUES_SYNC_SECONDS", "10"))
AIRLOCK_SECRET_VALUES_MAX_STALE_SECONDS = float(env("AIRLOCK_SECRET_VALUES_MAX_STALE_SECONDS", "30"))
AIRLOCK_SECRET_VALUES_MAX_BYTES = int(env("AIRLOCK_SECRET_VALUES_MAX_BYTES", str(4 * 1024 * 1024)))

# The gateway's database calls (runtime/db.py): a pool of this many threads, each with its own
# connection; a request waits at most AIRLOCK_DB_WAIT_SECONDS for one call, then gets a 503 (or
# a cached answer, below).
AIRLOCK_DB_POOL_SIZE = int(env("AIRLOCK_DB_POOL_SIZE", "4"))
AIRLOCK_DB_WAIT_SECONDS = float(env("AIRLOCK_DB_WAIT_SECONDS", "3"))
# A request that can change the cluster (a write, exec, attach, port-forward) waits at most this
# long for its RequestReceived audit event to be committed before it is forwarded, then gets a 503
# (audit/recorder.py).  Longer than a lookup's wait: the one audit writer thread also commits the
# completion events in batches, and under steady load such a commit took over 2 s (make soak).
AIRLOCK_AUDIT_COMMIT_SECONDS = float(env("AIRLOCK_AUDIT_COMMIT_SECONDS", "10"))
# While the database cannot be reached, cached connections, rules and leases are still used for
# this many seconds beyond their usual bound (above); after that, requests get a 503.
AIRLOCK_CACHE_STALE_SECONDS = float(env("AIRLOCK_CACHE_STALE_SECONDS", "60"))

# Audit trail (audit/).  Request/response bodies and exec recordings are stored masked and
# cut at these sizes; `manage.py prune_audit` removes events older than the retention
# (0 keeps everything).  Without a Kubectl-Session header, a pause longer than the gap starts
# a new session.  The recorder queues at most QUEUE_SIZE completion events (then requests
# wait) and writes them in batches of BATCH_SIZE.
AIRLOCK_AUDIT_RETENTION_DAYS = int(env("AIRLOCK_AUDIT_RETENTION_DAYS", "365"))
AIRLOCK_AUDIT_SESSION_GAP_MINUTES = float(env("AIRLOCK_AUDIT_SESSION_GAP_MINUTES", "15"))
AIRLOCK_AUDIT_MAX_BODY_BYTES = int(env("AIRLOCK_AUDIT_MAX_BODY_BYTES", str(64 * 1024)))
AIRLOCK_AUDIT_MAX_RECORDING_BYTES = int(env("AIRLOCK_AUDIT_MAX_RECORDING_BYTES", str(8 * 1024 * 1024)))
AIRLOCK_AUDIT_QUEUE_SIZE = int(env("AIRLOCK_AUDIT_QUEUE_SIZE", "10000"))
AIRLOCK_AUDIT_BATCH_SIZE = int(env("AIRLOCK_AUDIT_BATCH_SIZE", "200"))
# Append-only JSON Lines file of signed chain heads (audit/anchors.py), written by the beat task
# and at gateway shutdown; put it where the database's writers cannot reach (another volume,
# a chattr +a file, a log shipper's input).  Required in production: without it, deleting the
# newest events leaves no trace.
AIRLOCK_AUDIT_ANCHOR_FILE = env("AIRLOCK_AUDIT_ANCHOR_FILE")
if PRODUCTION and not AIRLOCK_AUDIT_ANCHOR_FILE:
    raise ImproperlyConfigured("AIRLOCK_AUDIT_ANCHOR_FILE must be set when AIRLOCK_ENV=production")
# Write-ahead journal of audit events (audit/journal.py): each gateway process appends every
# request to its own file here before forwarding it, and its completion before queueing it for the
# database, so a killed process (SIGKILL, OOM) loses no event: the next start, `manage.py
# recover_audit` or the beat task (every RECOVER_SECONDS, for a directory the worker shares)
# replays dead processes' files and closes their unfinished requests as "gateway crashed".  It
# must outlive the process (in Kubernetes at least an emptyDir, which survives container
# restarts; a volume that outlives the pod to recover after a node loss).  The journal is fsynced
# every SYNC_SECONDS (0: never; then only a machine crash can lose the events not yet in the
# database).  A request with a RequestReceived event and no completion after IN_FLIGHT_MINUTES,
# and not in flight in a live journal, is reported by verify_audit.
AIRLOCK_AUDIT_JOURNAL_DIR = Path(env("AIRLOCK_AUDIT_JOURNAL_DIR", str(VAR_DIR / "audit-journal")))
if PRODUCTION and not env("AIRLOCK_AUDIT_JOURNAL_DIR"):
    raise ImproperlyConfigured("AIRLOCK_AUDIT_JOURNAL_DIR must be set when AIRLOCK_ENV=production")
AIRLOCK_AUDIT_JOURNAL_SYNC_SECONDS = float(env("AIRLOCK_AUDIT_JOURNAL_SYNC_SECONDS", "0.2"))
AIRLOCK_AUDIT_JOURNAL_SEGMENT_BYTES = int(env("AIRLOCK_AUDIT_JOURNAL_SEGMENT_BYTES", str(32 * 1024 * 1024)))
AIRLOCK_AUDIT_IN_FLIGHT_MINUTES = float(env("AIRLOCK_AUDIT_IN_FLIGHT_MINUTES", "60"))
# Where the audit trail's database work runs (audit/writer.py): "process", the pod's one audit
# writer process, which every gateway process of the journal directory sends its events to over
# a Unix socket (WRITER_SOCKET, default writer.sock in the journal directory) and which appends
# them in batches of up to WRITER_BATCH_SIZE; a gateway process starts it when nothing listens
# (WRITER_SPAWN; off when `manage.py audit_writer` runs on its own), and a writer it started
# exits after WRITER_IDLE_SECONDS without a gateway process.  "thread": a thread in each gateway
# process (development's default: the tests' in-memory SQLite is not shared between processes).
AIRLOCK_AUDIT_WRITER = env("AIRLOCK_AUDIT_WRITER", "process" if PRODUCTION else "thread")
if AIRLOCK_AUDIT_WRITER not in ("thread", "process"):
    raise ImproperlyConfigured("AIRLOCK_AUDIT_WRITER must be 'thread' or 'process'")
AIRLOCK_AUDIT_WRITER_SOCKET = env("AIRLOCK_AUDIT_WRITER_SOCKET", "")
AIRLOCK_AUDIT_WRITER_SPAWN = env_bool("AIRLOCK_AUDIT_WRITER_SPAWN", True)
AIRLOCK_AUDIT_WRITER_IDLE_SECONDS = float(env("AIRLOCK_AUDIT_WRITER_IDLE_SECONDS", "30"))
AIRLOCK_AUDIT_WRITER_BATCH_SIZE = int(env("AIRLOCK_AUDIT_WRITER_BATCH_SIZE", "1000"))
# The writer lets events nobody waits on gather up to WRITER_GATHER_MS before it commits them: a
# transaction's fixed CPU (about 0.6 ms: begin, lock and head, COPY, commit) is shared by more of them.
AIRLOCK_AUDIT_WRITER_GATHER_MS = float(env("AIRLOCK_AUDIT_WRITER_GATHER_MS", "25"))
# A gateway process holds the completions it sends the writer up to CHANNEL_GATHER_MS and sends
# them in one write (with the next RequestReceived it waits on, at the latest): the writer wakes
# once per write, not once per request (audit/channel.py).
AIRLOCK_AUDIT_CHANNEL_GATHER_MS = float(env("AIRLOCK_AUDIT_CHANNEL_GATHER_MS", "5"))

# Development-only static bearer tokens for agents ("token=user:group1|group2,...").
# Off unless set; refused in production, where agents present OIDC JWTs (AIRLOCK_OIDC_ISSUERS below).
AIRLOCK_DEV_STATIC_TOKENS = env("AIRLOCK_DEV_STATIC_TOKENS", "")
if PRODUCTION and AIRLOCK_DEV_STATIC_TOKENS:
    raise ImproperlyConfigured("AIRLOCK_DEV_STATIC_TOKENS is development-only")

# Identity providers trusted for agents' bearer JWTs (identity/oidc_config.py).
# AIRLOCK_OIDC_ISSUERS is a JSON list of {"issuer", "audience", and optionally the claims
# mapping and checks: every key, and a tested block per provider (Okta, Entra ID, Google,
# Keycloak, Dex), is in docs/identity-providers.md}; the AIRLOCK_OIDC_ISSUER shorthand adds
# one more.  No issuer: OIDC is off.
try:
    AIRLOCK_OIDC_ISSUERS = json.loads(env("AIRLOCK_OIDC_ISSUERS", "[]"))
except ValueError as exc:
    raise ImproperlyConfigured(f"AIRLOCK_OIDC_ISSUERS is not valid JSON: {exc}") from None
if not isinstance(AIRLOCK_OIDC_ISSUERS, list):
    raise ImproperlyConfigured("AIRLOCK_OIDC_ISSUERS must be a JSON list")
if env("AIRLOCK_OIDC_ISSUER"):
    AIRLOCK_OIDC_ISSUERS.append({
        "issuer": env("AIRLOCK_OIDC_ISSUER"),
        "audience": env_list("AIRLOCK_OIDC_AUDIENCE"),
        "username_claim": env("AIRLOCK_OIDC_USERNAME_CLAIM", "sub"),
        "username_prefix": env("AIRLOCK_OIDC_USERNAME_PREFIX", ""),
        "groups_claim": env("AIRLOCK_OIDC_GROUPS_CLAIM", "groups"),
        "groups_prefix": env("AIRLOCK_OIDC_GROUPS_PREFIX", ""),
    })
AIRLOCK_OIDC_LEEWAY = float(env("AIRLOCK_OIDC_LEEWAY", "30"))
AIRLOCK_OIDC_CA_FILE = env("AIRLOCK_OIDC_CA_FILE")

# Every log record of the process drops request queries and proxied paths
# (airlock/logs.py): they carry exec commands, selectors and workload URLs.
LOGGING_CONFIG = "airlock.logs.configure"
# Error pages and reports hide credential inputs and settings, DEBUG or not.
DEFAULT_EXCEPTION_REPORTER_FILTER = "airlock.logs.ErrorReportFilter"
# One JSON object per line (airlock.logs.JsonFormatter: python-json-logger, with the request's audit id,
# identity, connection and decision), or plain text lines.
AIRLOCK_LOG_FORMAT = env("AIRLOCK_LOG_FORMAT", "json" if PRODUCTION else "text")
if AIRLOCK_LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured('AIRLOCK_LOG_FORMAT must be "json" or "text"')
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "airlock.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler",
                             "formatter": "json" if AIRLOCK_LOG_FORMAT == "json" else "plain"}},
    "root": {"handlers": ["console"], "level": env("AIRLOCK_LOG_LEVEL", "INFO")},
    # httpx logs every request URL at INFO: noise (and redacted like every record, above). The mcp SDK
    # (the MCP endpoint) logs each session id and each tool error at INFO: the audit trail has them.
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}, "httpx2": {"level": "WARNING"},
                "mcp": {"level": "WARNING"}},
}

# Prometheus metrics (runtime/metrics.py) at /metrics on their own listener, never the gateway's port;
# empty: no listener.  0 binds any free port (logged).  Several worker processes need
# PROMETHEUS_MULTIPROC_DIR (docs/configuration.md).
_metrics_port = env("AIRLOCK_METRICS_PORT", "9090" if PRODUCTION else "")
try:
    AIRLOCK_METRICS_PORT = int(_metrics_port) if _metrics_port else None
except ValueError:
    raise ImproperlyConfigured(f"AIRLOCK_METRICS_PORT must be a port number, not {_metrics_port!r}") from None
if AIRLOCK_METRICS_PORT is not None and not 0 <= AIRLOCK_METRICS_PORT <= 65535:
    raise ImproperlyConfigured("AIRLOCK_METRICS_PORT must be between 0 and 65535")
AIRLOCK_METRICS_ADDRESS = env("AIRLOCK_METRICS_ADDRESS", "0.0.0.0" if PRODUCTION else "127.0.0.1")

# /readyz (airlock/health.py): what readiness needs of the connections' clusters ("one" reachable,
# "every" one, or "off"), how long each cluster's answer is reused, and how long completion events
# may wait for the audit writer before the process counts as not ready.
AIRLOCK_READY_UPSTREAMS = env("AIRLOCK_READY_UPSTREAMS", "one")
if AIRLOCK_READY_UPSTREAMS not in ("one", "every", "off"):
    raise ImproperlyConfigured('AIRLOCK_READY_UPSTREAMS must be "one", "every" or "off"')
AIRLOCK_READY_UPSTREAM_CACHE_SECONDS = float(env("AIRLOCK_READY_UPSTREAM_CACHE_SECONDS", "10"))
AIRLOCK_READY_AUDIT_STALL_SECONDS = float(env("AIRLOCK_READY_AUDIT_STALL_SECONDS", "30"))

if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# Agents reach connection <name> at <gateway>/k8s/<name>/.
AIRLOCK_GATEWAY_PREFIX = "/k8s/"

# Approvals and leases (approvals/): these settings are their only definition.
# How long a held request waits for a decision before a 403 naming the review.
AIRLOCK_REVIEW_HOLD_SECONDS = float(env("AIRLOCK_REVIEW_HOLD_SECONDS", "120"))
# How often a held request re-reads its review when no channel-layer message came.
AIRLOCK_REVIEW_POLL_SECONDS = float(env("AIRLOCK_REVIEW_POLL_SECONDS", "2"))
# A review nobody decided expires after this long.
AIRLOCK_REVIEW_PENDING_SECONDS = int(env("AIRLOCK_REVIEW_PENDING_SECONDS", "3600"))
# An approved "once" review must be used by a retry within this long.
AIRLOCK_REVIEW_APPROVAL_SECONDS = int(env("AIRLOCK_REVIEW_APPROVAL_SECONDS", "900"))
AIRLOCK_REVIEW_DEFAULT_WINDOW_SECONDS = int(env("AIRLOCK_REVIEW_DEFAULT_WINDOW_SECONDS", "900"))
AIRLOCK_REVIEW_MAX_WINDOW_SECONDS = int(env("AIRLOCK_REVIEW_MAX_WINDOW_SECONDS", str(8 * 3600)))
AIRLOCK_LEASE_MAX_SECONDS = int(env("AIRLOCK_LEASE_MAX_SECONDS", str(8 * 3600)))
# Upper bound on how long another process may use a lease after it was revoked
# when the channel-layer broadcast did not reach it.
AIRLOCK_LEASE_CACHE_SECONDS = float(env("AIRLOCK_LEASE_CACHE_SECONDS", "5"))
# How often each serving process reads the leases of its live streams (watch, exec...) from the
# database and cuts those that ended: the bound on a revoked lease's streams when the
# airlock.leases broadcast did not reach the process (approvals.live).
AIRLOCK_LEASE_RECHECK_SECONDS = float(env("AIRLOCK_LEASE_RECHECK_SECONDS", "5"))
if not AIRLOCK_LEASE_RECHECK_SECONDS > 0:
    raise ImproperlyConfigured("AIRLOCK_LEASE_RECHECK_SECONDS must be a positive number of seconds")
# Public base URL of the dashboard (links in messages and notifications); empty: links in what
# an agent is told use the address it reached the gateway at, notifications use paths only.
AIRLOCK_DASHBOARD_URL = env("AIRLOCK_DASHBOARD_URL", "")
# Webhooks for new and decided reviews and lease changes: a JSON list of
# {"url": ..., "format": "slack" | "json"}.  The URLs are credentials.
try:
    AIRLOCK_NOTIFY_WEBHOOKS = json.loads(env("AIRLOCK_NOTIFY_WEBHOOKS", "[]"))
except ValueError as exc:
    raise ImproperlyConfigured(f"AIRLOCK_NOTIFY_WEBHOOKS is not valid JSON: {exc.msg}") from None
if not isinstance(AIRLOCK_NOTIFY_WEBHOOKS, list):
    raise ImproperlyConfigured("AIRLOCK_NOTIFY_WEBHOOKS must be a JSON list")
AIRLOCK_NOTIFY_TIMEOUT_SECONDS = float(env("AIRLOCK_NOTIFY_TIMEOUT_SECONDS", "10"))
# Every channel-layer (Redis) call of a held request or a notification gives up after this
# long; held requests then rely on their database poll (AIRLOCK_REVIEW_POLL_SECONDS).
AIRLOCK_CHANNEL_LAYER_TIMEOUT_SECONDS = float(env("AIRLOCK_CHANNEL_LAYER_TIMEOUT_SECONDS", "2"))

# Agent budgets (policy.budgets, gateway.budgets): the counters every gateway process shares (Redis;
# without one, each process counts alone), how long a count may take before a budgeted request is
# refused (503) and loop detection skipped, how long a dead process's concurrency slot lives, the
# longest wait a 429 asks clients to sleep through (Retry-After), and loop detection's default.
AIRLOCK_BUDGET_REDIS_URL = env("AIRLOCK_BUDGET_REDIS_URL", REDIS_URL or "")
AIRLOCK_BUDGET_STORE_TIMEOUT_SECONDS = float(env("AIRLOCK_BUDGET_STORE_TIMEOUT_SECONDS", "0.5"))
AIRLOCK_BUDGET_SLOT_SECONDS = float(env("AIRLOCK_BUDGET_SLOT_SECONDS", "60"))
AIRLOCK_BUDGET_RETRY_AFTER_MAX_SECONDS = int(env("AIRLOCK_BUDGET_RETRY_AFTER_MAX_SECONDS", "60"))
AIRLOCK_BUDGET_LOOP = env("AIRLOCK_BUDGET_LOOP", "10/minute")
try:
    from policy.budgets import loop_setting

    loop_setting(AIRLOCK_BUDGET_LOOP)
except ValueError as exc:
    raise ImproperlyConfigured(f"AIRLOCK_BUDGET_LOOP: {exc}") from None

# Reviewer dashboard: people sign in with OIDC (mozilla-django-oidc, authorization-code flow
# with PKCE) when a client id is set, or with a Django account.  Members of the IdP groups in
# AIRLOCK_DASHBOARD_OIDC_REVIEWER_GROUPS get the "reviewers" role at each OIDC login.
LOGIN_URL = "approvals:login"
LOGIN_REDIRECT_URL = "approvals:queue"
LOGOUT_REDIRECT_URL = "approvals:login"
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
OIDC_RP_CLIENT_ID = env("AIRLOCK_DASHBOARD_OIDC_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = env("AIRLOCK_DASHBOARD_OIDC_CLIENT_SECRET", "")
OIDC_OP_ISSUER = env("AIRLOCK_DASHBOARD_OIDC_ISSUER", "")
OIDC_OP_AUTHORIZATION_ENDPOINT = env("AIRLOCK_DASHBOARD_OIDC_AUTHORIZATION_ENDPOINT", "")
OIDC_OP_TOKEN_ENDPOINT = env("AIRLOCK_DASHBOARD_OIDC_TOKEN_ENDPOINT", "")
OIDC_OP_USER_ENDPOINT = env("AIRLOCK_DASHBOARD_OIDC_USERINFO_ENDPOINT", "")
OIDC_OP_JWKS_ENDPOINT = env("AIRLOCK_DASHBOARD_OIDC_JWKS_ENDPOINT", "")
OIDC_RP_SIGN_ALGO = env("AIRLOCK_DASHBOARD_OIDC_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = env("AIRLOCK_DASHBOARD_OIDC_SCOPES", "openid email")
OIDC_USE_PKCE = True
OIDC_AUTHENTICATION_CALLBACK_URL = "approvals:oidc-callback"
AIRLOCK_DASHBOARD_OIDC_GROUPS_CLAIM = env("AIRLOCK_DASHBOARD_OIDC_GROUPS_CLAIM", "groups")
AIRLOCK_DASHBOARD_OIDC_REVIEWER_GROUPS = env_list("AIRLOCK_DASHBOARD_OIDC_REVIEWER_GROUPS", "airlock-reviewers")
if OIDC_RP_CLIENT_ID:
    missing = [
        name for name, value in (
            ("AIRLOCK_DASHBOARD_OIDC_ISSUER", OIDC_OP_ISSUER),
            ("AIRLOCK_DASHBOARD_OIDC_AUTHORIZATION_ENDPOINT", OIDC_OP_AUTHORIZATION_ENDPOINT),
            ("AIRLOCK_DASHBOARD_OIDC_TOKEN_ENDPOINT", OIDC_OP_TOKEN_ENDPOINT),
            ("AIRLOCK_DASHBOARD_OIDC_USERINFO_ENDPOINT", OIDC_OP_USER_ENDPOINT),
            ("AIRLOCK_DASHBOARD_OIDC_JWKS_ENDPOINT", OIDC_OP_JWKS_ENDPOINT),
        ) if not value
    ]
    if missing:
        raise ImproperlyConfigured("dashboard OIDC needs " + ", ".join(missing))
    AUTHENTICATION_BACKENDS.insert(0, "approvals.auth.ReviewerOIDCBackend")
