"""An agent trying to crash, flood, forge or blind the exec recording, with a raw WebSocket client.

Each attempt checks what the agent received, what the recording kept and what reached the cluster;
the conftest checks one completion event per stream and the chain after every test.
"""

import json

import pytest
from django.test import Client
from wsproto.events import Ping

from tests import wsraw
from tests.adversarial.leaks import PLACEHOLDER, assert_clean
from tests.e2e_gateway.test_audit_trail import events_for
from tests.e2e_identity import rawhttp
from tests.gateway_harness import AGENT_TOKEN, make_gateway_app

pytestmark = pytest.mark.django_db(transaction=True)

SHOP_DB = "s3cr3t-db-password-4f9a"
RECORDING_CAP = 256 * 1024
SHELL = "/api/v1/namespaces/payments/pods/debug-shell/exec"


@pytest.fixture
def gateway_app():
    """The harness's app with a small recording cap, so a flood reaches it quickly."""
    from audit.recorder import Recorder

    return make_gateway_app(recorder=Recorder(max_recording=RECORDING_CAP))


def exec_path(pod_path, *command, stdin=True, tty=False):
    query = "&".join(f"command={word}" for word in command)
    return f"{pod_path}?{query}&stdin={str(stdin).lower()}&stdout=true&stderr={str(not tty).lower()}" + (
        "&tty=true" if tty else "")


def channel(messages, number) -> bytes:
    return b"".join(m[1:] for m in messages if isinstance(m, bytes) and m[:1] == bytes([number]))


def output_contains(text: bytes):
    return lambda messages: text in channel(messages, 1)


def status_of(session) -> dict | None:
    raw = channel(session.messages, 3)
    return json.loads(raw) if raw else None


def recording_of(pod="debug-shell"):
    (event,) = events_for(object_subresource="exec", object_name=pod)
    return event, event.recording


def cast_lines(recording) -> list:
    return [json.loads(line) for line in recording.asciicast.splitlines()[1:]]


def open_exec(websocket, path):
    ws = websocket(path)
    assert not isinstance(ws, wsraw.Refused), ws
    return ws


HOSTILE_RESIZES = {
    "an infinite width": b'{"Width":1e999,"Height":24}',
    "200k levels of nesting": b"[" * 200_000 + b"]" * 200_000,
    "a megabyte of padding": json.dumps({"Width": 80, "Height": 24, "pad": "x" * 1_000_000}).encode(),
    "strings, null and out of range": b'{"Width":"80","Height":null,"W":4294967296}',
}


@pytest.mark.parametrize("resize", HOSTILE_RESIZES.values(), ids=HOSTILE_RESIZES.keys())
def test_a_hostile_resize_ends_the_session_with_a_status(websocket, resize):
    """A resize the gateway cannot read is refused like any other bad frame: a Status, a recorded end."""
    ws = open_exec(websocket, exec_path(SHELL, "cat"))
    ws.send(b"\x04" + json.dumps({"Width": 100, "Height": 30}).encode())
    ws.send(b"\x00echo-before\n")
    ws.receive(until=output_contains(b"echo-before"))
    ws.send(b"\x04" + resize)
    session = ws.receive(timeout=10)  # until the gateway closes
    ws.close()
    status = status_of(session)
    assert status and status["code"] == 400 and "resize" in status["message"], session
    assert session.close_code not in (None, 1006)
    event, recording = recording_of()
    assert event.response_message == status["message"]
    lines = cast_lines(recording)
    assert [data for _, code, data in lines if code == "r"] == ["100x30"]
    assert lines[-1][1:] == ["m", "terminated: " + status["message"]]
    assert "x" * 1000 not in recording.asciicast


def test_stdin_flood_is_capped_in_the_recording_and_still_recorded(websocket):
    ws = open_exec(websocket, exec_path(SHELL, "cat"))
    chunk = b"flood-" + b"y" * (64 * 1024 - 6)
    for _ in range(16):  # 1 MiB in, 1 MiB echoed back: four times the recording cap
        ws.send(b"\x00" + chunk)
    ws.send(b"\x00\nflood-done\n")
    ws.send(b"\xff\x00")  # v5: stdin closed, cat exits
    session = ws.receive(until=lambda ms: bool(channel(ms, 3)), timeout=30)
    ws.close()
    assert b"flood-done" in channel(session.messages, 1)
    event, recording = recording_of()
    assert recording.truncated and len(recording.asciicast.encode()) <= RECORDING_CAP
    assert event.bytes_in > 1_000_000 and event.bytes_out > 1_000_000


def test_stdin_after_the_agent_closed_it_is_not_output(websocket):
    """v5 lets the agent close stdin; what it sends after is input at most, never output."""
    ws = open_exec(websocket, exec_path(SHELL, "cat"))
    ws.send(b"\x00before-close\n")
    ws.receive(until=output_contains(b"before-close"))
    ws.send(b"\xff\x00")
    ws.send(b"\x00after-close\n")
    ws.send(b"\xff\x04")
    ws.send(b"\x01forged-after-close\n")
    session = ws.receive(timeout=10)
    ws.close()
    assert b"after-close" not in channel(session.messages, 1)
    _, recording = recording_of()
    outputs = "".join(data for _, code, data in cast_lines(recording) if code == "o")
    assert "before-close" in outputs and "after-close" not in outputs and "forged" not in recording.asciicast


