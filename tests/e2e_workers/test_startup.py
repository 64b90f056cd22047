"""A worker that cannot start stops the whole gateway: uvicorn's supervisor does not restart it for ever.

The gateway refuses to serve without its audit journal (airlock.app: ``lifespan.startup.failed``); with
``--workers 2`` each worker runs that lifespan, exits with uvicorn's startup-failure code, and the
supervisor then stops (docs/configuration.md, "Server and worker processes").  SQLite, no Redis.
"""

import subprocess
import sys

from kubesim.certs import generate_tls
from tests.resilience_rig import ROOT, base_env, compose_command
from tests.rig_procs import free_port


def test_a_worker_that_cannot_start_stops_the_gateway(tmp_path):
    not_a_directory = tmp_path / "journal"
    not_a_directory.write_text("a file where the audit journal directory should be")
    tls = generate_tls(tmp_path / "tls")
    env = base_env(AIRLOCK_SQLITE_PATH=str(tmp_path / "db.sqlite3"), AIRLOCK_VAR_DIR=str(tmp_path / "var"),
                   AIRLOCK_AUDIT_JOURNAL_DIR=str(not_a_directory))
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", *compose_command(), "--workers=2", "--host=127.0.0.1",
                                 f"--port={free_port()}", f"--ssl-certfile={tls.cert_file}",
                                 f"--ssl-keyfile={tls.key_file}"],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the gateway kept running without its audit journal:\n{log.read_text()[-3000:]}")
    text = log.read_text(errors="replace")
    assert "airlock could not start" in text, text[-3000:]
    assert "failed to start, stopping the parent process" in text, text[-3000:]
    assert text.count("Started server process") <= 2, text[-3000:]  # no worker was started again
