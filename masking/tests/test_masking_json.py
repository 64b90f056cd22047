"""JSON response masking: every response shape that can carry a Secret, chunking, fail-closed."""

import base64
import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kube.requestinfo import parse
from masking import PLACEHOLDER, PLACEHOLDER_B64, Detectors, MaskingError, response_masker
from masking.jsonstream import JsonMasker
from masking.objects import LAST_APPLIED, ObjectMasker

SEEDS = [
    "s3cr3t-db-password-4f9a",
    "sk_live_kubesim_51f0c2e9",
    "jwt-signing-key-b7d1",
    "m4il-p4ss-7c1e",
    "sa-token-deployer-8b2c",
    "kubesim-aws-secret-2d7f",
    "pay-db-pass-61c3",
]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forbidden(value: str) -> list[bytes]:
    """Every way a value can appear in a JSON body: plain, base64, inside escaped JSON."""
    return [value.encode(), b64(value).encode(), json.dumps(value).encode()[1:-1]]


def assert_clean(out: bytes):
    for seed in SEEDS:
        for form in forbidden(seed):
            assert form not in out, seed


def last_applied(manifest: dict) -> str:
    return json.dumps(manifest, separators=(",", ":")) + "\n"


def secret(name="shop-db", kind=True, password="s3cr3t-db-password-4f9a") -> dict:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"annotations": {}, "name": name, "namespace": "shop"},
        "stringData": {"DB_PASSWORD": password, "DB_USER": "shop"},
        "type": "Opaque",
    }
    obj = {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "resourceVersion": "12",
            "annotations": {LAST_APPLIED: last_applied(manifest), "owner": "team-a"},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:data": {"f:DB_PASSWORD": {}}}}],
        },
        "data": {"DB_PASSWORD": b64(password), "DB_USER": b64("shop")},
        "type": "Opaque",
    }
    if kind:
        obj = {"kind": "Secret", "apiVersion": "v1", **obj}
    return obj


def secret_list(n=3, kind="SecretList") -> dict:
    items = [secret(f"s{i}", kind=False, password=SEEDS[i % len(SEEDS)]) for i in range(n)]
    return {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "99"}, "items": items}


def partial_metadata(obj: dict) -> dict:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": copy.deepcopy(obj["metadata"])}


def table(rows_objects: list[dict]) -> dict:
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "99"},
        "columnDefinitions": [{"name": "Name", "type": "string"}, {"name": "Data", "type": "string"}],
        "rows": [{"cells": [o["metadata"]["name"], "2"], "object": o} for o in rows_objects],
    }


def info(method="GET", path="/api/v1/namespaces/shop/secrets", query=""):
    return parse(method, path, query)


