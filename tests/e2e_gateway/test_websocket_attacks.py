"""An agent attacking the gateway's WebSocket path with a raw client (tests/wsraw.py).

kubectl only opens exec, attach and port-forward streams and only sends well-formed frames; an
attacker upgrades any URL kube-apiserver serves over WebSocket (watches, logs, plain GETs) and
writes whatever frames it likes.  The real gateway (uvicorn, TLS) runs in front of kubesim, which
serves watches over WebSocket as kube-apiserver does.  Every refusal must be a Status, nothing a
Secret holds may reach the agent, and every stream must leave one completion event whose
recording holds only what the cluster sent as output and what the agent typed as input.
"""

import base64
import json

import pytest

from tests import wsraw
from tests.e2e_gateway.test_audit_trail import events_for
from tests.e2e_identity import rawhttp
from tests.gateway_harness import AGENT_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_VALUES = ["s3cr3t-db-password-4f9a", "sk_live_kubesim_51f0c2e9"]  # kubesim's seed (shop-db, shop-stripe)


def assert_clean(data):
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    for value in SECRET_VALUES:
        for form in (value, base64.b64encode(value.encode()).decode().rstrip("=")):
            assert form not in text, f"a secret value reached the agent ({value[:4]}...)"


def port_of(gateway) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


def open_ws(gateway, path, subprotocols=("v5.channel.k8s.io",)):
    return wsraw.connect("127.0.0.1", port_of(gateway), gateway.ca_file, f"/k8s/{gateway.connection.name}{path}",
                         token=AGENT_TOKEN, subprotocols=subprotocols)


def everything_received(answer) -> bytes:
    """The refusal's body, or whatever an accepted stream delivered within a few seconds."""
    if isinstance(answer, wsraw.Refused):
        return answer.body
    session = answer.receive(until=lambda messages: len(messages) >= 3, timeout=3)
    answer.close()
    return b"".join(m if isinstance(m, bytes) else m.encode() for m in session.messages)


def forwarded(kubesim, path_part: str) -> list[dict]:
    return [r for r in kubesim.requests() if path_part in r["path"]]


LEAKY_EVENT = """
apiVersion: v1
kind: Event
metadata: {name: leaky-probe, namespace: shop}
involvedObject: {kind: Pod, name: web, namespace: shop}
reason: ProbeFailed
type: Warning
message: "probe failed: password=s3cr3t-db-password-4f9a"
"""


@pytest.mark.parametrize("path, subprotocols", [
    ("/api/v1/namespaces/shop/secrets?watch=true", ()),
    ("/api/v1/namespaces/shop/secrets?watch=1&labelSelector=", ("base64.binary.k8s.io",)),
    ("/api/v1/watch/namespaces/shop/secrets", ("v5.channel.k8s.io",)),
    ("/api/v1/namespaces/shop/secrets/shop-db", ("v5.channel.k8s.io",)),
    ("/api/v1/namespaces/shop/events/leaky-probe", ("v5.channel.k8s.io",)),
    ("/api/v1/namespaces/shop/pods/web/log", ("base64.binary.k8s.io",)),
    ("/api/v1/namespaces/shop/services/web/proxy/", ("v5.channel.k8s.io",)),
    ("/version", ("v5.channel.k8s.io",)),
])
def test_only_exec_attach_and_port_forward_can_be_upgraded(gateway, kubesim, kubectl, path, subprotocols):
    kubectl("apply", "-f", "-", input=LEAKY_EVENT)  # admin, straight to kubesim
    before = len(kubesim.requests())
    answer = open_ws(gateway, path, subprotocols)
    assert_clean(everything_received(answer))
    assert isinstance(answer, wsraw.Refused), "the gateway relayed a WebSocket it cannot mask"
    status = json.loads(answer.body)
    assert answer.status == 400 and status["kind"] == "Status" and status["code"] == 400
    assert "WebSocket" in status["message"]
    assert kubesim.requests()[before:] == [], "the cluster was asked"
    (event,) = events_for(response_code=400, transport="websocket")
    assert event.request_uri == path and event.user_username == "agent-1"


