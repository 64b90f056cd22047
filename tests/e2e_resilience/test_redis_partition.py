"""Issue 12, finding 4: a partitioned Redis (packets dropped) stalls nothing.

The gateway process reaches Redis (channel layer and Celery broker) only through a TCP proxy the
test partitions; every Redis call there would wait about 5 s for its socket timeout.  Reads go
to the database on every request (no cache interval), so they would queue behind anything that
holds a database thread.  While Redis stays partitioned: reads answer, a review is opened for a
held delete, a reviewer's approval returns, and the held delete is released by the database poll.
"""

import json
import time

PODS = "/k8s/kubesim/api/v1/namespaces/default/pods"
QUICK = 3.0  # seconds: well below one Redis socket timeout


def test_a_partitioned_redis_delays_no_request(gateway_process, kubectl):
    gateway = gateway_process
    gateway.start(
        redis=True, AIRLOCK_CONNECTION_REVALIDATE_SECONDS="0", AIRLOCK_POLICY_CACHE_SECONDS="0",
        AIRLOCK_REVIEW_POLL_SECONDS="1", AIRLOCK_REVIEW_HOLD_SECONDS="60",
        AIRLOCK_NOTIFY_WEBHOOKS=json.dumps([{"url": "http://127.0.0.1:9/hook", "format": "json"}]),
    )
    agent = gateway.client(timeout=QUICK)  # a stalled read fails the test with httpx.ReadTimeout
    reviewer = gateway.reviewer(timeout=QUICK)
    assert agent.get(PODS).status_code == 200

    gateway.redis_proxy.partition()
    held = kubectl.popen("delete", "deployment", "web", "-n", "shop", "--wait=false",
                         kubeconfig=gateway.kubeconfig())
    deadline = time.monotonic() + 30
    while not (pending := reviewer.get("/reviews/").json()):
        assert held.poll() is None, held.communicate()
        assert time.monotonic() < deadline, "the held delete never became a review"
        assert agent.get(PODS).status_code == 200
        time.sleep(0.1)
    for _ in range(20):  # while the review's notifications are being sent
        assert agent.get(PODS).status_code == 200
        time.sleep(0.05)

    approved = reviewer.post(f"/reviews/{pending[0]['id']}/approve/", json={"reason": "Redis is away"})
    assert approved.status_code == 200, approved.text
    assert agent.get(PODS).status_code == 200
    out, err = held.communicate(timeout=15)  # released by the database poll: Redis is still partitioned
    assert held.returncode == 0, err
    assert 'deployment.apps "web" deleted' in out
    events = [event["kind"] for event in reviewer.get(f"/reviews/{pending[0]['id']}/").json()["events"]]
    assert events == ["requested", "approved", "used"]
