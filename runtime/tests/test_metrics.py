"""runtime.metrics: several processes counted as one (prometheus-client's multiprocess mode), a directory
cleaned of processes that are gone, and a listener that serves /metrics only."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from runtime import metrics

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import sys
import time
from runtime import metrics
metrics.authentication_failed("expired")
metrics.AUDIT_QUEUE.inc(int(sys.argv[1]))
print("done", flush=True)
sys.stdin.read()  # stay alive until told: a live process's gauge counts
"""

SCRAPE = """
from runtime import metrics
print(metrics.render(metrics.exposition_registry()).decode())
"""


def run(code, directory, *args, **kwargs):
    env = {**os.environ, metrics.MULTIPROC_ENV: str(directory), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, **kwargs)


def value(text, name, **labels):
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_the_values_of_every_worker_process_are_served_as_one(tmp_path):
    directory = tmp_path / "metrics"
    workers = [run(WORKER, directory, str(n)) for n in (2, 3)]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "done"
        scrape = run(SCRAPE, directory)
        text = scrape.communicate(timeout=60)[0]
        assert value(text, "airlock_authentication_failures_total", reason="expired") == 2
        assert value(text, "airlock_audit_queue_depth") == 5
    finally:
        for worker in workers:
            worker.communicate("", timeout=60)
    # Both workers are gone: the next process to start removes their files.
    scrape = run(SCRAPE, directory)
    text = scrape.communicate(timeout=60)[0]
    assert value(text, "airlock_authentication_failures_total", reason="expired") == 0
    assert value(text, "airlock_audit_queue_depth") == 0


