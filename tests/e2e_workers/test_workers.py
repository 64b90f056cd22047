"""Issue 16, item 1: one gateway, several worker processes, behaving as one.

The gateway runs as production runs it (``uvicorn --workers 2``, tests/e2e_workers/conftest.py) on
PostgreSQL and Redis.  Each test pins clients to a given worker (tests/rig_procs.Workers tells which
worker holds a connection) and shows:

* a rule or a connection changed by another process (``manage.py shell``) is obeyed by every
  worker's next request, though each cached the old one for ten minutes (runtime.invalidation);
* a request held on one worker, approved through the other (REST API), is let through once;
* a lease revoked through one worker cuts the watches and exec sessions on every worker;
* one metrics port serves the sum of both workers' counts (prometheus-client's multiprocess files);
* SIGTERM to the supervisor drains every worker (its watch ends with a Status) and the chain is anchored;

and, for the last two, under a small load spread over both workers: every answer as expected, one
audit completion per request, and ``manage.py verify_audit`` passing.
"""

import json
import time
from contextlib import ExitStack

import httpx

from tests.resilience_rig import manage
from tests.scaleout_load import _admin_create, assert_served_and_audited, hold_open, lease_cut, run_with_load

SHOP = "/api/v1/namespaces/shop"
WAIT = 5.0  # seconds for an announcement to reach the other workers (the caches keep entries 600 s)

ADD_RULE = """
from connections.models import Connection
from policy.models import Rule
Rule.objects.create(connection=Connection.objects.get(name="kubesim"), order=1, name="deny-invalidation-probe",
                    effect="deny", groups=["agents"], verbs=["get"], api_groups=[""], resources=["configmaps"],
                    namespaces=["shop"], names=["invalidation-probe"])
"""
DELETE_RULE = """
from policy.models import Rule
Rule.objects.filter(name="deny-invalidation-probe").delete()
"""
ADD_CONNECTION = """
import os
from pathlib import Path
from connections.models import Connection
from policy.models import Rule
c = Connection(name="kubesim-late", server_url=os.environ["SEED_URL"], ca_bundle=Path(os.environ["SEED_CA"]).read_text())
c.bearer_token = os.environ["SEED_TOKEN"]
c.full_clean()
c.save()
Rule.objects.create(connection=c, order=10, name="agents-read", effect="allow", groups=["agents"], verbs=["get", "list"],
                    api_groups=[""], resources=["configmaps"], namespaces=["*"], names=["*"])
"""
DISABLE_CONNECTION = """
from connections.models import Connection
c = Connection.objects.get(name="kubesim-late")
c.enabled = False
c.save()
"""


def shell(rig, code: str) -> None:
    """Run ``code`` in ``manage.py shell``: a process of its own, neither worker."""
    manage({"DATABASE_URL": rig.postgres.url(rig.database), "REDIS_URL": rig.env["REDIS_URL"],
            "SEED_URL": rig.kubesim.url, "SEED_CA": str(rig.kubesim.ca_file), "SEED_TOKEN": rig.kubesim.admin_token},
           "shell", input=code)


def one_client_per_worker(rig, stack: ExitStack) -> dict:
    """A keep-alive agent client on each worker: {worker: client}."""
    clients = {}
    for name in rig.balancer.servers:
        client, _ = rig.pinned(rig.agent, lambda c: c.get(f"/k8s/kubesim{SHOP}/configmaps?limit=1"), want=name,
                               attempts=60)
        stack.callback(client.close)
        clients[name] = client
    return clients


def answers(clients: dict, path: str, want: int) -> dict:
    """Each worker's answer to GET ``path``, asked until it is ``want`` or WAIT has passed."""
    deadline = time.monotonic() + WAIT
    seen = {}
    for name, client in clients.items():
        while True:
            seen[name] = client.get(path).status_code
            if seen[name] == want or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    return seen


def test_a_rule_changed_in_another_process_is_obeyed_by_every_worker_at_once(workers):
    _admin_create(workers, f"{SHOP}/configmaps", {"metadata": {"name": "invalidation-probe"}})
    path = f"/k8s/kubesim{SHOP}/configmaps/invalidation-probe"
    with ExitStack() as stack:
        clients = one_client_per_worker(workers, stack)
        assert answers(clients, path, 200) == {name: 200 for name in clients}  # each worker has the rules cached
        shell(workers, ADD_RULE)
        assert answers(clients, path, 403) == {name: 403 for name in clients}
        shell(workers, DELETE_RULE)
        assert answers(clients, path, 200) == {name: 200 for name in clients}