def test_ping_flood_neither_breaks_nor_pollutes_the_recording(websocket):
    ws = open_exec(websocket, exec_path(SHELL, "cat"))
    for i in range(2000):
        ws.sock.sendall(ws.ws.send(Ping(payload=b"p%d" % i)))
    ws.send(b"\x00after-pings\n")
    session = ws.receive(until=output_contains(b"after-pings"), timeout=20)
    ws.close()
    assert b"after-pings" in channel(session.messages, 1)
    _, recording = recording_of()
    assert "p1999" not in recording.asciicast


def cart_pod(kubectl) -> str:
    return kubectl("get", "pods", "-n", "shop", "-l", "app=cart", "-o", "jsonpath={.items[0].metadata.name}").stdout


def test_invalid_utf8_around_a_secret_value(websocket, kubectl):
    """Bytes that are not UTF-8 next to the value: the masker works on bytes, the recording decodes after."""
    pod = cart_pod(kubectl)
    script = "printf '\\377\\376'; printenv DB_PASSWORD | tr -d '\\n'; printf '\\300\\n'"
    ws = open_exec(websocket, exec_path(f"/api/v1/namespaces/shop/pods/{pod}/exec", "sh", "-c",
                                        script.replace(" ", "%20").replace("'", "%27").replace("|", "%7C")
                                        .replace("\\", "%5C").replace(";", "%3B"), stdin=False))
    session = ws.receive(until=lambda ms: bool(channel(ms, 3)))
    ws.close()
    out = channel(session.messages, 1)
    assert out.startswith(b"\xff\xfe") and PLACEHOLDER.encode() in out
    assert_clean(out)
    _, recording = recording_of(pod)
    assert PLACEHOLDER in recording.asciicast and "\ufffd" in recording.asciicast


def test_terminal_escapes_cannot_hide_or_smuggle_in_the_replay(websocket, kubectl, django_user_model):
    """OSC 52 (clipboard) carries base64, a title sequence and a screen clear try to rewrite the replay."""
    pod = cart_pod(kubectl)
    ws = open_exec(websocket, exec_path(f"/api/v1/namespaces/shop/pods/{pod}/exec", "sh", tty=True))
    ws.send(b"\x00printf 'visible-before-clear\\n'\n")
    ws.receive(until=output_contains(b"visible-before-clear\r\n"))
    ws.send(b"\x00printf '\\033]52;c;%s\\007' \"$(printenv DB_PASSWORD | tr -d '\\n' | base64)\"\n")
    ws.send(b"\x00printf '\\033]0;</title><script>alert(1)</script>\\007\\033[2J\\033[3J\\033[H'; echo E$((6*7))ND\n")
    session = ws.receive(until=output_contains(b"E42ND"))
    ws.send(b"\x00exit\n")
    session = ws.receive(until=lambda ms: bool(channel(ms, 3)))
    ws.close()
    assert_clean(channel(session.messages, 1))
    event, recording = recording_of(pod)
    assert "visible-before-clear" in recording.asciicast, "the clear screen removed output from the recording"
    auditor = django_user_model.objects.create_user("auditor", password="pw")
    from django.contrib.auth.models import Permission

    auditor.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client = Client()
    client.force_login(auditor)
    page = client.get(f"/audit/sessions/{event.session.session_id}/")
    assert page.status_code == 200 and b"<script>alert(1)" not in page.content
    cast = client.get(f"/audit/events/{event.seq}/recording.cast")
    assert cast.status_code == 200 and "sandbox" in cast.headers["Content-Security-Policy"]
    assert not cast.headers["Content-Type"].startswith("text/html")


def test_a_denied_exec_runs_nothing_and_is_recorded_as_refused(gateway, websocket, cluster):
    from gateway.models import Rule

    Rule.objects.create(connection=gateway.connection, order=1, name="no-exec", effect="deny", groups=["agents"],
                        verbs=["*"], api_groups=[""], resources=["pods/exec"], namespaces=["*"], names=["*"])
    cluster.mark()
    denied = websocket(exec_path(SHELL, "sh", "-c", "touch%20pwned"))
    assert isinstance(denied, wsraw.Refused) and denied.status == 403
    spdy = rawhttp.request("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]), gateway.ca_file, "POST",
                           f"/k8s/{gateway.connection.name}{exec_path(SHELL, 'sh', '-c', 'touch%20pwned')}",
                           [("Authorization", f"Bearer {AGENT_TOKEN}"), *rawhttp.spdy_headers()])
    assert spdy.status == 403
    assert not [r for r in cluster.since() if r["path"].endswith("/exec")], "the cluster was asked"
    refused = events_for(object_subresource="exec", at_least=2)
    assert [e.response_code for e in refused] == [403, 403]
    assert all(e.decision_rule_name == "no-exec" for e in refused)
    assert not any(hasattr(e, "recording") for e in refused)


def test_a_secret_typed_on_stdin_reaches_the_process_but_not_the_recording(websocket, kubectl):
    pod = cart_pod(kubectl)
    ws = open_exec(websocket, exec_path(f"/api/v1/namespaces/shop/pods/{pod}/exec", "sh", "-c",
                                        "read%20v%3B%20test%20%22%24v%22%20%3D%20%22%24DB_PASSWORD%22%20"
                                        "%26%26%20echo%20SAME"))
    ws.send(b"\x00" + SHOP_DB.encode() + b"\n")
    session = ws.receive(until=lambda ms: bool(channel(ms, 3)))
    ws.close()
    assert channel(session.messages, 1) == b"SAME\n", "the process did not receive what was typed"
    _, recording = recording_of(pod)
    inputs = "".join(data for _, code, data in cast_lines(recording) if code == "i")
    assert PLACEHOLDER in inputs
    assert_clean(recording.asciicast)
