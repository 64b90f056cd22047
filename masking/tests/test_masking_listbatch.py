"""Streamed lists decoded in batches (masking/jsonstream.py ``_batch``, kube/jsonfast.py).

The batch path must send exactly what the one-by-one path sends.  The oracle: the same body
masked with batches turned off, one element at a time through the stdlib decoder as before.  The
bodies are what an attacker who can create objects (or run a hostile aggregated API server)
would try against a masker that splices raw bytes: odd key orders, escaped keys, repeated keys,
Secrets nested in lists or hidden among other kinds, copies of values, text that looks like an
element boundary, numbers that change when re-encoded.
"""

import base64
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kube import jsonfast
from kube.requestinfo import parse
from masking import PLACEHOLDER, PLACEHOLDER_B64, Detectors, MaskingError, SecretValues, response_masker
from masking import jsonstream
from masking.objects import LAST_APPLIED

PASSWORD = "s3cr3t-db-password-4f9a"
TOKEN = "tok-00042-Zq8Lw2Rt"
VALUES = SecretValues.build([("shop", "app", [PASSWORD.encode(), TOKEN.encode()])])
CHUNKS = (1, 7, 100, 4096, 64 * 1024, 1 << 30)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def leaks(out: bytes) -> list[str]:
    forms = {PASSWORD: [PASSWORD, b64(PASSWORD)], TOKEN: [TOKEN, b64(TOKEN)]}
    return [value for value, spellings in forms.items() for s in spellings if s.encode() in out]


def mask(body: bytes, chunk: int, path="/api/v1/secrets", values=VALUES) -> tuple[bytes, dict]:
    masker = response_masker(parse("GET", path, ""), 200, "application/json", mask_secrets=True,
                             detectors=Detectors.default(), values=values)
    out = b"".join(masker.feed(body[i : i + chunk]) for i in range(0, len(body), chunk)) + masker.close()
    return out, masker.report.counts


