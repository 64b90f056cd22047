"""Real kubectl (and the kubernetes Python client) exec/attach against kubesim over WebSocket,
directly and through the gateway (the ``route`` fixture)."""

import pytest

from kubesim.testing import PtyProcess

pytestmark = pytest.mark.django_db(transaction=True)  # the gateway variant of ``route``

SHELL_POD = """
apiVersion: v1
kind: Pod
metadata: {name: shell, namespace: default}
spec:
  containers:
  - name: main
    image: busybox:1.37
    command: ["sh"]
    stdin: true
    stdinOnce: true
"""


@pytest.fixture
def shell_pod(route, kubectl):
    kubectl("apply", "-f", "-", input=SHELL_POD)
    return "shell"


def test_exec_preserves_output_and_exit_codes(kubectl, shell_pod):
    ok = kubectl("exec", shell_pod, "--", "sh", "-c", "echo to-stdout; echo to-stderr >&2")
    assert ok.stdout == "to-stdout\n"
    assert "to-stderr" in ok.stderr

    failed = kubectl("exec", shell_pod, "--", "sh", "-c", "echo before; exit 3", check=False)
    assert failed.returncode == 3
    assert failed.stdout == "before\n"
    assert "command terminated with exit code 3" in failed.stderr


@pytest.fixture
def kubesim_secret(monkeypatch):
    """A credential in kubesim's own environment (set before kubesim starts, so it inherits it)."""
    monkeypatch.setenv("KUBESIM_HOST_SECRET", "host-secret-7f3c91")
    return "host-secret-7f3c91"


def test_exec_sees_the_pod_not_the_host(kubesim_secret, kubesim, kubectl, shell_pod):
    (kubesim.sandbox_dir("default", shell_pod) / "pod-file").write_text("from the pod\n")
    root = kubectl("exec", shell_pod, "--", "ls", "-a", "/").stdout.split()
    assert "pod-file" in root and "usr" in root
    assert not {"home", "root", "etc", "var", "work", "srv", "opt"} & set(root)
    assert kubectl("exec", shell_pod, "--", "cat", "/pod-file").stdout == "from the pod\n"
    result = kubectl("exec", shell_pod, "--", "sh", "-c", 'pwd; echo "$HOME $KUBESIM_POD $KUBESIM_NAMESPACE"')
    assert result.stdout.splitlines() == ["/", f"/ {shell_pod} default"]


def test_exec_finds_no_inherited_secret(kubesim_secret, kubectl, shell_pod):
    # Its own environment, and every process environment it can reach through /proc.
    hunt = "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; ls /proc | grep -c '^[0-9]'"
    out = kubectl("exec", shell_pod, "--", "sh", "-c", hunt).stdout
    assert kubesim_secret not in out and "KUBESIM_HOST_SECRET" not in out
    assert "KUBESIM_POD=shell" in out


def test_exec_with_stdin(kubectl, shell_pod):
    text = "".join(f"line {i} of the input\n" for i in range(2000))
    result = kubectl("exec", "-i", shell_pod, "--", "cat", input=text)
    assert result.stdout == text


def test_exec_unknown_command_fails_cleanly(kubectl, shell_pod):
    result = kubectl("exec", shell_pod, "--", "no-such-command-xyz", check=False)
    assert result.returncode == 1
    assert 'exec: "no-such-command-xyz": executable file not found in $PATH' in result.stderr


def test_exec_interactive_tty_with_resize(kubectl, shell_pod):
    tty = PtyProcess(kubectl.argv(("exec", "-it", shell_pod, "--", "sh"), None), kubectl.env, rows=30, cols=90)
    try:
        # Arithmetic keeps the typed command itself from matching what we wait for.
        tty.type("stty size; tty; echo M$((40+2))\n")
        match = tty.expect(r"(\d+) (\d+)\r\n(/dev/pts/\d+)\r\nM42")
        assert match.group(1, 2) == (b"30", b"90")
        tty.resize(50, 120)
        for attempt in range(50):
            tty.type(f"stty size; echo R$(({attempt}+1000))\n")
            size = tty.expect(rf"(\d+ \d+)\r\nR{attempt + 1000}").group(1)
            if size == b"50 120":
                break
        assert size == b"50 120"
        tty.type("exit 5\n")
        assert tty.proc.wait(timeout=20) == 5
    finally:
        tty.close()


def test_attach_to_the_main_process(kubectl, shell_pod):
    result = kubectl("attach", "-i", shell_pod, input="echo attached-$((6*7))\nexit 0\n")
    assert "attached-42" in result.stdout


def test_python_client_exec(route, shell_pod):
    from kubernetes import client, config
    from kubernetes.stream import stream

    api_client = config.new_client_from_config(config_file=str(route))
    core = client.CoreV1Api(api_client)
    try:
        out = stream(core.connect_get_namespaced_pod_exec, shell_pod, "default",
                     command=["sh", "-c", "echo from-python"], stdout=True, stderr=True, stdin=False, tty=False)
        assert out == "from-python\n"

        resp = stream(core.connect_get_namespaced_pod_exec, shell_pod, "default", command=["sh", "-c", "cat; exit 3"],
                      stdout=True, stderr=True, stdin=True, tty=False, _preload_content=False)
        resp.write_stdin("echoed back\n")
        resp.close_channel(0)  # v5 stdin EOF
        resp.run_forever(timeout=20)
        assert resp.read_stdout() == "echoed back\n"
        assert resp.returncode == 3

        legacy = stream(core.connect_get_namespaced_pod_exec, shell_pod, "default", command=["sh", "-c", "exit 4"],
                        stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False,
                        _headers={"sec-websocket-protocol": "v4.channel.k8s.io"})
        legacy.run_forever(timeout=20)
        assert legacy.subprotocol == "v4.channel.k8s.io"
        assert legacy.returncode == 4
    finally:
        api_client.close()


def test_exec_into_missing_pod_is_404(route, kubectl):
    result = kubectl("exec", "ghost", "--", "true", check=False)
    assert result.returncode == 1
    assert 'pods "ghost" not found' in result.stderr