def test_files_of_dead_processes_and_this_process_are_removed_at_start(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    alive = os.getppid()
    for name in (f"counter_{dead_pid}.db", f"gauge_livesum_{alive}.db", "counter_4242.db", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    removed = metrics.prepare_multiprocess_dir(str(tmp_path), pid=4242)
    assert sorted(removed) == sorted([f"counter_{dead_pid}.db", "counter_4242.db"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"gauge_livesum_{alive}.db", "notes.txt"])


def test_the_listener_serves_metrics_only_and_a_second_process_waits_for_the_port():
    first = metrics.MetricsServer("127.0.0.1", 0)
    first.start()
    try:
        base = f"http://127.0.0.1:{first.port}"
        answer = httpx.get(base + "/metrics")
        assert answer.status_code == 200 and "airlock_requests_total" in answer.text
        assert httpx.get(base + "/").status_code == 404
        assert httpx.post(base + "/metrics").status_code == 405
        second = metrics.MetricsServer("127.0.0.1", first.port, retry_seconds=0.05)
        second.start()  # the port is taken: it retries in the background
        assert second.port is None
    finally:
        first.stop()
    try:
        for _ in range(400):
            if second.port is not None:
                break
            time.sleep(0.025)
        assert second.port == first.port
        assert httpx.get(f"http://127.0.0.1:{second.port}/metrics").status_code == 200
    finally:
        second.stop()


def samples(registry) -> dict:
    """Every sample's value by (name, labels), the creation times left out (they differ by metric)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples if not s.name.endswith("_created")}


def test_children_record_what_prometheus_client_itself_records():
    from prometheus_client import CollectorRegistry, Counter, Histogram

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histograms = [Histogram("t_seconds", "t", ["a"], buckets=metrics.LATENCY_BUCKETS, registry=r) for r in (ours, theirs)]
    counters = [Counter("t_events", "t", ["a", "b"], registry=r) for r in (ours, theirs)]
    observe, count = metrics.Children.observing(histograms[0]), metrics.Children.counting(counters[0])
    amounts = [0.0, 0.0004, 0.0005, 0.00051, 0.001, 0.003, 0.025, 0.7, 1, 2.5, 59.9, 60, 61, 1e9, float("inf")]
    for n, amount in enumerate(amounts):
        label = "x" if n % 3 else "y"
        observe(label)(amount)
        histograms[1].labels(label).observe(amount)
        count(label, "z")(n)
        counters[1].labels(label, "z").inc(n)
    assert samples(ours) == samples(theirs)
    assert samples(ours)[("t_seconds_bucket", (("a", "x"), ("le", "0.0005")))] == 2


def test_children_are_made_once_per_label_values_and_are_the_ones_exposed():
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    counter = Counter("t_requests", "t", ["connection"], registry=registry)
    count = metrics.Children.counting(counter)
    assert count("a") is count("a")
    count("a")(1)
    count("b")(2)  # a label value first seen now gets its own child
    count("a")(1)
    assert counter.labels("a")._value.get() == 2 and counter.labels("b")._value.get() == 2
    assert samples(registry)[("t_requests_total", (("connection", "b"),))] == 2


CHILDREN_WORKER = """
import sys
from runtime import metrics
metrics.Children.observing(metrics.UPSTREAM_SECONDS)("c-mp", "get")(0.003)
metrics.Children.counting(metrics.MASKED)("jwt-mp")(2)
print("done", flush=True)
sys.stdin.read()
"""


def test_children_write_the_files_of_multiprocess_mode(tmp_path):
    directory = tmp_path / "metrics"
    workers = [run(CHILDREN_WORKER, directory) for _ in range(2)]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "done"
        text = run(SCRAPE, directory).communicate(timeout=60)[0]
    finally:
        for worker in workers:
            worker.communicate("", timeout=60)
    assert value(text, "airlock_masking_replacements_total", detector="jwt-mp") == 4
    assert value(text, "airlock_upstream_duration_seconds_bucket", connection="c-mp", verb="get", le="0.0025") == 0
    assert value(text, "airlock_upstream_duration_seconds_bucket", connection="c-mp", verb="get", le="0.005") == 2
    assert value(text, "airlock_upstream_duration_seconds_count", connection="c-mp", verb="get") == 2
    assert value(text, "airlock_upstream_duration_seconds_sum", connection="c-mp", verb="get") == 0.006


FORKING_WORKER = """
import os
import sys
from runtime import metrics
metrics.Children.counting(metrics.MASKED)("jwt-fork")(1)  # this process's file exists before the fork
calls = []
sys.setprofile(lambda frame, event, arg: calls.append(1) if event == "c_call" and arg is os.getpid else None)
metrics.Children.observing(metrics.UPSTREAM_SECONDS)("c-fork", "get")(0.003)
metrics.Children.counting(metrics.MASKED)("jwt-fork")(1)
sys.setprofile(None)
print("getpid calls while recording", len(calls), flush=True)
child = os.fork()
if child == 0:
    metrics.Children.counting(metrics.MASKED)("jwt-fork")(5)  # the child's own file, not its parent's
    os.write(1, f"child {os.getpid()}\\n".encode())  # one write each: parent and child share the pipe
    sys.stdin.read()
    os._exit(0)
os.write(1, f"parent {os.getpid()}\\n".encode())
sys.stdin.read()
os.waitpid(child, 0)
"""


def test_recording_asks_no_process_id_and_a_forked_child_still_writes_its_own_files(tmp_path):
    """prometheus-client's getpid() at every value (a system call, seven per proxied request) is
    replaced by an id kept per process, renewed in a forked child."""
    directory = tmp_path / "metrics"
    worker = run(FORKING_WORKER, directory)
    try:
        assert worker.stdout.readline().strip() == "getpid calls while recording 0"
        lines, pids = [], {}
        while pids.keys() != {"child", "parent"} and len(lines) < 10:
            lines.append(worker.stdout.readline())
            words = lines[-1].split()
            if len(words) == 2 and words[0] in ("child", "parent"):
                pids[words[0]] = words[1]
        assert pids.keys() == {"child", "parent"}, lines
        text = run(SCRAPE, directory).communicate(timeout=60)[0]
    finally:
        worker.communicate("", timeout=60)
    assert value(text, "airlock_masking_replacements_total", detector="jwt-fork") == 7
    assert value(text, "airlock_upstream_duration_seconds_count", connection="c-fork", verb="get") == 1
    files = {path.name for path in directory.iterdir()}
    assert f"counter_{pids['child']}.db" in files and f"counter_{pids['parent']}.db" in files