def mask(body, request=None, *, cuts=(), status=200, mask_secrets=True, detectors=None, ctype="application/json"):
    """Run a body (dict/list or bytes) through response_masker, cut at ``cuts``."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    masker = response_masker(
        request or info(), status, ctype, mask_secrets=mask_secrets, detectors=detectors or Detectors.default()
    )
    assert masker is not None
    out, prev = [], 0
    for cut in sorted(set(cuts)) + [len(data)]:
        out.append(masker.feed(data[prev:cut]))
        prev = cut
    out.append(masker.close())
    return b"".join(out), masker.report


def decode_events(out: bytes) -> list:
    return [json.loads(line) for line in out.decode().splitlines()]


def assert_masked_secret(obj: dict):
    assert obj["data"] == {"DB_PASSWORD": PLACEHOLDER_B64, "DB_USER": PLACEHOLDER_B64}
    annotation = obj["metadata"]["annotations"][LAST_APPLIED]
    assert json.loads(annotation)["stringData"] == {"DB_PASSWORD": PLACEHOLDER, "DB_USER": PLACEHOLDER}
    assert annotation.endswith("\n")
    assert obj["metadata"]["annotations"]["owner"] == "team-a"
    assert obj["metadata"]["managedFields"][0]["fieldsV1"] == {"f:data": {"f:DB_PASSWORD": {}}}


# -- response shapes -----------------------------------------------------------------------


def test_placeholder_base64_decodes_to_the_placeholder():
    assert base64.b64decode(PLACEHOLDER_B64).decode() == PLACEHOLDER


def test_single_secret():
    out, report = mask(secret(), info(path="/api/v1/namespaces/shop/secrets/shop-db"))
    assert_clean(out)
    obj = json.loads(out)
    assert_masked_secret(obj)
    assert obj["type"] == "Opaque" and obj["metadata"]["name"] == "shop-db"
    assert report.counts == {"secret-data": 2, "secret-stringData": 2}


def test_secret_list_items_without_kind():
    out, report = mask(secret_list(5), info(path="/api/v1/secrets"))
    assert_clean(out)
    doc = json.loads(out)
    assert doc["kind"] == "SecretList" and doc["metadata"] == {"resourceVersion": "99"}
    for item in doc["items"]:
        assert_masked_secret(item)
    assert report.counts["secret-data"] == 10


def test_list_is_streamed_item_by_item():
    data = json.dumps(secret_list(4)).encode()
    masker = response_masker(info(), 200, "application/json", mask_secrets=True, detectors=Detectors.default())
    early = masker.feed(data[:-40])
    assert early.startswith(b'{"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":"99"},"items":[')
    assert early.count(PLACEHOLDER_B64.encode()) == 6  # three complete items of four
    rest = masker.feed(data[-40:]) + masker.close()
    assert json.loads(early + rest)["items"][3]["data"]["DB_PASSWORD"] == PLACEHOLDER_B64


def test_secrets_detected_by_kind_in_a_mixed_list_from_any_endpoint():
    cm = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c"}, "data": {"app.properties": "smtp.password=m4il-p4ss-7c1e\nlevel=info"}}
    body = {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": [secret(), cm]}
    out, report = mask(body, info(path="/api/v1/namespaces/shop/configmaps"))
    assert_clean(out)
    doc = json.loads(out)
    assert_masked_secret(doc["items"][0])
    assert doc["items"][1]["data"]["app.properties"] == f"smtp.password={PLACEHOLDER}\nlevel=info"
    assert report.counts["keyword"] == 1


def test_table_rows_in_partial_object_metadata_form():
    body = table([partial_metadata(secret(f"s{i}", password=SEEDS[i])) for i in range(3)])
    out, _ = mask(body, info(path="/api/v1/namespaces/shop/secrets"))
    assert_clean(out)
    for row in json.loads(out)["rows"]:
        annotation = json.loads(row["object"]["metadata"]["annotations"][LAST_APPLIED])
        assert annotation["stringData"]["DB_PASSWORD"] == PLACEHOLDER


def test_table_rows_with_include_object():
    body = table([secret(f"s{i}", password=SEEDS[i]) for i in range(3)])
    out, _ = mask(body, info(path="/api/v1/namespaces/shop/secrets", query="includeObject=Object"))
    assert_clean(out)
    for row in json.loads(out)["rows"]:
        assert_masked_secret(row["object"])
        assert row["cells"][1] == "2"


def test_table_row_object_without_kind_for_a_secrets_request():
    row_object = secret()
    del row_object["kind"]
    out, _ = mask(table([row_object]), info())
    assert_clean(out)


def test_partial_object_metadata_list():
    body = {
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "items": [partial_metadata(secret())],
    }
    out, _ = mask(body, info())
    assert_clean(out)
    annotations = json.loads(out)["items"][0]["metadata"]["annotations"]
    assert json.loads(annotations[LAST_APPLIED])["stringData"]["DB_PASSWORD"] == PLACEHOLDER


def test_unparsable_last_applied_of_a_secret_is_replaced_whole():
    obj = partial_metadata(secret())
    obj["metadata"]["annotations"][LAST_APPLIED] = "apiVersion: v1\nstringData: {p: s3cr3t-db-password-4f9a}"
    out, report = mask(obj, info(path="/api/v1/namespaces/shop/secrets/x"))
    assert_clean(out)
    assert json.loads(out)["metadata"]["annotations"][LAST_APPLIED] == PLACEHOLDER
    assert report.counts == {"last-applied-configuration": 1}


def test_secret_shapes_without_data():
    obj = {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "x"}, "data": {"empty": None}, "stringData": {"k": "s3cr3t-db-password-4f9a"}}
    out, report = mask(obj)
    doc = json.loads(out)
    assert doc["data"] == {"empty": None} and doc["stringData"] == {"k": PLACEHOLDER}
    assert report.counts == {"secret-stringData": 1}
    out, report = mask({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "x"}, "type": "Opaque"})
    assert report.counts == {}


def test_malformed_secret_data_is_replaced_whole():
    out, _ = mask({"kind": "Secret", "apiVersion": "v1", "metadata": {}, "data": ["s3cr3t-db-password-4f9a"]})
    assert json.loads(out)["data"] == PLACEHOLDER_B64


def test_object_without_kind_holding_data_is_treated_as_a_secret():
    body = {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": [{"metadata": {"name": "x"}, "data": {"p": b64("s3cr3t-db-password-4f9a")}}]}
    out, _ = mask(body, info(path="/apis/example.com/v1/things"))
    assert_clean(out)


WRITE_REQUESTS = [
    ("POST", "/api/v1/namespaces/shop/secrets", ""),
    ("POST", "/api/v1/namespaces/shop/secrets", "dryRun=All"),
    ("PUT", "/api/v1/namespaces/shop/secrets/shop-db", ""),
    ("PATCH", "/api/v1/namespaces/shop/secrets/shop-db", "fieldManager=kubectl&force=true"),
    ("DELETE", "/api/v1/namespaces/shop/secrets/shop-db", ""),
]


@pytest.mark.parametrize(("method", "path", "query"), WRITE_REQUESTS)
def test_write_and_delete_responses_return_the_object(method, path, query):
    out, _ = mask(secret(), info(method, path, query), status=201 if method == "POST" else 200)
    assert_clean(out)
    assert_masked_secret(json.loads(out))


def test_delete_answered_with_a_status():
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": "shop-db", "kind": "secrets"}}
    out, report = mask(status, info("DELETE", "/api/v1/namespaces/shop/secrets/shop-db"))
    assert json.loads(out) == status
    assert report.counts == {}


def test_deletecollection_returns_the_deleted_list():
    request = info("DELETE", "/api/v1/namespaces/shop/secrets")
    assert request.verb == "deletecollection"
    out, _ = mask(secret_list(3), request)
    assert_clean(out)
    assert len(json.loads(out)["items"]) == 3


def test_token_request_token_is_masked_unless_allowed():
    request = info("POST", "/api/v1/namespaces/shop/serviceaccounts/deployer/token")
    body = {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": "deployer"},
        "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600},
        "status": {"token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzYS10b2tlbi1kZXBsb3llci04YjJjIn0.sig", "expirationTimestamp": "2026-11-20T10:00:00Z"},
    }
    out, report = mask(body, request, status=201)
    assert json.loads(out)["status"]["token"] == PLACEHOLDER
    assert report.counts == {"token-request": 1}
    out, report = mask(body, request, status=201, mask_secrets=False, detectors=Detectors.default())
    assert json.loads(out)["status"]["token"] == body["status"]["token"]


def test_mask_secrets_false_passes_secret_values_but_keeps_detectors():
    out, report = mask(secret(), mask_secrets=False)
    assert json.loads(out)["data"]["DB_PASSWORD"] == b64("s3cr3t-db-password-4f9a")
    cm = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {}, "data": {"DB_PASSWORD": "hunter2"}}
    out, report = mask(cm, info(path="/api/v1/namespaces/shop/configmaps/c"), mask_secrets=False)
    assert json.loads(out)["data"]["DB_PASSWORD"] == PLACEHOLDER


def test_configmap_data_and_binary_data():
    cm = {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "web-config"},
        "data": {"LOG_LEVEL": "info", "app.properties": "smtp.user=mailer\nsmtp.password=m4il-p4ss-7c1e\n"},
        "binaryData": {"creds.ini": b64("[x]\npassword=pay-db-pass-61c3\n"), "api-token": b64("raw")},
    }
    out, report = mask(cm, info(path="/api/v1/namespaces/shop/configmaps/web-config"))
    assert_clean(out)
    doc = json.loads(out)
    assert doc["data"] == {"LOG_LEVEL": "info", "app.properties": f"smtp.user=mailer\nsmtp.password={PLACEHOLDER}\n"}
    assert base64.b64decode(doc["binaryData"]["creds.ini"]) == f"[x]\npassword={PLACEHOLDER}\n".encode()
    assert doc["binaryData"]["api-token"] == PLACEHOLDER_B64


def deployment() -> dict:
    return {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": "cart", "annotations": {"note": "token=sa-token-deployer-8b2c"}},
        "spec": {
            "template": {
                "metadata": {"annotations": {"kubesim.airlock.dev/log": "connecting to postgres://shop:s3cr3t-db-password-4f9a@db:5432/cart"}},
                "spec": {
                    "containers": [
                        {
                            "name": "cart",
                            "image": "ghcr.io/example/cart:2.4.1",
                            "command": ["sh", "-c", "run --password=jwt-signing-key-b7d1"],
                            "args": ["--api-key", "sk_live_kubesim_51f0c2e9", "--port", "8080"],
                            "env": [
                                {"name": "DB_HOST", "value": "db.shop.svc"},
                                {"name": "DB_PASSWORD", "value": "s3cr3t-db-password-4f9a"},
                                {"name": "STRIPE_KEY", "valueFrom": {"secretKeyRef": {"name": "api-keys", "key": "STRIPE_KEY"}}},
                            ],
                            "livenessProbe": {
                                "exec": {"command": ["check", "--token", "kubesim-aws-secret-2d7f"]},
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/", "httpHeaders": [{"name": "Authorization", "value": "pay-db-pass-61c3"}]}
                            },
                        }
                    ],
                    "initContainers": [{"name": "init", "env": [{"name": "SMTP_PASS", "value": "x"}, {"name": "MAIL_SECRET", "value": "m4il-p4ss-7c1e"}]}],
                },
            }
        },
    }


def test_workload_env_args_command_probes_and_template_annotations():
    out, report = mask(deployment(), info(path="/apis/apps/v1/namespaces/shop/deployments/cart"))
    assert_clean(out)
    doc = json.loads(out)
    container = doc["spec"]["template"]["spec"]["containers"][0]
    assert container["env"][0] == {"name": "DB_HOST", "value": "db.shop.svc"}
    assert container["env"][1] == {"name": "DB_PASSWORD", "value": PLACEHOLDER}
    assert container["env"][2]["valueFrom"]["secretKeyRef"]["key"] == "STRIPE_KEY"
    assert container["args"] == ["--api-key", PLACEHOLDER, "--port", "8080"]
    assert container["image"] == "ghcr.io/example/cart:2.4.1"
    assert doc["metadata"]["annotations"]["note"] == f"token={PLACEHOLDER}"
    assert report.counts["keyword"] >= 5


def test_pod_cronjob_and_pod_template_locations():
    container = {"name": "c", "env": [{"name": "DB_PASSWORD", "value": "s3cr3t-db-password-4f9a"}]}
    pod = {"kind": "Pod", "apiVersion": "v1", "metadata": {}, "spec": {"containers": [container]}}
    cron = {"kind": "CronJob", "apiVersion": "batch/v1", "metadata": {}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [container]}}}}}}
    tmpl = {"kind": "PodTemplate", "apiVersion": "v1", "metadata": {}, "template": {"spec": {"ephemeralContainers": [container]}}}
    for obj in (pod, cron, tmpl):
        out, _ = mask(obj, info(path="/api/v1/namespaces/shop/pods"))
        assert_clean(out)


def test_pod_status_messages():
    pod = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {},
        "status": {
            "message": "failed: password=pay-db-pass-61c3",
            "conditions": [{"type": "Ready", "message": "probe said token=sa-token-deployer-8b2c"}],
            "containerStatuses": [{"name": "c", "lastState": {"terminated": {"message": "panic: secret: kubesim-aws-secret-2d7f"}}}],
        },
    }
    out, _ = mask(pod, info(path="/api/v1/namespaces/shop/pods/p"))
    assert_clean(out)


def test_event_and_status_messages():
    event = {"kind": "Event", "apiVersion": "v1", "metadata": {}, "reason": "BackOff", "message": "pulling with password=pay-db-pass-61c3"}
    out, _ = mask(event, info(path="/api/v1/namespaces/shop/events"))
    assert json.loads(out)["message"] == f"pulling with password={PLACEHOLDER}"
    new_event = {"kind": "Event", "apiVersion": "events.k8s.io/v1", "metadata": {}, "note": "token=sa-token-deployer-8b2c"}
    out, _ = mask(new_event, info(path="/apis/events.k8s.io/v1/namespaces/shop/events"))
    assert_clean(out)
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "admission webhook denied: secret=s3cr3t-db-password-4f9a",
        "details": {"causes": [{"message": "Authorization: Bearer abcdefghijklmnopqrstuvwxyz"}]},
        "code": 403,
    }
    out, report = mask(status, info(), status=403)
    assert_clean(out)
    assert b"abcdefghijklmnopqrstuvwxyz" not in out
    assert json.loads(out)["code"] == 403


def test_table_cells_are_scanned():
    body = table([partial_metadata({"metadata": {"name": "x"}})])
    body["rows"][0]["cells"] = ["x", "postgres://u:pay-db-pass-61c3@db/x"]
    out, _ = mask(body, info(path="/apis/example.com/v1/dbs"))
    assert_clean(out)


def test_duplicate_keys_are_sent_as_read():
    body = b'{"kind":"ConfigMap","apiVersion":"v1","metadata":{},"data":{"p":"x"},"kind":"Secret"}'
    out, _ = mask(body, info(path="/api/v1/namespaces/shop/configmaps/x"))
    assert json.loads(out) == {"kind": "Secret", "apiVersion": "v1", "metadata": {}, "data": {"p": PLACEHOLDER_B64}}
    assert out.count(b'"kind"') == 1


@pytest.mark.parametrize(
    "tail",
    [',"kind":"SecretList"}', ',"items":[]}', ',"metadata":{},"metadata":{}}'],
)
def test_streamed_list_refuses_repeated_keys(tail):
    item = json.dumps({"metadata": {"name": "x"}, "data": {"DB_PASSWORD": "s3cr3t-db-password-4f9a"}})
    body = ('{"kind":"ConfigMapList","apiVersion":"v1","metadata":{},"items":[' + item + "]" + tail).encode()
    with pytest.raises(MaskingError, match="repeats a key"):
        mask(body, info(path="/api/v1/configmaps"))


def test_list_with_kind_after_items_is_buffered_and_masked():
    body = secret_list(2)
    reordered = {"items": body["items"], "kind": "SecretList", "apiVersion": "v1", "metadata": {}}
    out, _ = mask(reordered, info(path="/apis/example.com/v1/whatever"))
    assert_clean(out)


def test_unicode_and_numbers_round_trip():
    body = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "ü"}, "data": {"k": "日本 😀"}, "n": [1, -2.5, 1e20, True, None]}
    out, _ = mask(body, info(path="/api/v1/namespaces/x/configmaps/ü"))
    assert out.isascii()
    assert json.loads(out) == body


# -- watch streams -------------------------------------------------------------------------


def watch_events() -> list:
    bookmark = {"kind": "Secret", "apiVersion": "v1", "metadata": {"resourceVersion": "120", "annotations": {"k8s.io/initial-events-end": "true"}}}
    error = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version: 1 (120)", "reason": "Expired", "code": 410}
    return [
        {"type": "ADDED", "object": secret("a", password=SEEDS[0])},
        {"type": "ADDED", "object": secret("b", password=SEEDS[1])},
        {"type": "BOOKMARK", "object": bookmark},
        {"type": "MODIFIED", "object": secret("a", password=SEEDS[2])},
        {"type": "DELETED", "object": secret("b", password=SEEDS[3])},
        {"type": "ERROR", "object": error},
    ]


def watch_body(separators=("\n",)) -> bytes:
    events = watch_events()
    return b"".join(
        json.dumps(e).encode() + separators[i % len(separators)].encode() for i, e in enumerate(events)
    )


WATCH = info(path="/api/v1/namespaces/shop/secrets", query="watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan")


def test_watch_list_stream_every_event_type():
    assert WATCH.verb == "watch"
    out, report = mask(watch_body(), WATCH)
    assert_clean(out)
    events = decode_events(out)
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK", "MODIFIED", "DELETED", "ERROR"]
    for e in events:
        if e["type"] in ("ADDED", "MODIFIED", "DELETED"):
            assert_masked_secret(e["object"])
    assert events[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert events[5]["object"]["code"] == 410
    assert report.counts["secret-data"] == 8


def test_watch_events_are_sent_as_soon_as_complete():
    masker = response_masker(WATCH, 200, "application/json", mask_secrets=True, detectors=Detectors.default())
    events = [json.dumps(e).encode() + b"\n" for e in watch_events()]
    first = masker.feed(events[0] + events[1][:20])
    assert len(first.splitlines()) == 1
    second = masker.feed(events[1][20:])
    assert len(second.splitlines()) == 1
    assert masker.feed(b"") == b""


def test_watch_with_arbitrary_whitespace_between_events():
    expected, _ = mask(watch_body(), WATCH)
    for seps in ((" ",), ("",), ("\r\n\t ",), ("\n\n", "", "  ")):
        out, _ = mask(watch_body(seps), WATCH)
        assert out == expected


def test_watch_of_table_events():
    events = [{"type": "ADDED", "object": table([partial_metadata(secret("a"))])}, {"type": "MODIFIED", "object": table([secret("a")])}]
    body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    out, _ = mask(body, info(path="/api/v1/namespaces/shop/secrets", query="watch=1&includeObject=Object"))
    assert_clean(out)


def test_watch_answered_with_a_single_status():
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "forbidden", "code": 403}
    out, _ = mask(status, WATCH, status=403)
    assert decode_events(out) == [status]


# -- chunking ------------------------------------------------------------------------------

BODIES = {
    "list": (json.dumps(secret_list(6)).encode(), info(path="/api/v1/secrets")),
    "table": (json.dumps(table([partial_metadata(secret(f"s{i}")) for i in range(3)] + [secret("o")])).encode(), info()),
    "watch": (watch_body(("\n", "", " \r\n")), WATCH),
    "single": (json.dumps(deployment(), indent=2).encode(), info(path="/apis/apps/v1/namespaces/shop/deployments/cart")),
}


@pytest.mark.parametrize("name", sorted(BODIES))
def test_one_byte_chunks_give_the_same_output(name):
    body, request = BODIES[name]
    expected, _ = mask(body, request)
    out, _ = mask(body, request, cuts=range(1, len(body)))
    assert out == expected
    assert_clean(out)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(BODIES)), data=st.data())
def test_any_chunking_gives_the_same_output(name, data):
    body, request = BODIES[name]
    cuts = data.draw(st.lists(st.integers(min_value=1, max_value=len(body) - 1), max_size=60))
    expected, expected_report = mask(body, request)
    out, report = mask(body, request, cuts=cuts)
    assert out == expected
    assert report == expected_report
    assert_clean(out)


def test_number_split_at_a_chunk_boundary():
    body = b'{"kind":"ConfigMap","apiVersion":"v1","metadata":{},"n":1234567}'
    for cut in range(1, len(body)):
        out, _ = mask(body, info(path="/api/v1/namespaces/x/configmaps/c"), cuts=[cut])
        assert json.loads(out)["n"] == 1234567
    assert mask(b"12345", info(path="/api/v1/namespaces/x/configmaps/c"), cuts=[2])[0] == b"12345"


# -- fail closed ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ctype",
    [
        "application/vnd.kubernetes.protobuf",
        "application/vnd.kubernetes.protobuf;stream=watch",
        "application/cbor",
        "application/yaml",
        "text/plain",
        None,
        "application/json; charset=iso-8859-1",
    ],
)
def test_non_json_responses_for_resources_are_refused(ctype):
    for request in (info(), WATCH, info(path="/apis/apps/v1/deployments")):
        with pytest.raises(MaskingError, match="cannot inspect"):
            response_masker(request, 200, ctype, mask_secrets=True, detectors=Detectors.default())


def test_json_with_params_is_accepted():
    assert response_masker(info(), 200, "application/json; charset=utf-8", mask_secrets=True, detectors=Detectors.none())


@pytest.mark.parametrize(
    "body",
    [
        b'{"kind":"Secret","data":{"p":"czNjcjN0"}',  # truncated
        b'{"kind":"SecretList","items":[{"data":{"p":"x"}}',  # truncated in a streamed list
        b"not json at all",
        b'{"kind":"Secret"} trailing',
        b'{"kind":"Secret","n":NaN}',
        b'{"kind":"Secret","n":1e999}',
        b'{"kind" "Secret"}',
        b'{"a":1,}',
        b"\xff\xfe{}",
        b'{"kind":"Secret","data":{"p":"\xc3"}}',
        b'"unterminated',
        b"[1,2",
    ],
)
def test_invalid_bodies_raise(body):
    with pytest.raises(MaskingError):
        mask(body, info(path="/api/v1/namespaces/shop/secrets/x"))
    with pytest.raises(MaskingError):
        mask(body, info(path="/api/v1/namespaces/shop/secrets/x"), cuts=range(1, len(body)))


@pytest.mark.parametrize("body", [b'{"type":"ADDED","object":{"kind":"Secret"', b'{"type":"ADDED"} x', b"}"])
def test_invalid_watch_streams_raise(body):
    with pytest.raises(MaskingError):
        mask(body, WATCH)


def test_nothing_is_released_before_an_invalid_single_document_is_detected():
    masker = response_masker(info(path="/api/v1/namespaces/shop/secrets/x"), 200, "application/json", mask_secrets=True, detectors=Detectors.default())
    assert masker.feed(json.dumps(secret()).encode()[:-1]) == b""
    with pytest.raises(MaskingError):
        masker.close()


def test_a_failed_masker_stays_failed():
    masker = response_masker(info(), 200, "application/json", mask_secrets=True, detectors=Detectors.default())
    with pytest.raises(MaskingError):
        masker.feed(b"{]")
    with pytest.raises(MaskingError):
        masker.feed(b"{}")
    with pytest.raises(MaskingError):
        masker.close()


def test_error_messages_carry_no_body_content():
    with pytest.raises(MaskingError) as exc:
        mask(b'{"data":{"p":"s3cr3t-db-password-4f9a"}} s3cr3t', info())
    assert "s3cr3t" not in str(exc.value)


def test_buffer_limit_refuses_instead_of_growing():
    masker = JsonMasker(ObjectMasker(mask_secrets=True, detectors=Detectors.default()), watch=False, max_buffer=1000)
    with pytest.raises(MaskingError, match="exceeds 1000"):
        masker.feed(json.dumps({"kind": "Secret", "data": {"p": "x" * 2000}}).encode())
    masker = JsonMasker(ObjectMasker(mask_secrets=True, detectors=Detectors.default()), watch=True, max_buffer=1000)
    with pytest.raises(MaskingError, match="exceeds 1000"):
        for _ in range(30):
            masker.feed(b'{"type":"ADDED","object":{"kind":"Secret","data":{"p":"' + b"x" * 100)
    big_list = json.dumps(secret_list(20)).encode()
    masker = JsonMasker(ObjectMasker(mask_secrets=True, detectors=Detectors.default()), watch=False, max_buffer=2000)
    assert b"s3cr3t" not in masker.feed(big_list) + masker.close()  # items are bounded one by one


def test_empty_body_is_allowed():
    assert mask(b"", info())[0] == b""


@pytest.mark.parametrize("body", [
    b'{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}\n',
    b'{"kind":"ConfigMapList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"a"}}]}\n',
    b'"just a string"\n',
])
def test_a_document_ends_with_a_newline_where_the_clusters_did(body):
    """kube-apiserver's JSON ends with a newline and clients compare error bodies byte for byte."""
    for cuts in ([], [len(body) - 1], list(range(1, len(body)))):
        out, _ = mask(body, cuts=cuts)
        assert out == body
        out, _ = mask(body.rstrip(b"\n"), cuts=cuts)
        assert out == body.rstrip(b"\n")
    assert mask(body.rstrip(b"\n") + b" \r\n\n  \n", cuts=[len(body)])[0] == body
