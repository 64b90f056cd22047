"""An agent learns at once that its request waits for a reviewer, with the review's absolute URL, in a form
real kubectl and the official Python client show; the note never lands on a channel the client did not ask for.

Under production-guardrails writes are answered at once (review.hold: retry) and exec, attach and
port-forward are held open; decisions are made through the approvals service.
"""

import os
import socketserver
import threading

import pytest
import yaml

from approvals import reviews
from approvals.models import Review
from approvals.tests.factories import reviewer
from kubesim.testing import PtyProcess
from tests.e2e_approvals.conftest import wait_for_review

pytestmark = pytest.mark.django_db(transaction=True)


def review_url(gateway, review):
    return f"{gateway.url}/approvals/reviews/{review.pk}/"


def approve(review):
    reviews.decide(review.pk, reviewer("rita"), approve=True)


def test_a_held_kubectl_delete_prints_the_review_url_and_the_same_command_runs_once_approved(guarded_agent, kubectl):
    first = guarded_agent("delete", "pod", "debug-shell", "-n", "payments", "--wait=false", check=False)
    review = Review.objects.get()
    assert first.returncode == 1 and first.stdout == ""
    assert first.stderr == (
        f'Error from server (Forbidden): airlock: review {review.pk} is waiting for a reviewer (rule '
        f'"review-deletes"): delete pods "debug-shell" in namespace "payments"; nothing was done. Once a reviewer '
        f"approves it at {review_url(guarded_agent.gateway, review)}, run the same request again\n"
    )
    kubectl("get", "pod", "debug-shell", "-n", "payments")

    approve(review)
    again = guarded_agent("delete", "pod", "debug-shell", "-n", "payments", "--wait=false")
    assert 'pod "debug-shell" deleted from payments namespace' in again.stdout
    assert kubectl("get", "pod", "debug-shell", "-n", "payments", check=False).returncode != 0
    review.refresh_from_db()
    assert review.consumed_at is not None


def test_exec_it_is_told_on_the_error_channel_without_unknown_streams(guarded_agent, kubectl):
    """-t merges stderr into the terminal, so kubectl asks for no stderr: the note is a Status on channel 3."""
    argv = kubectl.argv(("exec", "-it", "debug-shell", "-n", "payments", "--", "sh", "-c", "echo ran-$((6*7))"),
                        guarded_agent.kubeconfig)
    tty = PtyProcess(argv, kubectl.env, rows=24, cols=80)
    try:
        tty.expect(r"waiting for a reviewer")
        assert tty.proc.wait(timeout=20) != 0
    finally:
        tty.close()
    review = Review.objects.get()
    shown = tty.seen.decode(errors="replace").replace("\r\n", " ").replace("\n", " ")
    assert f"error: airlock: review {review.pk} is waiting for a reviewer" in shown
    assert review_url(guarded_agent.gateway, review) in shown
    assert "Unknown stream" not in shown

    approve(review)
    tty = PtyProcess(argv, kubectl.env, rows=24, cols=80)
    try:
        tty.expect(r"ran-42")
        assert tty.proc.wait(timeout=20) == 0
    finally:
        tty.close()
    assert "Unknown stream" not in tty.seen.decode(errors="replace")


def test_exec_with_stderr_is_held_open_with_the_url_on_stderr(guarded_agent):
    proc = guarded_agent.popen("exec", "debug-shell", "-n", "payments", "--", "sh", "-c", "echo ran-$((6*7))")
    review = wait_for_review()
    note = proc.stderr.readline()
    assert note.startswith(f"airlock: waiting for a reviewer to approve review {review.pk} ")
    assert review_url(guarded_agent.gateway, review) in note
    approve(review)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == "ran-42\n"


@pytest.fixture
def python_core(guarded):
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(guarded.kubeconfig()))
    yield client.CoreV1Api(api_client)
    api_client.close()


def python_exec(core, *, stderr):
    from kubernetes.stream import stream

    return stream(core.connect_get_namespaced_pod_exec, "debug-shell", "payments",
                  command=["sh", "-c", "echo ran-$((6*7))"], stdout=True, stderr=stderr, stdin=False, tty=False,
                  _preload_content=False)


def until_closed(resp, rounds=100):
    """run_forever() in short steps: WSClient polls the raw socket, so frames already buffered by TLS
    would otherwise wait out the whole timeout."""
    for _ in range(rounds):
        if not resp.is_open():
            return
        resp.update(timeout=0.2)


def hang_up(resp):
    """Close the TCP connection too: after a close handshake websocket-client leaves its socket open, and the
    test gateway's shutdown would wait for it."""
    resp.close()
    resp.sock.shutdown()