def compact(doc) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def one_by_one(body: bytes, path="/api/v1/secrets") -> tuple[bytes, dict]:
    """What the one-by-one path (the masker before batches) sends for ``body``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonstream.JsonMasker, "_batch", lambda self, final: None)
        return mask(body, 1 << 30, path)


def secret_item(i: int, **extra) -> dict:
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"app-{i}", "namespace": "shop"},
                "stringData": {"DB_PASSWORD": PASSWORD}, "type": "Opaque"}
    item = {"metadata": {"name": f"app-{i}", "namespace": "shop", "resourceVersion": str(i),
                         "annotations": {LAST_APPLIED: json.dumps(manifest) + "\n", "note": "password=hunter2-x9"},
                         "managedFields": [{"manager": "a", "fieldsV1": {"f:data": {}}},
                                           {"manager": "b", "fieldsV1": {"f:type": {}}}]},
            "data": {"DB_PASSWORD": b64(PASSWORD), "TOKEN": b64(TOKEN)}, "type": "Opaque"}
    item.update(extra)
    return item


def secret_list(items: list) -> dict:
    return {"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "9"}, "items": items}


def mixed_list(items: list) -> dict:
    return {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}


def configmap(i: int, **data) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c-{i}", "namespace": "shop"},
            "data": data or {"level": "info"}}


def assert_same_as_one_by_one(body: bytes, path="/api/v1/secrets"):
    expected, counts = one_by_one(body, path)
    for chunk in CHUNKS:
        assert mask(body, chunk, path) == (expected, counts), chunk
    return expected, counts


def test_a_compact_list_is_decoded_in_batches_not_one_by_one(monkeypatch):
    calls = []
    real = jsonstream._DECODER

    class Counting:
        def raw_decode(self, text, pos):
            calls.append(pos)
            return real.raw_decode(text, pos)

    monkeypatch.setattr(jsonstream, "_DECODER", Counting())
    body = compact(secret_list([secret_item(i) for i in range(200)]))
    out, counts = mask(body, 64 * 1024)
    assert counts["secret-data"] == 400 and not leaks(out)
    assert len(calls) <= 10  # the last element and one per chunk at most, not 200


def test_a_secret_list_masks_as_before_at_every_chunk_size():
    body = compact(secret_list([secret_item(i) for i in range(60)]))
    out, counts = assert_same_as_one_by_one(body)
    doc = json.loads(out)
    assert all(item["data"] == {"DB_PASSWORD": PLACEHOLDER_B64, "TOKEN": PLACEHOLDER_B64} for item in doc["items"])
    manifest = json.loads(doc["items"][0]["metadata"]["annotations"][LAST_APPLIED])
    assert manifest["stringData"] == {"DB_PASSWORD": PLACEHOLDER}
    assert not leaks(out) and b"hunter2-x9" not in out
    assert counts["secret-data"] == 120


def test_odd_key_orders_and_a_kind_after_the_data():
    items = [{"data": {"k": b64(PASSWORD)}, "kind": "Secret", "metadata": {"name": f"s{i}"}, "apiVersion": "v1"}
             for i in range(20)]
    items.insert(7, {"data": {"k": b64(PASSWORD)}, "metadata": {"name": "cm"}, "kind": "ConfigMap"})
    out, counts = assert_same_as_one_by_one(compact(mixed_list(items)), "/api/v1/namespaces/shop/configmaps")
    assert not leaks(out) and counts["secret-data"] == 20


def test_escaped_keys_are_the_keys_they_spell():
    item = '{"metadata":{"name":"e%d"},"d\\u0061ta":{"k":"%s"},"\\u0073tringData":{"p":"%s"}}'
    body = ('{"kind":"SecretList","apiVersion":"v1","metadata":{},"items":['
            + ",".join(item % (i, b64(PASSWORD), PASSWORD) for i in range(30)) + "]}").encode()
    out, counts = assert_same_as_one_by_one(body)
    assert not leaks(out) and b"\\u0061" not in out
    assert counts["secret-data"] == 30 and counts["secret-stringData"] == 30


def test_repeated_keys_collapse_to_the_last_as_before():
    item = ('{"metadata":{"name":"d%d"},"data":{"a":"%s"},"data":{"b":"%s"},'
            '"kind":"ConfigMap","kind":"Secret"}')
    body = ('{"kind":"List","apiVersion":"v1","metadata":{},"items":['
            + ",".join(item % (i, b64(PASSWORD), b64(TOKEN)) for i in range(30)) + "]}").encode()
    out, _ = assert_same_as_one_by_one(body, "/api/v1/namespaces/shop/configmaps")
    assert not leaks(out)
    assert all(list(item) == ["metadata", "data", "kind"] and item["data"] == {"b": PLACEHOLDER_B64}
               for item in json.loads(out)["items"])


def test_secrets_in_nested_lists_whose_elements_look_like_list_elements():
    inner = [{"metadata": {"name": f"n{j}"}, "data": {"k": b64(PASSWORD)}} for j in range(3)]
    items = [{"metadata": {"name": f"l{i}"}, "kind": "SecretList", "items": inner} for i in range(20)]
    out, counts = assert_same_as_one_by_one(compact(mixed_list(items)), "/api/v1/namespaces/shop/configmaps")
    assert not leaks(out) and counts["secret-data"] == 60


def test_a_secret_hidden_among_other_kinds_and_copies_of_its_values():
    items = [configmap(i) for i in range(40)]
    items[13] = configmap(13, copied=PASSWORD, blob=b64(TOKEN), url=f"postgres://u:{PASSWORD}@db/x")
    items[21] = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hidden"}, "data": {"x": b64("zz-top-1")}}
    items[30] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                 "spec": {"containers": [{"name": "c", "env": [{"name": "DB", "value": TOKEN}]}]}}
    out, counts = assert_same_as_one_by_one(compact(mixed_list(items)), "/api/v1/namespaces/shop/configmaps")
    assert not leaks(out) and b64("zz-top-1").encode() not in out
    assert counts["secret-value"] >= 3 and counts["secret-data"] == 1


def test_text_that_looks_like_an_element_boundary_inside_strings():
    # The first key escaped: no head to guess with, so the guess is any "},{", also in strings.
    item = '{"\\u006b\\u0069nd":"Secret","metadata":{"name":"t%d","labels":{"a":"},{"}},"data":{"k":"%s"}}'
    trap = '{"kind":"ConfigMap","metadata":{"name":"trap"},"data":{"note":"},{},{\\"data\\":{},{"}}'
    body = ('{"kind":"List","apiVersion":"v1","metadata":{},"items":['
            + ",".join([item % (i, b64(PASSWORD)) for i in range(40)] + [trap] * 3) + "]}").encode()
    assert body.count(b"},{") > 80
    out, counts = assert_same_as_one_by_one(body, "/api/v1/namespaces/shop/configmaps")
    assert not leaks(out) and counts["secret-data"] == 40


def test_numbers_strings_and_escapes_survive_exactly():
    item = {"metadata": {"name": "n"}, "kind": "Widget",
            "spec": {"big": 123456789012345678901234567890, "neg": -9223372036854775809, "f": [1e21, 1.5, -0.0, 5e-324,
                     0.1, 1e16, 12345.678], "t": True, "z": None, "u": "é ☃ 𝄞 \u2028 <&> \x7f \x01 \\ \" /"}}
    out, _ = assert_same_as_one_by_one(compact(mixed_list([item] * 30)), "/apis/example.com/v1/widgets")
    assert out.isascii()
    assert b"1e+21" in out and b"123456789012345678901234567890" in out and b"\\u007f" in out
    assert json.loads(out)["items"][0] == item


def test_lone_surrogates_and_float_edges_go_one_by_one_and_still_mask():
    item = '{"metadata":{"name":"s%d","annotations":{"x":"\\ud800"}},"data":{"k":"%s"},"n":1E400}'
    body = ('{"kind":"SecretList","apiVersion":"v1","metadata":{},"items":['
            + ",".join(item % (i, b64(PASSWORD)) for i in range(5)) + "]}").encode()
    with pytest.raises(MaskingError):  # 1E400 is infinite: refused, in batches as one by one
        mask(body, 64 * 1024)
    ok = body.replace(b"1E400", b"1E300")
    out, counts = assert_same_as_one_by_one(ok)
    assert not leaks(out) and b"\\ud800" in out and counts["secret-data"] == 5


@pytest.mark.parametrize("broken", [b'{"metadata":{}}x', b'{"metadata":{},}', b'{"metadata":{"a":01}}', b"{]"])
def test_invalid_elements_inside_a_batch_fail_closed(broken):
    good = compact(secret_item(1))
    body = b'{"kind":"SecretList","apiVersion":"v1","metadata":{},"items":[' + b",".join(
        [good] * 10 + [broken] + [good] * 10) + b"]}"
    for chunk in (7, 64 * 1024):
        with pytest.raises(MaskingError):
            mask(body, chunk)


def test_an_element_nested_too_deeply_fails_closed_in_a_batch():
    deep = b'{"metadata":{"name":"d"},"spec":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    good = compact(secret_item(1))
    body = b'{"kind":"List","apiVersion":"v1","metadata":{},"items":[' + b",".join([good, deep, good]) + b"]}"
    with pytest.raises(MaskingError, match="nested too deeply"):
        mask(body, 64 * 1024)


# -- kube/jsonfast ----------------------------------------------------------------------------------

SAMPLES = [
    {"a": 1, "b": [1, 2, {"c": None}], "d": True},
    {"big": 2**100, "neg": -(2**70), "s": "é<>&\u2028\x7f\x00\t\n\"\\/"},
    ["\U0001d11e", "plain", "", {"": {}}],
    {"f": [1e21, 1.0, -0.0, 0.1, 5e-324, 1.7976931348623157e308, 1e-7, 123.456]},
]


@pytest.mark.parametrize("doc", SAMPLES)
def test_jsonfast_reads_and_writes_what_json_does(doc):
    text = json.dumps(doc)
    decoded = jsonfast.loads(text)
    assert decoded == json.loads(text)
    assert list(json.loads(text)) == list(decoded) if isinstance(decoded, dict) else True
    assert jsonfast.dumps(decoded) == json.dumps(json.loads(text), separators=(",", ":")).encode()


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", "1e400", '"\\ud800"', "[1,]", "01", '{"a" 1}', "[" * 5000])
def test_jsonfast_refuses_with_value_or_recursion_errors(text):
    with pytest.raises((ValueError, RecursionError)):
        jsonfast.loads(text)


def test_jsonfast_floats_are_finite_and_marked():
    value = jsonfast.loads("[1.5, 2]")
    assert type(value[0]) is jsonfast.FiniteFloat and type(value[1]) is int
    with pytest.raises(ValueError):
        jsonfast.finite_float("1e400")
    assert math.isfinite(jsonfast.finite_float("1e308"))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_jsonfast_writes_the_stdlib_bytes_for_any_value_it_reads(value):
    text = json.dumps(value, ensure_ascii=False)
    assert jsonfast.dumps(jsonfast.loads(text)) == json.dumps(json.loads(text), separators=(",", ":")).encode()
    assert jsonfast.dumps(jsonfast.loads(text.encode())) == jsonfast.dumps(jsonfast.loads(text))
