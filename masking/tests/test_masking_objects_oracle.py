"""masking/objects.py against its frozen former self (masking/tests/objects_reference.py).

The ObjectMasker runs once per list element, so it takes shortcuts (membership tests before
calls, one item kind per batch, counts updated in place).  None of them may change what is
masked: over generated objects of hostile shapes (kinds that lie or are not strings, ``data``
that is not a map, ``null`` values, last-applied annotations that are not JSON, too deep, not
objects, Secrets nested in lists and in annotations, workloads, Status, Tables, events) every
entry point must leave the same object, with the same keys in the same order, and report the
same counts as the reference.  End to end, a response body must come out byte for byte as the
reference masker sends it one element at a time.
"""

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kube.requestinfo import parse
from masking import Detectors, SecretValues, jsonstream, response_masker
from masking import responses as responses_module
from masking.objects import LAST_APPLIED, ObjectMasker
from masking.tests import objects_reference

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
PATHS = (
    "/api/v1/secrets", "/api/v1/namespaces/shop/secrets/app", "/api/v1/namespaces/shop/configmaps",
    "/api/v1/pods", "/api/v1/namespaces/shop/serviceaccounts/sa/token", "/apis/apps/v1/deployments",
    "/api/v1/events", "/apis/example.com/v1/widgets",
)
ENTRIES = ("document", "event", "list_item", "table_row", "object", "force_secret")
DETECTORS = {"default": Detectors.default(), "none": Detectors.none(),
             "keyword": Detectors.from_config({"enabled": ["keyword"]})}


def _run(cls, path, mask_secrets, detectors, entry, list_kind, value):
    masker = cls.for_request(parse("GET", path, ""), mask_secrets=mask_secrets, detectors=DETECTORS[detectors])
    try:
        if entry == "document":
            masker.document(value)
        elif entry == "event":
            masker.event(value)
        elif entry == "list_item":
            masker.list_item(value, list_kind)
        elif entry == "table_row":
            masker.table_row(value)
        else:
            masker.object(value, list_kind[:-4], force_secret=entry == "force_secret")
    except Exception as exc:  # the same failure, or none
        return type(exc).__name__, None, None
    return None, json.dumps(value), list(masker.report.counts.items())


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OBJECTS, st.sampled_from(PATHS), st.booleans(), st.sampled_from(sorted(DETECTORS)), st.sampled_from(ENTRIES),
       st.sampled_from(["SecretList", "List", "ConfigMapList", "PodList", "StatusList", "Widget"]))
def test_every_entry_point_masks_as_the_reference(value, path, mask_secrets, detectors, entry, list_kind):
    expected = _run(objects_reference.ObjectMasker, path, mask_secrets, detectors, entry, list_kind,
                    copy.deepcopy(value))
    assert _run(ObjectMasker, path, mask_secrets, detectors, entry, list_kind, copy.deepcopy(value)) == expected


_HIT = "password=hunter2-x9"
_CONTAINER = {"name": "c", "env": [{"name": "DB_PASSWORD", "value": _HIT}, {"name": "X", "value": PASSWORD}],
              "command": ["sh", "--password", "pw123456"], "args": [_HIT],
              "livenessProbe": {"exec": {"command": [_HIT]},
                                "httpGet": {"httpHeaders": [{"name": "Authorization", "value": "x"}]}},
              "lifecycle": {"preStop": {"exec": {"command": [_HIT]}}}}