def test_a_connection_added_then_disabled_in_another_process_is_seen_by_every_worker_at_once(workers):
    path = f"/k8s/kubesim-late{SHOP}/configmaps?limit=1"
    with ExitStack() as stack:
        clients = one_client_per_worker(workers, stack)
        assert answers(clients, path, 404) == {name: 404 for name in clients}  # "no such connection", cached
        shell(workers, ADD_CONNECTION)
        assert answers(clients, path, 200) == {name: 200 for name in clients}
        shell(workers, DISABLE_CONNECTION)
        assert answers(clients, path, 404) == {name: 404 for name in clients}


def test_a_hold_on_one_worker_approved_through_the_other_is_let_through_once(workers):
    prefix = "workers/hold-open/"
    result, ledger, share = run_with_load(workers, prefix, lambda ledger: hold_open(workers, ledger, 1))
    assert not result["problems"], result
    assert result["approved_on"] != result["held_on"], result
    assert (result["released"], result["retried"], result["forwarded"]) == (200, 403, 1), result
    assert_served_and_audited(workers, prefix, ledger, share)


def test_a_lease_revoked_through_one_worker_ends_streams_on_every_worker(workers):
    prefix = "workers/lease/"
    result, ledger, share = run_with_load(workers, prefix, lambda ledger: lease_cut(workers, ledger))
    assert not result["problems"], result
    assert all(kinds["watch"] >= 1 and kinds["exec"] >= 1 for kinds in result["streams"].values()), result
    opened = sum(sum(kinds.values()) for kinds in result["streams"].values())
    assert result["ended_with_status"] == opened, result
    assert_served_and_audited(workers, prefix, ledger, share)


def test_one_metrics_listener_serves_every_workers_requests(workers):
    with ExitStack() as stack:
        for client in one_client_per_worker(workers, stack).values():
            for _ in range(3):
                assert client.get(f"/k8s/kubesim{SHOP}/configmaps?limit=1").status_code == 200
    port = workers.env["AIRLOCK_METRICS_PORT"]
    deadline = time.monotonic() + WAIT
    while True:
        # Read again each time: a request is counted once its answer has left, so the last one may
        # still be on its way into its worker's file when the client has its answer.
        counted = workers.balancer.connections()  # each worker's own multiprocess file
        served = sum(float(line.rsplit(" ", 1)[1]) for line in
                     httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines()
                     if line.startswith("airlock_requests_total{"))
        if served == sum(counted.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert all(count > 0 for count in counted.values()), counted
    assert served == sum(counted.values()), (served, counted)


def test_sigterm_drains_every_worker_and_each_anchors_the_chain(workers):
    """Last in this module: it stops the gateway.  uvicorn's supervisor passes SIGTERM to each worker,
    which ends its open watch with a Status (airlock.drain) and anchors the chain head as it stops (once
    for both when their last writes are in before either anchors: chain.make_anchor skips a head that
    is already anchored); verify_audit then checks the chain against the anchor file."""
    gateway = workers.gateways[0]
    lines_before = len(workers.anchor_file.read_text().splitlines()) if workers.anchor_file.exists() else 0
    watches = {}
    with ExitStack() as stack:
        for name in workers.balancer.servers:
            client, _ = workers.pinned(lambda: workers.agent(timeout=httpx.Timeout(15.0, read=20.0)),
                                       lambda c: c.get(f"/k8s/kubesim{SHOP}/configmaps?limit=1"), want=name,
                                       attempts=60)
            stack.callback(client.close)
            response = stack.enter_context(client.stream("GET", f"/k8s/kubesim{SHOP}/configmaps?watch=1"))
            assert response.status_code == 200
            watches[name] = response
        gateway.terminate()
        endings = {}
        for name, response in watches.items():
            last = None
            for line in response.iter_lines():
                if line:
                    last = json.loads(line)
            endings[name] = (last or {}).get("type"), (last or {}).get("object", {}).get("message", "")
    assert gateway.wait(40) == 0, gateway.log()[-3000:]
    assert all(kind == "ERROR" and "shutting down" in message for kind, message in endings.values()), endings
    anchors = workers.anchor_file.read_text().splitlines()[lines_before:]
    # Each worker anchors the head at shutdown unless another already anchored it; every line whole.
    assert 1 <= len(anchors) <= len(workers.balancer.servers), anchors
    assert all(json.loads(line)["reason"] == "shutdown" for line in anchors), anchors
    verify = workers.verify_audit()
    assert verify.returncode == 0, verify.stdout + verify.stderr