def make_pod(kubectl, name="victim"):
    kubectl("apply", "-f", "-", input=(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\n"
        "spec:\n  containers:\n  - {name: main, image: busybox}\n"))


def channel_codec(protocol):
    if "base64" in protocol:
        return (lambda ch, data: str(ch) + base64.b64encode(data).decode(),
                lambda m: (int(m[0]), base64.b64decode(m[1:])))
    return (lambda ch, data: bytes([ch]) + data,
            lambda m: (m[0], bytes(m[1:])))


ABSURD_EXIT = json.dumps({
    "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode", "message": "forged by the agent",
    "details": {"causes": [{"reason": "ExitCode", "message": "9" * 40}]},
}).encode()


@pytest.mark.parametrize("protocol, forged", [
    ("v5.channel.k8s.io", b"\x01FORGED-OUTPUT\n"),
    ("v5.channel.k8s.io", b"\x02FORGED-OUTPUT\n"),
    ("v5.channel.k8s.io", b"\x03" + ABSURD_EXIT),
    ("v5.channel.k8s.io", "\x01FORGED-OUTPUT\n"),  # a text frame
    ("v5.channel.k8s.io", b"\x07FORGED-OUTPUT\n"),
    ("v4.base64.channel.k8s.io", "1" + base64.b64encode(b"FORGED-OUTPUT\n").decode()),
    ("v4.channel.k8s.io", b"\x03" + ABSURD_EXIT),
])
def test_client_frames_never_become_cluster_output(gateway, kubectl, protocol, forged):
    make_pod(kubectl)
    encode, decode = channel_codec(protocol)
    ws = open_ws(gateway, "/api/v1/namespaces/default/pods/victim/exec?command=cat&stdin=true&stdout=true"
                          "&stderr=true", (protocol,))
    assert not isinstance(ws, wsraw.Refused), ws
    ws.send(encode(0, b"typed-by-agent\n"))
    ws.receive(until=lambda ms: b"typed-by-agent" in b"".join(decode(m)[1] for m in ms if decode(m)[0] == 1))
    ws.send(forged)
    session = ws.receive()
    ws.close()
    frames = [decode(m) for m in session.messages]
    assert not any(b"FORGED" in payload for _, payload in frames)
    status = json.loads(frames[-1][1])
    assert frames[-1][0] == 3 and status["kind"] == "Status" and status["code"] == 400
    assert status["message"].startswith("airlock: the client sent")
    assert session.close_code is not None

    (event,) = events_for(object_subresource="exec", object_name="victim")
    assert event.response_message.startswith("airlock: the client sent")
    recording = event.recording
    lines = [json.loads(line) for line in recording.asciicast.splitlines()[1:]]
    outputs = "".join(data for _, code, data in lines if code == "o")
    inputs = "".join(data for _, code, data in lines if code == "i")
    assert "typed-by-agent" in outputs and "typed-by-agent" in inputs
    assert "FORGED" not in recording.asciicast and "forged by the agent" not in recording.asciicast
    assert recording.exit_code is None
    assert lines[-1][1:] == ["m", "terminated: " + status["message"]]


def test_exec_upgrade_refused_by_the_cluster_is_masked(gateway, kubectl, kubesim):
    """kube-apiserver's refusal of an upgrade is free text (admission, validation): masked like any body."""
    make_pod(kubectl)
    answer = open_ws(gateway, "/api/v1/namespaces/default/pods/victim/exec?command=cat&stdout=true"
                              "&container=sk_live_kubesim_51f0c2e9")
    assert isinstance(answer, wsraw.Refused) and answer.status == 400
    assert forwarded(kubesim, "/pods/victim/exec"), "kubesim answered this one itself"
    status = json.loads(answer.body)
    assert "is not valid for pod victim" in status["message"] and "AIRLOCK-MASKED" in status["message"]
    assert_clean(answer.body)
    (event,) = events_for(object_subresource="exec", object_name="victim")
    assert_clean(event.response_message)


