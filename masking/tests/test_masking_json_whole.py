"""JsonMasker.whole (a small body masked in one decode) gives what feed() then close() give, or their error."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kube.requestinfo import parse
from masking import Detectors, MaskingError, SecretValues, response_masker

VALUE = "Tr0ub4dor-3-horse-battery"
VALUES = SecretValues.build([("shop", "db", [VALUE.encode()])])
REQUESTS = [parse("GET", "/api/v1/namespaces/shop/configmaps/app", ""),
            parse("GET", "/api/v1/namespaces/shop/secrets/db", ""),
            parse("GET", "/api/v1/namespaces/shop/pods/web", ""),
            parse("GET", "/api/v1/namespaces/shop/configmaps", "")]


def masker(info, mask_secrets=True, values=None):
    return response_masker(info, 200, "application/json", mask_secrets=mask_secrets, detectors=Detectors.default(),
                           values=values)


def both(body: bytes, info, **options):
    """(whole's answer, feed+close's answer): the output, or the MaskingError's message."""
    answers = []
    for run in (lambda m: m.whole(body), lambda m: m.feed(body) + m.close()):
        m = masker(info, **options)
        try:
            answers.append((run(m), m.report.counts))
        except MaskingError as exc:
            answers.append(("error", str(exc)))
    return answers


CONFIGMAP = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "app", "namespace": "shop",
             "annotations": {"note": "password=hunter2hunter2"}},
             "data": {"DATABASE_URL": "postgres://app:s3cr3t-pw@db:5432/app", "copied": VALUE, "plain": "x"}}
SECRET = {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "db", "namespace": "shop"},
          "data": {"password": "aHVudGVyMg=="}, "stringData": {"token": "abc"}, "type": "Opaque"}
LIST = {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {}, "items": [CONFIGMAP, CONFIGMAP]}


@pytest.mark.parametrize("body", [
    json.dumps(CONFIGMAP).encode(), json.dumps(CONFIGMAP).encode() + b"\n", json.dumps(SECRET, indent=2).encode() + b"\n\n",
    b"  \n" + json.dumps(SECRET).encode() + b" \r\n ", json.dumps(LIST).encode() + b"\n",
    json.dumps({"kind": "Table", "rows": [{"cells": ["password=hunter2hunter2"]}]}).encode(),
    b'{"kind":"ConfigMap","data":{"a":"1"},"data":{"b":"' + VALUE.encode() + b'"}}',  # the last duplicate wins
    b'{"kind":"Status","message":"token ' + VALUE.encode() + b'"}\n', b"[1, 2, {\"a\": \"b\"}]", b'"text"', b"42",
    b"", b"   ", b"\xef\xbb\xbf{}", b'{"a": 1} {"b": 2}', b'{"a": 1', b'{"a": NaN}', b'{"a": 1e999}', b'{"a": "\xff"}',
    b'{"a": "\\ud800"}', b'{"a\tb": 1}', b"[" * 5000 + b"]" * 5000, b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b"{}\n", b"{}x",
])
@pytest.mark.parametrize("info", REQUESTS)
@pytest.mark.parametrize("options", [{}, {"values": VALUES}, {"mask_secrets": False}])
def test_whole_is_feed_then_close(body, info, options):
    whole, incremental = both(body, info, **options)
    assert whole == incremental


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", VALUE, "password=hunter2hunter2", "caf\u00e9", "Secret", "ConfigMap", "\u2028"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["kind", "data", "stringData", "metadata", "annotations", "message", "items", "rows", "x"]),
        inner, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from(["", "\n", " \n\t", "\r\n"]), st.sampled_from(REQUESTS), st.booleans())
def test_whole_is_feed_then_close_for_any_document(value, trailing, info, with_values):
    body = (json.dumps(value) + trailing).encode()
    whole, incremental = both(body, info, values=VALUES if with_values else None)
    assert whole == incremental


def test_nothing_may_be_fed_after_whole():
    m = masker(REQUESTS[0])
    m.whole(json.dumps(CONFIGMAP).encode())
    with pytest.raises(MaskingError):
        m.feed(b"{}")


def test_a_small_document_is_decoded_once_by_the_fast_decoder(monkeypatch):
    from masking import jsonstream

    class Recording:
        def __init__(self, decoder):
            self.decoder, self.calls = decoder, 0

        def raw_decode(self, *args):
            self.calls += 1
            return self.decoder.raw_decode(*args)

    stdlib = Recording(jsonstream._DECODER)
    monkeypatch.setattr(jsonstream, "_DECODER", stdlib)
    body = json.dumps(CONFIGMAP).encode() + b"\n"
    out = masker(REQUESTS[0], values=VALUES).whole(body)
    assert stdlib.calls == 0
    assert VALUE.encode() not in out and b"s3cr3t-pw" not in out and out.endswith(b"}\n")
    # What the fast decoder refuses (a lone surrogate escape) is still read, by the incremental path.
    assert json.loads(masker(REQUESTS[0]).whole(b'{"a": "\\ud800"}')) == {"a": "\ud800"}
    assert stdlib.calls > 0
