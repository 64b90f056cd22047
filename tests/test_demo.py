"""`make demo` end to end: real kubesim, OpenID provider, gateway and kubectl; no PostgreSQL, no Redis."""

import json
import os
import re
import shlex
import signal
import ssl
import stat
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from kubesim import requestlog
from kubesim.auth import credential_fingerprint
from kubesim.testing import Kubectl, PtyProcess, read_until

ROOT = Path(__file__).resolve().parent.parent
READY = "Press Ctrl-C to stop."
DASHBOARD = re.compile(r"Dashboard +(https://127\.0\.0\.1:(\d+))/approvals/")
REVIEWER = re.compile(r"username reviewer, password (\S+)")
METRICS = re.compile(r"Metrics +(http://127\.0\.0\.1:\d+/metrics)")


def demo(state, *args, home):
    """argv and environment of `python -m deploy.demo` without DATABASE_URL, REDIS_URL or KUBECONFIG."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "XDG_CACHE_HOME") and not k.startswith("KUBE")}
    env["HOME"] = str(home)
    argv = [sys.executable, "-m", "deploy.demo", "--dir", str(state), "--port", "0", *args]
    return argv, env


def cluster_token(state):
    return yaml.safe_load((state / "cluster-kubeconfig").read_text())["users"][0]["user"]["token"]


def private(path):
    return stat.S_IMODE(path.stat().st_mode) == 0o600


def wider_than_owner(state):
    """Files not 0600 and directories not 0700 under the demo's directory, with their modes."""
    found = []
    for path in [state, *state.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if not path.is_symlink() and mode != (0o700 if path.is_dir() else 0o600):
            found.append(f"{oct(mode)} {path.relative_to(state)}")
    return found


def test_exit_after_ready_writes_both_kubeconfigs_and_is_idempotent(tmp_path):
    state, home = tmp_path / "demo", tmp_path / "home"
    state.mkdir(mode=0o755)
    (state / "gateway.log").write_text("a log line from a run before the umask\n")
    (state / "gateway.log").chmod(0o644)
    argv, env = demo(state, "--exit-after-ready", home=home)
    first = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert first.returncode == 0, first.stdout + first.stderr

    token = cluster_token(state)
    agent_text = (state / "kubeconfig").read_text()
    assert token not in agent_text
    agent = yaml.safe_load(agent_text)
    assert list(agent["users"][0]["user"]) == ["exec"]  # no token, no client certificate
    url, port = DASHBOARD.search(first.stdout).groups()
    assert agent["clusters"][0]["cluster"]["server"] == f"{url}/k8s/demo"
    assert "/audit/" in first.stdout and "/admin/" in first.stdout
    assert REVIEWER.search(first.stdout)
    assert (state / "airlock.sqlite3").exists()

    secret = (state / "agent-client-secret").read_text().strip()
    for path in ("agent-client-secret", "cluster-kubeconfig", "kubeconfig", "gateway-keys.json", "tls/gateway.key",
                 "airlock.sqlite3", "gateway.log", "kubesim/requests.jsonl"):
        assert private(state / path), path
    assert wider_than_owner(state) == []  # the database, logs, keys, kubesim's state: owner only
    output = first.stdout + first.stderr
    assert secret not in output and token not in output
    assert not list((home / ".cache" / "airlock").glob("*.json"))  # the cached agent token is forgotten

    # Between runs the operator uses manage.py under the demo's environment: changes the policy, and a
    # review is left pending.
    assert "applied preset production-guardrails" in first.stdout
    assert f". {state / 'env'} && python manage.py review list" in first.stdout
    assert "review-deletes" in demo_shell(state, "python manage.py export_rules --connection demo", env)
    demo_shell(state, "python manage.py import_rules --connection demo --replace -", env, stdin=OWN_RULES)
    demo_shell(state, f"python manage.py shell -c {shlex.quote(LEAVE_A_REVIEW_PENDING)}", env)
    assert demo_shell(state, "python manage.py review list", env).split()[1] == "pending"

    again = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Updated connection 'demo'" in again.stdout
    assert REVIEWER.search(again.stdout).group(1) != REVIEWER.search(first.stdout).group(1)
    assert (state / "agent-client-secret").read_text().strip() == secret
    assert "kept the 2 rule(s) of connection 'demo'" in again.stdout and "applied preset" not in again.stdout
    assert "Policy         2 rule(s) kept from an earlier run" in again.stdout
    assert "name: operators-own-rule" in demo_shell(state, "python manage.py export_rules --connection demo", env)
    assert "expired 1 review(s) left pending by an earlier run" in again.stdout
    assert demo_shell(state, "python manage.py review list", env) == "no pending reviews\n"
    assert "left over from an earlier run of the demo" in demo_shell(state, "python manage.py review show 1", env)
    assert wider_than_owner(state) == []


OWN_RULES = """apiVersion: airlock.dev/v1
kind: RuleSet
rules:
  - name: operators-own-rule
    effect: allow
    groups: [agents]
    verbs: [get, list, watch]
    apiGroups: ["*"]
    resources: ["*"]
    namespaces: ["*"]
    names: ["*"]
  - name: operators-discovery
    effect: allow
    groups: [agents]
    verbs: [get]
    nonResourceURLs: ["/api", "/api/*", "/apis", "/apis/*", "/version"]
"""
LEAVE_A_REVIEW_PENDING = (
    "from approvals.models import Review; Review.objects.create(connection='demo', rule_name='r', "
    "principal_subject='a', principal_username='a', method='DELETE', verb='delete', path='/api/v1/x', "
    "description='left pending', exact='e' * 64)"
)


def demo_shell(state, command, env, stdin=None):
    """``command`` run as `make demo-shell` runs it: in a shell with the demo's environment file sourced
    (over a caller's environment that names another database)."""
    result = subprocess.run(["make", "-s", "demo-shell", f"DEMO_DIR={state}"], cwd=ROOT,
                            env={**env, "SHELL": "/bin/sh", "DATABASE_URL": "postgres://elsewhere.invalid/db"},
                            input=f"{command}{' <<EOF' if stdin else ''}\n"
                            + (f"{stdin}EOF\n" if stdin else "") + "exit\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def descendants(pid):
    """Processes whose parent chain leads to ``pid`` (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextmanager
def signed_in(url, ca_file, password):
    """A browser session of the reviewer, logged in with the printed password; and the login response."""
    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=str(ca_file))) as browser:
        browser.get("/admin/login/")
        response = browser.post(
            "/admin/login/?next=/admin/",
            data={"username": "reviewer", "password": password, "next": "/admin/",
                  "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
            headers={"Referer": f"{url}/admin/login/"},
        )
        yield browser, response


def log_in(url, ca_file, password):
    """The reviewer logs in; then the dashboard and the audit replay open."""
    with signed_in(url, ca_file, password) as (browser, response):
        pages = [browser.get(page).status_code for page in ("/approvals/", "/audit/")]
        return response.status_code, response.headers.get("location"), pages


def error_pages(url, ca_file):
    """What an agent sees when it provokes errors: a forged Host on the agent API, an unknown page."""
    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=str(ca_file))) as agent:
        forged = agent.post("/approvals/api/agent/leases/", json={"duration": "\u00b2"},
                            headers={"Host": "attacker.example", "Authorization": "Bearer x"})
        missing = agent.get("/approvals/api/agent/no-such-page/")
        assert agent.get("/static/vendor/htmx.org-2.0.11/htmx.min.js").status_code == 200  # with DEBUG off too
    return [(response.status_code, response.text) for response in (forged, missing)]


def approve_held_exec(url, ca_file, password):
    """The reviewer approves the agent's exec (held by production-guardrails) through the API."""
    with signed_in(url, ca_file, password) as (browser, _):
        deadline = time.monotonic() + 30
        while not (held := [r for r in browser.get("/approvals/api/reviews/").json() if r["subresource"] == "exec"]):
            assert time.monotonic() < deadline, "the exec was not held for review"
            time.sleep(0.2)
        response = browser.post(f"/approvals/api/reviews/{held[0]['id']}/approve/", json={"reason": "demo test"},
                                headers={"X-CSRFToken": browser.cookies["csrftoken"], "Referer": f"{url}/approvals/"})
        assert response.status_code == 200, response.text


def test_kubectl_through_the_gateway_then_ctrl_c_stops_everything(tmp_path):
    state, home = tmp_path / "demo", tmp_path / "home"
    argv, env = demo(state, home=home)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    children = set()
    agent = Kubectl(state / "kubeconfig", home)
    try:
        output = read_until(proc, READY, timeout=90)
        children = descendants(proc.pid)
        assert len(children) >= 3  # kubesim, node (the OpenID provider), uvicorn

        pods = agent("get", "pods", "-A").stdout
        assert "debug-shell" in pods and "web-" in pods
        listed = [r for r in requestlog.read(state / "kubesim" / "requests.jsonl") if r["path"] == "/api/v1/pods"]
        assert listed and all(r["status"] == 200 for r in listed)
        gateway_credential = f"Bearer {credential_fingerprint(cluster_token(state))}"
        for record in requestlog.read(state / "kubesim" / "requests.jsonl"):
            assert requestlog.header(record, "Authorization") == [gateway_credential], record["path"]
            assert record["user"] == "kubesim-admin"

        url = DASHBOARD.search(output).group(1)
        password = REVIEWER.search(output).group(1)
        scraped = httpx.get(METRICS.search(output).group(1), timeout=10)
        assert scraped.status_code == 200 and "airlock_audit_events_committed_total" in scraped.text
        assert httpx.get(f"{url}/readyz", verify=ssl.create_default_context(cafile=str(state / "tls" / "ca.crt")),
                         timeout=10).text == "ok\n"
        assert log_in(url, state / "tls" / "ca.crt", password) == (302, "/admin/", [200, 200])
        assert log_in(url, state / "tls" / "ca.crt", "wrong-" + password)[0] == 200  # the form again
        (forged, forged_page), (missing, missing_page) = error_pages(url, state / "tls" / "ca.crt")
        assert (forged, missing) == (400, 404)
        for page in (forged_page, missing_page):  # Django's DEBUG pages list settings, tracebacks, URL patterns
            assert "Traceback" not in page and "DisallowedHost" not in page and "URLconf" not in page, page[:500]

        word = f"cmdword{uuid.uuid4().hex[:8]}"  # uvicorn logs each WebSocket's target, query included
        executed = agent.popen("exec", "-n", "payments", "debug-shell", "--", "echo", word)
        approve_held_exec(url, state / "tls" / "ca.crt", password)
        read_until(executed, word, timeout=30)
        assert wider_than_owner(state) == []  # with the database's WAL files and the lock held

        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[0].decode()
        assert proc.returncode == 0, output + rest
        assert "demo: stopped." in rest
        assert [pid for pid in children if running(pid)] == []
        secret = (state / "agent-client-secret").read_text().strip()
        assert secret not in output + rest and cluster_token(state) not in output + rest
        log = (state / "gateway.log").read_text()
        assert word not in log
        assert '"WebSocket /k8s/demo/api/v1/namespaces/payments/pods/debug-shell/exec?[redacted]" [accepted]' in log
        anchors = [json.loads(line) for line in (state / "audit-anchors.jsonl").read_text().splitlines()]
        assert anchors and anchors[-1]["reason"] == "shutdown" and anchors[-1]["seq"] > 0  # the chain head, outside the DB
    finally:
        agent.close()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        for pid in children:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        proc.stdout.close()


@contextmanager
def running_demo(tmp_path):
    """`make demo` running (until the block ends): its state directory, dashboard URL, reviewer password
    and the agent's kubectl."""
    state, home = tmp_path / "demo", tmp_path / "home"
    argv, env = demo(state, home=home)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    agent = Kubectl(state / "kubeconfig", home)
    try:
        output = read_until(proc, READY, timeout=90)
        yield state, DASHBOARD.search(output).group(1), REVIEWER.search(output).group(1), agent
    finally:
        agent.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_an_agent_under_production_guardrails_knows_where_it_stands(tmp_path):
    """Issue 13's checklist with real kubectl through the demo (OIDC exec plugin, production-guardrails):
    dry runs answer and change nothing, a held delete names its review's absolute URL at once, identity
    answers are the agent's, impersonation is refused by name, discovery works, exec -it is clean."""
    with running_demo(tmp_path) as (state, url, password, agent):
        admin = Kubectl(state / "cluster-kubeconfig", tmp_path / "admin-home")
        live = yaml.safe_load(admin("get", "deployment", "web", "-n", "shop", "-o", "yaml").stdout)
        replicas = live["spec"]["replicas"]
        for field in ("status", "resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            live.pop(field, None)
            live["metadata"].pop(field, None)
        live["spec"]["replicas"] = replicas + 3
        manifest = yaml.safe_dump(live)

        diff = agent("diff", "-f", "-", input=manifest, check=False)
        assert diff.returncode == 1, diff.stderr  # 1: differences found (an error is > 1)
        assert f"+  replicas: {replicas + 3}" in diff.stdout
        applied = agent("apply", "--dry-run=server", "-f", "-", input=manifest)
        assert "deployment.apps/web configured (server dry run)" in applied.stdout
        assert admin("get", "deployment", "web", "-n", "shop", "-o", "jsonpath={.spec.replicas}").stdout == str(replicas)

        held = agent("delete", "pod", "debug-shell", "-n", "payments", check=False)
        said = one_line(held.stderr)
        assert held.returncode == 1 and "Error from server (Forbidden): airlock: review" in said, said
        assert re.search(rf"is waiting for a reviewer .*{re.escape(url)}/approvals/reviews/\d+/", said), said
        admin("get", "pod", "debug-shell", "-n", "payments")  # nothing was done

        whoami = agent("auth", "whoami").stdout
        assert "demo-agent" in whoami and "system:masters" not in whoami and "kubesim-admin" not in whoami, whoami
        can_delete = agent("auth", "can-i", "delete", "pods", "-n", "payments", check=False)
        assert can_delete.returncode == 1 and can_delete.stdout.startswith("no"), can_delete.stdout
        assert "review-deletes" in can_delete.stdout + can_delete.stderr
        assert agent("auth", "can-i", "get", "pods", "-n", "payments").stdout.startswith("yes")
        as_bob = agent("get", "pods", "--as=bob", check=False)
        assert as_bob.returncode != 0 and "impersonat" in as_bob.stderr.lower(), as_bob.stderr
        assert json.loads(agent("get", "--raw", "/version/").stdout)["major"] == "1"

        shell = PtyProcess(agent.argv(("exec", "-it", "debug-shell", "-n", "payments", "--", "sh", "-c",
                                       "echo ran-$((6*7))"), None), agent.env, rows=24, cols=80)
        try:
            shell.expect(r"waiting for a reviewer")
            assert shell.proc.wait(timeout=30) != 0
        finally:
            shell.close()
        shown = shell.seen.decode(errors="replace")
        assert f"{url}/approvals/reviews/" in one_line(shown) and "Unknown stream" not in shown
        approve_held_exec(url, state / "tls" / "ca.crt", password)
        shell = PtyProcess(agent.argv(("exec", "-it", "debug-shell", "-n", "payments", "--", "sh", "-c",
                                       "echo ran-$((6*7))"), None), agent.env, rows=24, cols=80)
        try:
            shell.expect(r"ran-42")
            assert shell.proc.wait(timeout=30) == 0
        finally:
            shell.close()
        assert "Unknown stream" not in shell.seen.decode(errors="replace")


def test_the_summary_names_the_mcp_endpoint_next_to_the_agent_kubeconfig(tmp_path):
    from deploy import demo

    text = demo.summary(layout=demo.Layout(tmp_path), gateway_url="https://127.0.0.1:8443", password="pw",
                        ca_file=tmp_path / "ca.pem", kubectl=tmp_path / "kubectl", policy="preset",
                        metrics_url="http://127.0.0.1:9100/metrics")
    lines = text.splitlines()
    agent = next(i for i, line in enumerate(lines) if line.strip().startswith("Agent "))
    mcp = next(i for i, line in enumerate(lines) if "Agent over MCP" in line)
    assert mcp == agent + 2 and lines[mcp].endswith("https://127.0.0.1:8443/mcp/demo/")
    assert "audience https://127.0.0.1:8443" in lines[mcp + 1]
