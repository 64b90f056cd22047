"""The ObjectMasker's streamed batches mask exactly as one element at a time.

A list response is masked in batches (``ObjectMasker.list_items``: one item kind per batch, the
Secret values looked for once in the batch's encoding).  Over generated objects of hostile
shapes (kinds that lie or are not strings, ``data`` that is not a map, ``null`` values,
last-applied annotations that are not JSON, too deep, not objects, Secrets nested in lists and
in annotations, workloads, Status, Tables, events) the batch path leaves the same objects and
counts as ``list_item`` for each, and a list body comes out byte for byte as it does one element
at a time, in any chunking.
"""

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kube.requestinfo import parse
from masking import Detectors, SecretValues, jsonstream, response_masker
from masking.objects import LAST_APPLIED, ObjectMasker

PASSWORD = "s3cr3t-db-password-4f9a"
VALUES = SecretValues.build([("shop", "app", [PASSWORD.encode(), b"tok-00042-Zq8Lw2Rt"])])

TEXT = st.sampled_from([
    "", "plain", PASSWORD, "password=hunter2-x9", "Bearer abcdefghijklmnop1234",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "postgres://u:" + PASSWORD + "@db/x", "czNjcjN0LWRiLXBhc3N3b3JkLTRmOWE=", "AKIAIOSFODNN7EXAMPLE",
]) | st.text(max_size=8)
SCALAR = st.none() | st.booleans() | st.integers(-5, 5) | TEXT
JUNK = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(TEXT, inner, max_size=2),
                    max_leaves=4)
KIND = st.sampled_from([
    "Secret", "SecretList", "List", "ConfigMap", "ConfigMapList", "Pod", "Deployment", "CronJob", "Event", "Status",
    "Table", "TokenRequest", "PartialObjectMetadata", "PartialObjectMetadataList", "Widget", "",
]) | st.none() | st.integers(0, 1) | st.just(["Secret"])
SECRET_MAP = st.dictionaries(st.sampled_from(["DB_PASSWORD", "username", "token", "k", "tls.crt"]) | TEXT,
                             st.none() | TEXT | JUNK, max_size=3)
NOT_JSON = st.sampled_from([
    "{", "[1]", "null", '"x"', "7", '{"kind":"Secret","data":{"a":"b"}} x', "[" * 300 + "]" * 300,
    '{"kind":"Secret","stringData":{"a":' + "[" * 300 + "]" * 300 + "}}", '{"a":NaN,"data":{"a":"b"}}',
    '{"data":{"a":"b"},"n":1e400}', '{"data":{"a":"\\ud800"}}', '{"data":{"a":"b"},"data":{"c":"d"}}',
    '{"kind":"Secret","data":{"k":"x"},"f":1.5e300}', "password=hunter2-x9",
])


def _container(text):
    probe = st.fixed_dictionaries({}, optional={
        "exec": st.fixed_dictionaries({}, optional={"command": st.lists(TEXT, max_size=3) | JUNK}),
        "httpGet": st.fixed_dictionaries({}, optional={"httpHeaders": st.lists(st.fixed_dictionaries(
            {}, optional={"name": st.sampled_from(["Authorization", "X-Api-Key", "Accept"]) | JUNK,
                          "value": text | JUNK}), max_size=2) | JUNK}),
    })
    return st.fixed_dictionaries({}, optional={
        "name": text,
        "env": st.lists(st.fixed_dictionaries({}, optional={"name": st.sampled_from(["DB_PASSWORD", "MODE"]) | JUNK,
                                                             "value": text | JUNK}), max_size=3) | JUNK,
        "command": st.lists(text | JUNK, max_size=3) | JUNK,
        "args": st.lists(st.sampled_from(["--password", "--mode"]) | text, max_size=3),
        "livenessProbe": probe, "readinessProbe": probe,
        "lifecycle": st.fixed_dictionaries({}, optional={"postStart": probe, "preStop": probe}) | JUNK,
    }) | JUNK


