"""kubesim.streams exec/attach over WebSocket, and the channel framing, without kubectl."""

import asyncio
import base64
import json
import os
import shutil

import aiohttp
import pytest
from multidict import MultiDict

from kube.channels import ChannelError, ChannelProtocol
from kube.channels import REMOTECOMMAND_PROTOCOLS as EXEC_PROTOCOLS
from kubesim import errors, sandbox, streams
from kubesim.tests.streamkit import StreamServer, collect, joined, make_pod, pids_of, wait_gone

V5 = EXEC_PROTOCOLS["v5.channel.k8s.io"]
B64 = EXEC_PROTOCOLS["v4.base64.channel.k8s.io"]


@pytest.fixture
async def kube(tmp_path):
    async with StreamServer(tmp_path) as server:
        server.add_pod(make_pod("web"))
        yield server


def exec_params(*command, **flags):
    params = [("command", c) for c in command] + [("container", "app")]
    params += [(k, "true" if v else "false") for k, v in flags.items()]
    return params


# --- channel framing (sans-IO) -------------------------------------------------------------


def test_binary_channel_framing():
    assert V5.encode(1, b"hi") == b"\x01hi"
    assert V5.decode(b"\x00data") == (0, b"data")
    assert V5.decode("\x04{}") == (4, b"{}")  # text frames are accepted like the kubelet does
    assert V5.decode(b"\xff\x00") == (255, b"\x00")
    with pytest.raises(ChannelError):
        V5.decode(b"")


def test_base64_channel_framing():
    assert B64.encode(2, b"\x00\xff") == "2" + base64.b64encode(b"\x00\xff").decode()
    assert B64.decode("0aGVsbG8=") == (0, b"hello")
    assert B64.decode(b"4e30=") == (4, b"{}")
    for bad in ("xaGk=", "0not base64!"):
        with pytest.raises(ChannelError):
            B64.decode(bad)


def test_protocol_table():
    assert EXEC_PROTOCOLS["v5.channel.k8s.io"].v5
    assert not EXEC_PROTOCOLS["v4.channel.k8s.io"].v5
    assert EXEC_PROTOCOLS["channel.k8s.io"] == ChannelProtocol("channel.k8s.io", status_json=False)
    assert EXEC_PROTOCOLS["base64.channel.k8s.io"].base64


def test_resize_messages():
    assert streams.parse_resize(b'{"Width":100,"Height":40}\n') == [(100, 40)]
    assert streams.parse_resize(b'{"width":1,"height":2}{"Width":3,"Height":4}') == [(1, 2), (3, 4)]
    assert streams.parse_resize(b'{"Width":-1,"Height":2}') == []
    assert streams.parse_resize(b'{"Width":true,"Height":2}') == []
    assert streams.parse_resize(b"not json") == []
    assert streams.parse_resize(b"[1,2]") == []


def test_query_bool_follows_apimachinery():
    query = MultiDict(a="true", b="0", c="FALSE", d="", e="yes")
    assert [streams.query_bool(query, k, False) for k in "abcde"] == [True, False, False, True, True]
    assert streams.query_bool(query, "missing", True) is True


def test_stream_options_defaults_and_validation():
    pod = make_pod("web", containers=[{"name": "app"}, {"name": "side"}])
    opts = streams.parse_stream_options(MultiDict([("command", "ls"), ("command", "-l"), ("container", "side")]), pod, "exec")
    assert opts.command == ("ls", "-l")
    assert opts.container == {"name": "side"}
    assert (opts.stdin, opts.stdout, opts.stderr, opts.tty) == (False, True, True, False)
    cases = [
        (MultiDict(command="ls", container="nope"), "container nope is not valid for pod web"),
        (MultiDict(command="ls"), "a container name must be specified for pod web, choose one of: [app side]"),
        (MultiDict(container="app"), "you must specify at least one command for the container"),
        (MultiDict(command="ls", container="app", stdout="false", stderr="0"), "you must specify at least 1 of"),
    ]
    for query, message in cases:
        with pytest.raises(errors.ApiError) as info:
            streams.parse_stream_options(query, pod, "exec")
        assert info.value.code == 400 and message in info.value.message


