# Airlock's container image: the gateway, the Celery worker and beat, and `manage.py` all run from it.
# tests/deploy/test_dockerfile.py checks the stages, the user, what the last stage may contain and
# .dockerignore; docker-compose.yml and deploy/kubernetes/ run it.
#
# The base is pinned by version tag and by the multi-platform index digest that docker-library's
# repo-info records for that tag (repos/python/remote/3.11.16-slim-bookworm.md); to move to a newer
# patch release, change both together.
ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f

# --- build: the virtualenv with the runtime requirements, and the source -------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# A virtualenv without pip of its own: the base image's pip installs into it, so the runtime stage
# carries no installer.  Wheels only: every runtime requirement publishes wheels for CPython 3.11
# on linux amd64 and arm64, so no compiler is needed here either (a missing wheel fails the build
# instead of compiling).
RUN python -m venv --without-pip /opt/airlock
COPY requirements.txt /tmp/requirements.txt
RUN pip --python /opt/airlock/bin/python install --only-binary=:all: -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
# The build context is the source without tests, benchmarks, local state or credentials (.dockerignore).
COPY . /app
RUN python -m compileall -q /app

# --- runtime ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/airlock/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=airlock.settings \
    AIRLOCK_VAR_DIR=/tmp/airlock \
    PROMETHEUS_MULTIPROC_DIR=/tmp/airlock-metrics
# An unprivileged user with a fixed id (Kubernetes' runAsUser names it); it owns nothing in the
# image, so the code and the virtualenv are read-only to the processes that run them.  Static files
# are served from the source by airlock.asgi (ASGIStaticFilesHandler): no collectstatic.
RUN groupadd --system --gid 10001 airlock \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin airlock
# The only places it may write: the audit journal and anchor directories (docker-compose.yml's named
# volumes take their owner from these; Kubernetes mounts emptyDirs there) and /tmp.
RUN install -d -o 10001 -g 10001 -m 0750 /var/lib/airlock-journal /var/lib/airlock-anchors
COPY --from=build /opt/airlock /opt/airlock
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
# 8443: the gateway, dashboard and admin (TLS), /livez and /readyz; 9090: Prometheus metrics (plain HTTP,
# /metrics only: restrict who reaches it). Metric values of every worker process go to
# PROMETHEUS_MULTIPROC_DIR (runtime/metrics.py cleans it of processes that are gone).
EXPOSE 8443 9090
# The gateway answers GET /livez on its own port; the worker and beat containers turn this off
# (docker-compose.yml; Kubernetes uses its own probes).  No curl in the image: the check is Python.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py"]
# Two worker processes (one per core; docs/configuration.md "Server and worker processes").
CMD ["uvicorn", "airlock.asgi:application", "--host=0.0.0.0", "--port=8443", \
     "--ssl-certfile=/run/secrets/gateway.crt", "--ssl-keyfile=/run/secrets/gateway.key", "--workers=2", \
     "--loop=uvloop", "--http=airlock.server:HttpToolsProtocol", "--ws=wsproto", \
     "--timeout-graceful-shutdown=30", "--no-access-log", "--no-proxy-headers", "--no-server-header"]
