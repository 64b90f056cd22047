import pytest

from kube import headers as hdr


def names(pairs):
    return [n for n, _ in pairs]


def test_client_identity_headers_never_forwarded():
    incoming = [
        ("authorization", "Bearer agent-token"),
        ("impersonate-user", "system:admin"),
        ("Impersonate-Group".lower(), "system:masters"),
        ("impersonate-uid", "1"),
        ("impersonate-extra-scopes", "x"),
        ("x-remote-user", "admin"),
        ("x-remote-group", "system:masters"),
        ("x-remote-extra-foo", "bar"),
        ("proxy-authorization", "Basic x"),
        ("cookie", "sessionid=1"),
        ("user-agent", "kubectl/v1.37"),
        ("kubectl-session", "abc"),
    ]
    out = hdr.upstream_request_headers(incoming)
    assert names(out) == ["user-agent", "kubectl-session", "accept", "accept-encoding"]


def test_hop_by_hop_and_connection_named_headers_dropped():
    incoming = [
        ("connection", "keep-alive, x-secret-hop"),
        ("x-secret-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("te", "trailers"),
        ("upgrade", "SPDY/3.1"),
        ("host", "gateway"),
        ("content-length", "10"),
        ("accept-encoding", "gzip"),
        ("content-type", "application/json"),
    ]
    assert hdr.upstream_request_headers(incoming) == [
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("accept-encoding", "identity"),
    ]


@pytest.mark.parametrize(
    "accept, expected",
    [
        ("application/vnd.kubernetes.protobuf,application/json", "application/json"),
        ("application/vnd.kubernetes.protobuf", "application/json"),
        ("application/cbor", "application/json"),
        ("application/yaml", "application/json"),
        ("*/*", "application/json"),
        ("application/json, */*", "application/json"),
        (
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
        ),
        (
            "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,"
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        ),
        ("Application/JSON", "Application/JSON"),
        ("", "application/json"),
    ],
)
def test_accept_narrowed_to_json(accept, expected):
    assert hdr.json_accept(accept) == expected


def test_missing_accept_asks_for_json_and_repeated_accept_merged():
    assert hdr.upstream_request_headers([])[0] == ("accept", "application/json")
    out = hdr.upstream_request_headers([("accept", "application/yaml"), ("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")])
    assert out[0] == ("accept", "application/json;as=Table;v=v1;g=meta.k8s.io") and len(out) == 2


def test_single_valued_headers_forwarded_once_as_kube_apiserver_reads_them_lists_kept():
    out = hdr.upstream_request_headers([
        ("user-agent", "first"), ("x-stream-protocol-version", "v5.channel.k8s.io"), ("content-type", "a/b"),
        ("user-agent", "second"), ("x-stream-protocol-version", "v4.channel.k8s.io"), ("content-type", "c/d"),
    ])
    assert [pair for pair in out if pair[0] != "accept" and pair[0] != "accept-encoding"] == [
        ("user-agent", "first"), ("x-stream-protocol-version", "v5.channel.k8s.io"), ("content-type", "a/b"),
        ("x-stream-protocol-version", "v4.channel.k8s.io"),
    ]


def test_websocket_handshake_headers_recreated_upstream():
    incoming = [
        ("sec-websocket-key", "k"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-protocol", "v5.channel.k8s.io"),
        ("sec-websocket-extensions", "permessage-deflate"),
        ("user-agent", "kubectl"),
    ]
    assert names(hdr.upstream_request_headers(incoming, websocket=True)) == ["user-agent", "accept", "accept-encoding"]


def test_response_headers_drop_hop_by_hop():
    out = hdr.response_headers(
        [(b"Content-Type", b"application/json"), (b"transfer-encoding", b"chunked"), (b"connection", b"close, x-hop"),
         (b"X-Hop", b"1"), (b"audit-id", b"1"), (b"warning", "299 - \"日本\"".encode())]
    )
    assert out == [(b"content-type", b"application/json"), (b"audit-id", b"1"),
                   (b"warning", "299 - \"日本\"".encode())]


def test_helpers():
    assert hdr.is_spdy_upgrade([("upgrade", "SPDY/3.1")])
    assert not hdr.is_spdy_upgrade([("upgrade", "websocket")])
    assert hdr.bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert hdr.bearer_token([("authorization", "bearer  abc ")]) == "abc"
    assert hdr.bearer_token([("authorization", "Basic abc")]) is None
    assert hdr.bearer_token([("authorization", "Bearer ")]) is None
    assert hdr.bearer_token([]) is None


def test_request_header_values_are_utf8_text_and_encode_back_to_the_same_bytes():
    raw = [(b"User-Agent", b"caf\xc3\xa9 \xe6\x97\xa5"), (b"X-Tab", b"a\tb")]
    text = hdr.request_headers(raw)
    assert text == [("user-agent", "café 日"), ("x-tab", "a\tb")]
    assert hdr.encode(text) == [(b"user-agent", b"caf\xc3\xa9 \xe6\x97\xa5"), (b"x-tab", b"a\tb")]


@pytest.mark.parametrize(
    "raw, words",
    [
        ((b"user-agent", b"caf\xe9"), 'header "user-agent" is not valid UTF-8'),
        ((b"user-agent", b"\xc3"), 'header "user-agent" is not valid UTF-8'),
        ((b"x-a", b"a\x00b"), "control character"),
        ((b"x-a", b"a\x7fb"), "control character"),
        ((b"x-a", b"a\rb"), "control character"),
        ((b"x\xe9", b"v"), "is not a token"),
        ((b"x a", b"v"), "is not a token"),
    ],
)
def test_request_headers_refused_with_400_as_kube_apiserver_would_or_as_unrecordable(raw, words):
    from kube.status import GatewayError

    with pytest.raises(GatewayError) as refused:
        hdr.request_headers([raw])
    assert refused.value.code == 400 and words in refused.value.message
    assert b"caf" not in refused.value.body()  # the value itself is never echoed


class CountingToken:
    """Stands in for the token pattern, counting the names checked."""

    def __init__(self, pattern):
        self.pattern, self.checked = pattern, []

    def fullmatch(self, name):
        self.checked.append(name)
        return self.pattern.fullmatch(name)


def test_a_header_name_seen_before_is_not_checked_again_and_a_bad_one_always_is(monkeypatch):
    token = CountingToken(hdr._TOKEN)
    monkeypatch.setattr(hdr, "_TOKEN", token)
    monkeypatch.setattr(hdr, "_NAMES", {})
    raw = [(b"Accept", b"application/json"), (b"User-Agent", b"kubectl")]
    assert hdr.request_headers(raw) == [("accept", "application/json"), ("user-agent", "kubectl")]
    assert hdr.request_headers(raw) == [("accept", "application/json"), ("user-agent", "kubectl")]
    assert token.checked == ["accept", "user-agent"]
    for _ in range(2):
        with pytest.raises(hdr.GatewayError) as refused:
            hdr.request_headers([(b"bad name", b"x")])
        assert refused.value.code == 400
    assert token.checked.count("bad name") == 2


def test_the_header_names_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(hdr, "_NAMES", {})
    for i in range(hdr.NAMES_MAX + 10):
        assert hdr.request_headers([(f"X-Custom-{i}".encode(), b"v")]) == [(f"x-custom-{i}", "v")]
    assert len(hdr._NAMES) == hdr.NAMES_MAX


def test_response_headers_without_a_connection_header_keep_every_end_to_end_field():
    out = hdr.response_headers([(b"Content-Length", b"10"), (b"Audit-Id", b"1"), (b"Keep-Alive", b"timeout=5"),
                                (b"Content-Type", b"application/json")])
    assert out == [(b"audit-id", b"1"), (b"content-type", b"application/json")]


def test_every_control_character_but_tab_is_refused_in_a_value_and_nothing_else_is():
    from kube.status import GatewayError

    for code in [*range(0x00, 0x80), 0xA0, 0x85, 0x2028, 0xFEFF, 0x1F600]:
        value = f"Bearer a{chr(code)}b"
        if code < 0x20 and code != 0x09 or code == 0x7F:
            with pytest.raises(GatewayError, match="control character"):
                hdr.request_headers([(b"authorization", value.encode())])
        else:
            assert hdr.request_headers([(b"authorization", value.encode())]) == [("authorization", value)]


def test_an_accept_header_seen_before_is_narrowed_once():
    before = hdr.json_accept.cache_info()
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;q=0.9,application/yaml"
    assert hdr.json_accept(accept) == "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;q=0.9"
    assert hdr.json_accept(accept) == "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;q=0.9"
    assert hdr.json_accept.cache_info().hits >= before.hits + 1