_POD_SPEC = {"containers": [_CONTAINER], "initContainers": [_CONTAINER], "ephemeralContainers": [_CONTAINER]}
_ANNOTATED = {"annotations": {"note": _HIT, LAST_APPLIED: json.dumps({"kind": "Secret", "data": {"k": "eA=="}})}}
# Shapes each field masker is reached by, alone and with the others (generated objects reach a
# nested field only now and then).
SHAPES = [
    {"data": {"a": "eA==", "b": None}},
    {"stringData": {"a": "x"}},
    {"stringData": "x", "data": ["x"]},
    {"data": None, "stringData": 0},
    {"kind": "Secret", "metadata": {"annotations": {LAST_APPLIED: "{"}}},
    {"kind": "Secret", "metadata": {"annotations": {LAST_APPLIED: json.dumps({"stringData": {"a": "x"}}) + "\n"}}},
    {"kind": "ConfigMap", "metadata": {"annotations": {LAST_APPLIED: json.dumps({"data": {"a": _HIT}})}}},
    {"kind": "ConfigMap", "metadata": {"annotations": {LAST_APPLIED: "[" * 200 + "]" * 200}}},
    {"kind": "ConfigMap", "metadata": {"annotations": {LAST_APPLIED: "[" * 257 + "]" * 257, "x": "[" * 300}}},
    {"kind": "Secret", "metadata": {"annotations": {LAST_APPLIED: '{"data":{"a":"' + "[" * 300 + '"}}'}}},
    {"kind": "ConfigMap", "data": {"password": "x", "k": _HIT}, "binaryData": {"password": "eA==", "k": "!"}},
    {"kind": "Pod", "metadata": _ANNOTATED, "spec": _POD_SPEC},
    {"kind": "Deployment", "template": {"metadata": _ANNOTATED, "spec": _POD_SPEC}},
    {"kind": "Deployment", "spec": {"template": {"metadata": _ANNOTATED, "spec": _POD_SPEC}}},
    {"kind": "CronJob", "spec": {"jobTemplate": {"metadata": _ANNOTATED, "spec": {
        "template": {"metadata": _ANNOTATED, "spec": _POD_SPEC}}}}},
    {"kind": "Pod", "status": {"message": _HIT, "conditions": [{"message": _HIT}], "containerStatuses": [
        {"state": {"terminated": {"message": _HIT}}, "lastState": {"waiting": {"message": _HIT}}}]}},
    {"status": {"message": _HIT}, "data": {"a": "eA=="}},
    {"kind": "Status", "message": _HIT, "details": {"causes": [{"message": _HIT}]}, "data": {"a": "x"}},
    {"kind": "Event", "message": _HIT, "note": _HIT, "metadata": _ANNOTATED},
    {"kind": "TokenRequest", "status": {"token": "t0ken-value-x"}},
    {"kind": "PartialObjectMetadata", "metadata": _ANNOTATED},
    {"kind": "Table", "rows": [{"cells": [_HIT, 1], "object": {"metadata": _ANNOTATED, "data": {"a": "x"}}}]},
    {"kind": "SecretList", "items": [{"data": {"a": "x"}, "metadata": _ANNOTATED}, {"kind": "ConfigMap"}]},
    {"kind": "List", "items": [{"kind": "Secret", "data": {"a": "x"}}, {"data": {"a": "x"}}, 1]},
    {"items": [{"data": {"a": "x"}}], "metadata": _ANNOTATED, "data": {"b": "y"}},
    {"type": "ADDED", "object": {"kind": "Secret", "data": {"a": "x"}, "metadata": _ANNOTATED}},
    {"cells": [_HIT], "object": {"data": {"a": "x"}}},
]


@pytest.mark.parametrize("value", SHAPES)
def test_every_shape_masks_as_the_reference(value):
    for path in PATHS:
        for mask_secrets in (True, False):
            for detectors in DETECTORS:
                for entry in ENTRIES:
                    for list_kind in ("SecretList", "List", "PodList"):
                        args = (path, mask_secrets, detectors, entry, list_kind)
                        expected = _run(objects_reference.ObjectMasker, *args, copy.deepcopy(value))
                        assert _run(ObjectMasker, *args, copy.deepcopy(value)) == expected, args


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


def _reference(body, path, values):
    """The body masked one element at a time by the reference ObjectMasker."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(responses_module, "ObjectMasker", objects_reference.ObjectMasker)
        patch.setattr(jsonstream.JsonMasker, "_batch", lambda self, final: None)
        return _mask(body, path, 1 << 30, values)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OBJECTS | st.builds(_secret_item, st.integers(0, 99), NOT_JSON | st.builds(
           lambda o: json.dumps(o) + "\n", OBJECTS)), max_size=40),
       st.sampled_from(["SecretList", "List", "ConfigMapList"]),
       st.sampled_from(["/api/v1/secrets", "/api/v1/namespaces/shop/configmaps", "/apis/example.com/v1/widgets"]),
       st.booleans())
def test_a_list_body_comes_out_byte_for_byte_as_the_reference_sends_it(items, kind, path, with_values):
    values = VALUES if with_values else None
    body = json.dumps({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "9"}, "items": items},
                      separators=(",", ":")).encode()
    expected = _reference(body, path, values)
    for chunk in (997, 64 * 1024):
        assert _mask(body, path, chunk, values) == expected