def test_exit_status_objects():
    assert streams.exit_status(0) == {"metadata": {}, "status": "Success"}
    failure = streams.exit_status(3)
    assert failure["reason"] == "NonZeroExitCode"
    assert failure["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


# --- exec ----------------------------------------------------------------------------------


async def test_exec_streams_output_and_exit_code(kube):
    async with kube.ws("web", "exec", exec_params("sh", "-c", "echo out; echo err >&2; exit 3")) as ws:
        assert ws.protocol == "v5.channel.k8s.io"
        messages = await collect(ws)
    assert messages[0] == (1, b"")  # ready signal
    assert joined(messages, 1) == b"out\n"
    assert joined(messages, 2) == b"err\n"
    assert messages[-1][0] == 3
    assert json.loads(messages[-1][1]) == streams.exit_status(3)
    assert ws.close_code == aiohttp.WSCloseCode.OK


async def test_exec_success_status(kube):
    async with kube.ws("web", "exec", exec_params("true")) as ws:
        messages = await collect(ws)
    assert messages == [(1, b""), (3, b'{"metadata":{},"status":"Success"}')]


async def test_exec_stdin_until_v5_close(kube):
    payload = os.urandom(300_000)
    async with kube.ws("web", "exec", exec_params("cat", stdin=True)) as ws:
        for i in range(0, len(payload), 32768):
            await ws.send_bytes(b"\x00" + payload[i : i + 32768])
        await ws.send_bytes(b"\xff\x00")
        messages = await collect(ws)
    assert joined(messages, 1) == payload
    assert json.loads(messages[-1][1])["status"] == "Success"


async def test_exec_runs_confined_to_the_sandbox_with_a_clean_environment(kube, monkeypatch):
    monkeypatch.setenv("KUBESIM_TEST_SECRET", "do-not-leak")
    pod = kube.add_pod(make_pod("envpod", containers=[{"name": "app", "env": [{"name": "GREETING", "value": "hi"}]}]))
    sandbox = kube.cluster.sandbox_dir("default", pod["metadata"]["name"])
    (sandbox / "only-in-the-pod").write_text("mine\n")
    script = 'pwd; echo "$HOME $KUBESIM_POD $KUBESIM_NAMESPACE $GREETING"; hostname; ls -a /; cat /only-in-the-pod; env'
    async with kube.ws("envpod", "exec", exec_params("sh", "-c", script)) as ws:
        out = joined(await collect(ws), 1).decode()
    lines = out.splitlines()
    assert lines[:3] == ["/", "/ envpod default hi", "envpod"]
    root = lines[3:lines.index("mine")]
    assert "only-in-the-pod" in root and "usr" in root
    assert not {"home", "root", "etc", "var", "work"} & set(root)  # the host's root is not there
    assert "do-not-leak" not in out and "KUBESIM_TEST_SECRET" not in out
    assert "PATH=/usr/local/sbin:" in out


async def test_exec_cannot_leave_or_change_the_pod(kube):
    script = ("chroot / true 2>/dev/null || echo no-chroot; mount -t tmpfs x /tmp 2>/dev/null || echo no-mount; "
              "(echo x > /usr/kubesim-was-here) 2>/dev/null || echo no-usr; "
              "(echo 0 > /proc/sys/kernel/printk) 2>/dev/null || echo no-sysctl")
    async with kube.ws("web", "exec", exec_params("sh", "-c", script)) as ws:
        out = joined(await collect(ws), 1).decode()
    assert out.split() == ["no-chroot", "no-mount", "no-usr", "no-sysctl"]
    assert not os.path.exists("/usr/kubesim-was-here")


async def test_without_confinement_nothing_runs(kube, monkeypatch):
    """Where namespaces cannot be made, kubesim refuses rather than run the command on the host."""
    why = "kubesim cannot confine pod processes on this host: unshare failed (Operation not permitted)"
    monkeypatch.setattr(sandbox, "_detected", sandbox.ConfinementError(why))
    async with kube.ws("web", "exec", exec_params("touch", "/tmp/kubesim-unconfined-ran")) as ws:
        status = json.loads((await collect(ws))[-1][1])
    assert status["reason"] == "InternalError" and why in status["message"]
    assert not os.path.exists("/tmp/kubesim-unconfined-ran")


async def test_exec_with_tty_applies_resize_and_merges_stderr(kube):
    params = exec_params("sh", "-c", "read line; stty size; echo oops >&2", stdin=True, tty=True, stderr=False)
    async with kube.ws("web", "exec", params) as ws:
        await ws.send_bytes(b"\x04" + json.dumps({"Width": 100, "Height": 40}).encode())
        await ws.send_bytes(b"\x00go\n")
        messages = await collect(ws)
    out = joined(messages, 1)
    assert b"40 100" in out
    assert b"oops" in out
    assert joined(messages, 2) == b""
    assert json.loads(messages[-1][1])["status"] == "Success"


async def test_exec_tty_has_a_controlling_terminal(kube):
    async with kube.ws("web", "exec", exec_params("sh", "-c", "tty; ps -o tty= -p $$", stdin=True, tty=True, stderr=False)) as ws:
        out = joined(await collect(ws), 1).decode()
    first, second = out.split()[:2]
    assert first.startswith("/dev/pts/")
    assert second == first.removeprefix("/dev/")


async def test_exec_unknown_executable_is_a_failure_status(kube):
    async with kube.ws("web", "exec", exec_params("no-such-binary-xyz")) as ws:
        messages = await collect(ws)
    status = json.loads(messages[-1][1])
    assert status["status"] == "Failure" and status["reason"] == "InternalError"
    assert 'exec: "no-such-binary-xyz": executable file not found in $PATH' in status["message"]


async def test_client_disconnect_kills_the_process_group(kube):
    sandbox = kube.cluster.sandbox_dir("default", "web")
    async with kube.ws("web", "exec", exec_params("sh", "-c", "sleep 307 & echo started; wait")) as ws:
        msg = await ws.receive()  # ready
        assert msg.data == b"\x01"
        assert (await ws.receive()).data == b"\x01started\n"
        for _ in range(50):  # "started" can arrive before the forked shell has exec'ed sleep
            if found := pids_of(["sleep", "307"], sandbox):
                break
            await asyncio.sleep(0.1)
        (background,) = found
    assert await wait_gone(background)


async def test_v4_protocol_and_base64_variant(kube):
    async with kube.ws("web", "exec", exec_params("sh", "-c", "printf hi; exit 2"), protocols=("v4.channel.k8s.io",)) as ws:
        messages = await collect(ws)
    assert ws.protocol == "v4.channel.k8s.io"
    assert joined(messages, 1) == b"hi"
    assert json.loads(messages[-1][1])["details"]["causes"][0]["message"] == "2"

    async with kube.ws("web", "exec", exec_params("printf", "\\377x"), protocols=("v4.base64.channel.k8s.io",)) as ws:
        texts = [m async for m in ws]
    assert all(m.type is aiohttp.WSMsgType.TEXT for m in texts)
    decoded = [B64.decode(m.data) for m in texts]
    assert joined(decoded, 1) == b"\xffx"


async def test_v1_protocol_reports_errors_as_text(kube):
    protocols = ("channel.k8s.io",)
    async with kube.ws("web", "exec", exec_params("sh", "-c", "exit 4"), protocols=protocols) as ws:
        messages = await collect(ws)
    assert messages[-1] == (3, b"command terminated with non-zero exit code: exit code 4")
    async with kube.ws("web", "exec", exec_params("true"), protocols=protocols) as ws:
        assert await collect(ws) == [(1, b"")]


async def test_client_protocol_preference_is_honoured(kube):
    async with kube.ws("web", "exec", exec_params("true"), protocols=("v4.channel.k8s.io", "v5.channel.k8s.io")) as ws:
        await collect(ws)
    assert ws.protocol == "v4.channel.k8s.io"


async def test_bad_requests_are_refused_before_the_upgrade(kube, caplog):
    status, body = await kube.upgrade_refused("web", "exec", exec_params("ls")[:1] + [("container", "nope")])
    assert status == 400
    assert body["kind"] == "Status" and body["reason"] == "BadRequest"
    assert body["message"] == "container nope is not valid for pod web"

    status, body = await kube.upgrade_refused("web", "exec", exec_params("ls"), protocols="base64url.bearer.authorization.k8s.io.c2VjcmV0")
    assert status == 400
    assert "no supported WebSocket subprotocol" in body["message"]
    assert "c2VjcmV0" not in body["message"]
    assert "c2VjcmV0" not in caplog.text

    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Protocol": "v5.channel.k8s.io"}  # no Sec-WebSocket-Key
    async with kube.session.get(kube.url("web", "exec"), params=exec_params("ls"), headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["message"] == "Upgrade request required"

    async with kube.session.get(kube.url("web", "exec"), params=exec_params("ls")) as resp:
        assert resp.status == 400
        assert (await resp.json())["message"] == "Upgrade request required"

    status, body = await kube.upgrade_refused("web", "logs", [])
    assert status == 400


# --- attach --------------------------------------------------------------------------------


async def test_attach_shares_the_main_process(kube):
    kube.add_pod(make_pod("shell", containers=[{"name": "app", "command": ["sh"], "stdin": True, "stdinOnce": True}]))
    params = [("container", "app"), ("stdin", "true"), ("stdout", "true"), ("stderr", "true")]
    # Both connect at once: the first attaches must share one freshly started process.
    first, second = await asyncio.gather(kube.ws("shell", "attach", params), kube.ws("shell", "attach", params[:1]))
    async with first, second:
        assert (await first.receive()).data == b"\x01"
        assert (await second.receive()).data == b"\x01"
        await first.send_bytes(b"\x00echo hello from main\n")
        assert (await first.receive()).data == b"\x01hello from main\n"
        assert (await second.receive()).data == b"\x01hello from main\n"
        (pid,) = pids_of(["sh"], kube.cluster.sandbox_dir("default", "shell"))
        await first.send_bytes(b"\xff\x00")  # stdinOnce: closing stdin ends sh
        first_rest, second_rest = await collect(first), await collect(second)
    assert json.loads(first_rest[-1][1])["status"] == "Success"
    assert json.loads(second_rest[-1][1])["status"] == "Success"
    assert await wait_gone(pid)


async def test_attach_main_process_outlives_attachers_and_dies_with_the_pod(kube):
    kube.add_pod(make_pod("loop", containers=[{"name": "app", "command": ["sh", "-c"], "args": ["exec cat"]}]))
    params = [("container", "app"), ("stdin", "true")]
    sandbox = kube.cluster.sandbox_dir("default", "loop")
    async with kube.ws("loop", "attach", params) as ws:
        assert (await ws.receive()).data == b"\x01"
        await ws.send_bytes(b"\x00first\n")
        assert (await ws.receive()).data == b"\x01first\n"
        (pid,) = pids_of(["cat"], sandbox)
    async with kube.ws("loop", "attach", params) as ws:
        assert (await ws.receive()).data == b"\x01"
        await ws.send_bytes(b"\x00still here\n")
        assert (await ws.receive()).data == b"\x01still here\n"
        shutil.rmtree(sandbox)
        messages = await collect(ws)
    assert json.loads(messages[-1][1])["status"] == "Success"
    assert await wait_gone(pid)


async def test_attach_without_runnable_command_runs_sh(kube):
    kube.add_pod(make_pod("nginx", containers=[{"name": "app", "command": ["nginx-not-here"]}]))
    async with kube.ws("nginx", "attach", [("container", "app"), ("stdin", "true")]) as ws:
        assert (await ws.receive()).data == b"\x01"
        await ws.send_bytes(b"\x00echo from sh\n")
        assert (await ws.receive()).data == b"\x01from sh\n"
        await ws.send_bytes(b"\x00exit 0\n")
        messages = await collect(ws)
    assert json.loads(messages[-1][1])["status"] == "Success"


async def test_attach_to_a_tty_main_process(kube):
    kube.add_pod(make_pod("term", containers=[{"name": "app", "command": ["sh"], "stdin": True, "tty": True}]))
    params = [("container", "app"), ("stdin", "true"), ("tty", "true"), ("stderr", "false")]
    async with kube.ws("term", "attach", params) as ws:
        assert (await ws.receive()).data == b"\x01"
        await ws.send_bytes(b"\x04" + json.dumps({"Width": 77, "Height": 11}).encode())
        await ws.send_bytes(b"\x00stty size; tty; exit 0\n")
        out = joined(await collect(ws), 1)
    assert b"11 77" in out
    assert b"/dev/pts/" in out


async def test_nul_bytes_are_refused_not_crashed_on(kube):
    kube.add_pod(make_pod("nul", containers=[{"name": "app", "env": [{"name": "A", "value": "x\0y"}, {"name": "B", "value": "ok"}]}]))
    async with kube.ws("nul", "exec", exec_params("sh", "-c", 'echo "[$A][$B]"')) as ws:
        assert joined(await collect(ws), 1) == b"[][ok]\n"
    async with kube.ws("web", "exec", exec_params("echo", "a\0b")) as ws:
        status = json.loads((await collect(ws))[-1][1])
    assert status["reason"] == "InternalError"
    assert "NUL" in status["message"]