def test_python_exec_without_stderr_gets_a_status_on_the_error_channel_only(guarded, python_core):
    resp = python_exec(python_core, stderr=False)
    until_closed(resp)
    review = Review.objects.get()
    assert not resp.is_open()
    assert resp.read_stdout() == "" and resp.read_stderr() == ""
    status = yaml.safe_load(resp.read_channel(3))
    assert status["status"] == "Failure" and status["code"] == 403
    assert f"review {review.pk} is waiting for a reviewer" in status["message"]
    assert review_url(guarded, review) in status["message"]
    hang_up(resp)


def test_python_exec_with_stderr_reads_the_note_there_and_its_output_once_approved(guarded, python_core):
    resp = python_exec(python_core, stderr=True)
    review = wait_for_review()
    note = ""
    for _ in range(100):
        resp.update(timeout=0.2)
        note += resp.read_stderr()
        if "\n" in note:
            break
    assert note.startswith(f"airlock: waiting for a reviewer to approve review {review.pk} ")
    assert review_url(guarded, review) in note and resp.read_stdout(timeout=0) == ""
    approve(review)
    until_closed(resp)
    assert resp.read_stdout() == "ran-42\n" and resp.read_stderr() == ""
    assert resp.returncode == 0
    hang_up(resp)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_pod(kubectl):
    """Pod ``echo`` in default whose port 80 is a TCP echo server (created with kubesim's own credential)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubectl("apply", "-f", "-", input=f"""
apiVersion: v1
kind: Pod
metadata:
  name: echo
  namespace: default
  annotations: {{kubesim.airlock.dev/ports: "80=127.0.0.1:{server.server_address[1]}"}}
spec:
  containers: [{{name: echo, image: busybox:1.37, ports: [{{containerPort: 80}}]}}]
""")
    yield "echo"
    server.shutdown()
    server.server_close()


def test_a_held_python_port_forward_carries_no_note_and_works_once_approved(guarded, python_core, echo_pod):
    """Its channels are port data (2k) and port errors (2k+1): the hold keeps the handshake waiting instead."""
    from kubernetes.stream import portforward

    opened = {}

    def forward():
        try:
            opened["pf"] = portforward(python_core.connect_get_namespaced_pod_portforward, echo_pod, "default",
                                       ports="80")
        except Exception as exc:  # surfaced by the assertions below
            opened["error"] = exc

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    approve(wait_for_review())
    thread.join(30)
    assert "error" not in opened, opened.get("error")
    pf = opened["pf"]
    sock = pf.socket(80)
    sock.setblocking(True)
    payload = os.urandom(50_000)
    sock.sendall(payload)
    echoed = b""
    while len(echoed) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, f"the forwarded socket closed early: {pf.error(80)!r}"
        echoed += chunk
    assert echoed == payload and pf.error(80) is None
    sock.close()


@pytest.fixture
def port_forward_at_once(guarded):
    from policy.models import Rule

    Rule.objects.create(connection=guarded.connection, order=1, name="port-forward-at-once", effect="review",
                        groups=["agents"], verbs=["*"], api_groups=[""], resources=["pods/portforward"],
                        namespaces=["*"], names=["*"], review_hold="retry")
    return guarded


def test_port_forward_answered_at_once_names_the_review_to_kubectl_and_the_python_client(
        port_forward_at_once, guarded_agent, python_core, echo_pod):
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import portforward

    proc = guarded_agent.popen("port-forward", "pod/echo", ":80")
    _, err = proc.communicate(timeout=30)
    review = Review.objects.get()
    assert proc.returncode == 1
    # kubectl retries a refused WebSocket as SPDY and prints only that answer: it names the same review.
    assert err == (
        f"error: error upgrading connection: unable to upgrade connection: airlock: review {review.pk} is waiting "
        f'for a reviewer (rule "port-forward-at-once"): get pods/portforward "echo" in namespace "default"; nothing '
        f"was done. Once a reviewer approves it at {review_url(guarded_agent.gateway, review)}, run the same "
        "request again\n"
    )

    # The client raises an ApiException carrying the refusal's Status, then trips over its empty body
    # (AttributeError, as for any refused port-forward): the traceback shows both.
    with pytest.raises((ApiException, AttributeError)) as refused:
        portforward(python_core.connect_get_namespaced_pod_portforward, echo_pod, "default", ports="80")
    shown = f"{refused.value} {refused.value.__context__}"
    python_review = Review.objects.latest("id")  # its own review: another client, another exact request
    assert f"review {python_review.pk} is waiting for a reviewer" in shown
    assert review_url(port_forward_at_once, python_review) in shown


def test_a_denied_kubectl_port_forward_shows_the_reviewers_reason(guarded_agent, echo_pod):
    """Held open before the handshake, then refused: kubectl's SPDY retry is told the denial too."""
    proc = guarded_agent.popen("port-forward", "pod/echo", ":80")
    review = wait_for_review()
    reviews.decide(review.pk, reviewer("rita"), approve=False, reason="no tunnels into default")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert f"airlock: denied by rita (review {review.pk}): no tunnels into default" in err