def _objects(children):
    manifest = st.builds(lambda o, nl: json.dumps(o) + nl, children, st.sampled_from(["", "\n"]))
    annotations = st.dictionaries(st.sampled_from([LAST_APPLIED, "note", "password", "x"]) | TEXT,
                                  manifest | NOT_JSON | SCALAR, max_size=3)
    metadata = st.fixed_dictionaries({}, optional={
        "name": TEXT, "annotations": annotations | JUNK, "managedFields": JUNK, "labels": JUNK,
    }) | JUNK
    pod_spec = st.fixed_dictionaries({}, optional={
        "containers": st.lists(_container(TEXT), max_size=2) | JUNK,
        "initContainers": st.lists(_container(TEXT), max_size=1),
    }) | JUNK
    template = st.fixed_dictionaries({}, optional={"metadata": metadata, "spec": pod_spec}) | JUNK
    spec = pod_spec | st.fixed_dictionaries({}, optional={
        "template": template, "jobTemplate": st.fixed_dictionaries({}, optional={
            "metadata": metadata, "spec": st.fixed_dictionaries({}, optional={"template": template})}),
    })
    message = st.fixed_dictionaries({}, optional={"message": TEXT | JUNK})
    status = st.fixed_dictionaries({}, optional={
        "message": TEXT | JUNK, "token": TEXT | JUNK, "conditions": st.lists(message, max_size=2) | JUNK,
        "containerStatuses": st.lists(st.fixed_dictionaries({}, optional={
            "state": st.fixed_dictionaries({}, optional={"terminated": message, "waiting": message}),
            "lastState": st.fixed_dictionaries({}, optional={"terminated": message})}), max_size=2),
    }) | JUNK
    rows = st.lists(st.fixed_dictionaries({}, optional={"cells": st.lists(TEXT | JUNK, max_size=3) | JUNK,
                                                        "object": children}) | JUNK, max_size=2)
    return st.fixed_dictionaries({}, optional={
        "kind": KIND, "apiVersion": st.just("v1"), "metadata": metadata,
        "data": SECRET_MAP | JUNK, "stringData": SECRET_MAP | JUNK, "binaryData": SECRET_MAP | JUNK,
        "items": st.lists(children, max_size=3) | JUNK, "rows": rows | JUNK,
        "spec": spec, "template": template, "status": status, "message": TEXT | JUNK, "note": TEXT | JUNK,
        "details": st.fixed_dictionaries({}, optional={"causes": st.lists(message, max_size=2) | JUNK}),
        "type": TEXT, "object": children,
    })


OBJECTS = st.recursive(JUNK, _objects, max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OBJECTS, max_size=6), st.sampled_from(["SecretList", "List", "ConfigMapList", "Widget"]))
def test_list_items_is_list_item_for_each(items, list_kind):
    one = ObjectMasker(mask_secrets=True, detectors=Detectors.default())
    batch = ObjectMasker(mask_secrets=True, detectors=Detectors.default())
    expected = copy.deepcopy(items)
    for item in expected:
        one.list_item(item, list_kind)
    batch.list_items(items, list_kind)
    assert json.dumps(items) == json.dumps(expected)
    assert list(batch.report.counts.items()) == list(one.report.counts.items())


def _secret_item(i, manifest):
    return {"metadata": {"name": f"app-{i}", "namespace": "shop", "resourceVersion": str(i),
                         "annotations": {LAST_APPLIED: manifest}, "managedFields": [{"manager": "kubectl"}]},
            "data": {"DB_PASSWORD": "czNjcjN0LWRiLXBhc3N3b3JkLTRmOWE=", "user": "c2hvcA=="}, "type": "Opaque"}


def _mask(body, path, chunk, values):
    masker = response_masker(parse("GET", path, ""), 200, "application/json", mask_secrets=True,
                             detectors=Detectors.default(), values=values)
    try:
        out = b"".join(masker.feed(body[i : i + chunk]) for i in range(0, len(body), chunk)) + masker.close()
    except Exception as exc:
        return type(exc).__name__, None
    return out, masker.report.counts  # (batches count Secret values after their elements: order differs)


def _one_at_a_time(body, path, values):
    """The body masked one element at a time (no streamed batches)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonstream.JsonMasker, "_batch", lambda self, final: None)
        return _mask(body, path, 1 << 30, values)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OBJECTS | st.builds(_secret_item, st.integers(0, 99), NOT_JSON | st.builds(
           lambda o: json.dumps(o) + "\n", OBJECTS)), max_size=40),
       st.sampled_from(["SecretList", "List", "ConfigMapList"]),
       st.sampled_from(["/api/v1/secrets", "/api/v1/namespaces/shop/configmaps", "/apis/example.com/v1/widgets"]),
       st.booleans())
def test_a_list_body_comes_out_byte_for_byte_in_batches_as_one_at_a_time(items, kind, path, with_values):
    values = VALUES if with_values else None
    body = json.dumps({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "9"}, "items": items},
                      separators=(",", ":")).encode()
    expected = _one_at_a_time(body, path, values)
    for chunk in (997, 64 * 1024):
        assert _mask(body, path, chunk, values) == expected
