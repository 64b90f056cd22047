"""Three gateway processes behind HAProxy with a Celery worker and beat (tests/scaleout_rig.py).

PostgreSQL always, also when the rest of the suite runs on SQLite, as in tests/e2e_resilience: the
server of DATABASE_URL when that is PostgreSQL (CI), else AIRLOCK_TEST_POSTGRES_URL (default
postgres://postgres@127.0.0.1:5432/airlock).  The rig's database is copied from a template migrated
once, named after that URL's database and this process, and dropped afterwards.
"""

import pytest

from tests.scaleout_rig import running

SETTINGS = {
    # beat runs the sweep (not the gateways, as in production); it and the anchor come every 2 s here
    # (production: 15 and 60), so the worker's work shows within the test.
    "AIRLOCK_APPROVALS_SWEEP_IN_GATEWAY": "false",
    "AIRLOCK_APPROVALS_SWEEP_SECONDS": "2",
    "AIRLOCK_AUDIT_ANCHOR_SECONDS": "2",
    "AIRLOCK_REVIEW_HOLD_SECONDS": "60",
    "AIRLOCK_DEBUG": "false",
}


@pytest.fixture(scope="module")
def scaleout(tmp_path_factory):
    with running(tmp_path_factory, "scale", SETTINGS) as rig:
        yield rig