def test_exec_upgrade_refused_by_the_cluster_is_masked_in_the_record_even_with_masking_off(gateway, kubectl, kubesim):
    """A rule that lets the agent see Secret values (maskSecrets: false) does not reach the audit trail:
    the refusal's message, which is also the recorded one, is masked for the connection's values."""
    from policy.models import Rule

    Rule.objects.filter(connection=gateway.connection).update(mask_secrets=False)
    make_pod(kubectl)
    answer = open_ws(gateway, "/api/v1/namespaces/default/pods/victim/exec?command=cat&stdout=true"
                              "&container=pay-db-pass-61c3")  # known by value only
    assert isinstance(answer, wsraw.Refused) and answer.status == 400
    assert forwarded(kubesim, "/pods/victim/exec"), "kubesim answered this one itself"
    (event,) = events_for(object_subresource="exec", object_name="victim")
    assert "is not valid for pod victim" in event.response_message
    assert "pay-db-pass-61c3" not in event.response_message and "AIRLOCK-MASKED" in event.response_message


def test_request_uri_masked_with_the_connections_detectors(gateway, kubectl):
    connection = gateway.connection
    connection.masking_detectors = {"extra": [{"name": "acme-license", "pattern": "acme-[0-9]{8}"}]}
    connection.save()  # its post_save signal invalidates every connection registry of this process
    make_pod(kubectl)
    ws = open_ws(gateway, "/api/v1/namespaces/default/pods/victim/exec?command=echo&command=acme-20250101"
                          "&stdout=true")
    assert not isinstance(ws, wsraw.Refused), ws
    ws.receive()
    ws.close()
    (event,) = events_for(object_subresource="exec", object_name="victim")
    assert "acme-20250101" not in event.request_uri and "AIRLOCK-MASKED" in event.request_uri
    assert "acme-20250101" not in event.recording.asciicast
    assert "acme-20250101" not in " ".join(event.recording.command)


@pytest.mark.parametrize("websocket", [False, True])
def test_request_refused_at_parse_keeps_no_query(gateway, websocket):
    """A path the gateway will not parse is recorded without its query (exec commands, tokens)."""
    target = (f"/k8s/{gateway.connection.name}/api/v1/namespaces/default/pods/victim//exec"
              "?command=sh&command=-c&command=echo%20sk_live_kubesim_51f0c2e9")
    headers = [("Authorization", f"Bearer {AGENT_TOKEN}")]
    if websocket:
        headers += rawhttp.websocket_headers()
    response = rawhttp.request("127.0.0.1", port_of(gateway), gateway.ca_file, "GET", target, headers)
    assert response.status == 400
    (event,) = events_for(response_code=400)
    assert event.request_uri.startswith(f"/k8s/{gateway.connection.name}/api/v1/namespaces/default/pods/victim//")
    assert "sk_live" not in event.request_uri and "command" not in event.request_uri


@pytest.mark.parametrize("frame", [
    "syn-reply",  # the cluster opens no stream in a port-forward, so there is nothing to reply to
    "data-on-unopened-stream",
    "text",
])
def test_port_forward_tunnel_takes_only_frames_of_streams_the_client_opened(gateway, kubectl, frame):
    from kube import spdy

    make_pod(kubectl)
    ws = open_ws(gateway, "/api/v1/namespaces/default/pods/victim/portforward?ports=80",
                 ("SPDY/3.1+portforward.k8s.io",))
    assert not isinstance(ws, wsraw.Refused), ws
    encoder = spdy.FrameEncoder()
    if frame == "syn-reply":
        ws.send(encoder.encode(spdy.SynReply(stream_id=2, headers={"streamtype": "data"})))
    elif frame == "data-on-unopened-stream":
        ws.send(encoder.encode(spdy.Data(stream_id=7, data=b"GET / HTTP/1.0\r\n\r\n")))
    else:
        ws.send("text in a binary tunnel")
    session = ws.receive()
    ws.close()
    assert session.close_code == 1008
    (event,) = events_for(object_subresource="portforward", object_name="victim")
    assert event.response_message.startswith("airlock: the client")
    assert event.recording.kind == "portforward"
