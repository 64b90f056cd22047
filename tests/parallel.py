"""pytest plugin (``-p tests.parallel`` in pytest.ini): what each pytest-xdist worker must not share.

``make test`` runs the suite on pytest-xdist workers (``-n``, Makefile).  pytest-django already gives each
worker its own test database (``test_<name>_gw0``, ``_gw1``, ...); this gives each its own Redis database:
worker N uses REDIS_URL's database + N (modulo 16), so one worker's channel-layer groups, broker queues and
the resilience rig's FLUSHDB (tests/resilience_rig.py) never reach another's.  It runs when pytest imports
it, before pytest-django loads the settings, so the settings (channel layer, Celery) and every subprocess
that inherits the environment see the worker's database.

Without xdist (or on the controller) nothing changes.
"""

import os
from urllib.parse import urlsplit, urlunsplit

REDIS_DATABASES = 16  # redis.conf's default "databases"


def worker_index() -> int | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... set by xdist before it configures
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def worker_redis_url(url: str, index: int) -> str:
    """``url`` with its database number moved on by ``index`` (no number means database 0)."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    base = int(path) if path.isdigit() else 0
    return urlunsplit(parts._replace(path=f"/{(base + index) % REDIS_DATABASES}"))


_index = worker_index()
if _index is not None and os.environ.get("REDIS_URL"):
    os.environ["REDIS_URL"] = worker_redis_url(os.environ["REDIS_URL"], _index)


# Tests that must run on one worker, one after another, because they share what a session fixture starts
# (tests/e2e_resilience: a rig of two gateway processes, PostgreSQL and Redis, per worker).
SHARED_DIRECTORIES = ("tests/e2e_resilience/",)


def work_unit(nodeid: str) -> str:
    """A test's unit of work under ``--dist loadfile``: its directory in SHARED_DIRECTORIES, else its file.

    Whole files: module-scoped fixtures (a migrated database, a gateway process) start once, and the tests
    of one file that share a fixed resource (test_two_gateways.py's Redis database 14) never run at the
    same time on two workers.
    """
    path = nodeid.split("::", 1)[0]
    return next((directory for directory in SHARED_DIRECTORIES if path.startswith(directory)), path)


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with :func:`work_unit` as the unit (xdist's loadgroup marks do not survive
    pytest 9's node ids)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return Scheduling(config, log)
