"""Three gateway processes behind HAProxy with a Celery worker and beat (tests/scaleout_rig.py).

PostgreSQL always, also when the rest of the suite runs on SQLite, as in tests/e2e_resilience: the
server of DATABASE_URL when that is PostgreSQL (CI), else AIRLOCK_TEST_POSTGRES_URL (default
postgres://postgres@127.0.0.1:5432/airlock).  The rig's database is copied from a template migrated
once, named after that URL's database and this process, and dropped afterwards.
"""

import pytest

from kubesim.testing import start_kubesim
from tests.resilience_rig import Postgres, postgres_url
from tests.scaleout_rig import ScaleOut

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
    postgres = Postgres(postgres_url())
    postgres.prefix = f"{postgres.config['NAME']}_scale_{postgres.prefix.rsplit('_', 1)[-1]}"
    postgres.template = f"{postgres.prefix}_t"
    postgres.create_template()
    directory = tmp_path_factory.mktemp("scaleout")
    sim = start_kubesim(directory / "kubesim")
    rig = None
    try:
        rig = ScaleOut(directory, postgres, sim, SETTINGS)
        yield rig.start()
    finally:
        if rig is not None:
            rig.stop()
            print(rig.logs())  # shown by pytest when a test failed
        sim.stop()
        postgres.drop(postgres.template)
