"""One gateway serving from two worker processes (``uvicorn --workers 2``, the production command of
docker-compose.yml), on PostgreSQL and Redis, in front of kubesim: tests/scaleout_rig.py's ScaleOut
with one replica of two workers, no HAProxy and no Celery (the gateway sweeps leases itself).

The caches of rules, connections and leases are kept for ten minutes here (production: 5 s), so
only the cross-process announcement (runtime.invalidation) can make a worker see a change made
elsewhere within the tests' seconds.  PostgreSQL and Redis as in tests/e2e_scaleout.
"""

import pytest

from tests.rig_procs import free_port
from tests.scaleout_rig import running

WORKERS = 2
SETTINGS = {
    "AIRLOCK_POLICY_CACHE_SECONDS": "600",
    "AIRLOCK_CONNECTION_REVALIDATE_SECONDS": "600",
    "AIRLOCK_LEASE_CACHE_SECONDS": "600",
    "AIRLOCK_REVIEW_HOLD_SECONDS": "60",
    "AIRLOCK_DEBUG": "false",
    # One metrics listener for the pod: whichever worker binds it serves every worker's values.
    "AIRLOCK_METRICS_PORT": str(free_port()),
    "AIRLOCK_METRICS_ADDRESS": "127.0.0.1",
}


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    with running(tmp_path_factory, "workers", SETTINGS, replicas=("gateway",), workers=WORKERS, celery=False) as rig:
        yield rig
