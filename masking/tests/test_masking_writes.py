"""Write-back guard and masked request bodies for the audit trail."""

import base64
import json

import pytest
import yaml

from kube.requestinfo import parse
from masking import (
    PLACEHOLDER,
    PLACEHOLDER_B64,
    Detectors,
    WriteRefused,
    check_write,
    mask_request_body_for_record,
    response_masker,
)
from masking.objects import LAST_APPLIED

SECRET = "s3cr3t-db-password-4f9a"
SECRET_PATH = "/api/v1/namespaces/shop/secrets/shop-db"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret_body(data=None, string_data=None) -> dict:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-db", "namespace": "shop"}, "type": "Opaque"}
    if data is not None:
        body["data"] = data
    if string_data is not None:
        body["stringData"] = string_data
    return body


def write(method, path, body, ctype="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    check_write(parse(method, path, ""), ctype, data)


# -- the guard -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "ctype", "body"),
    [
        ("PUT", SECRET_PATH, "application/json", secret_body(data={"DB_PASSWORD": PLACEHOLDER_B64, "DB_USER": b64("shop")})),
        ("POST", "/api/v1/namespaces/shop/secrets", "application/json", secret_body(string_data={"DB_PASSWORD": PLACEHOLDER})),
        ("PUT", SECRET_PATH, "application/json", secret_body(data={"p": b64("prefix-" + PLACEHOLDER)})),
        ("PATCH", SECRET_PATH, "application/merge-patch+json", {"data": {"DB_PASSWORD": PLACEHOLDER_B64}}),
        ("PATCH", SECRET_PATH, "application/strategic-merge-patch+json", {"stringData": {"DB_PASSWORD": PLACEHOLDER}}),
        ("PATCH", SECRET_PATH, "application/json-patch+json", [{"op": "replace", "path": "/data/DB_PASSWORD", "value": PLACEHOLDER_B64}]),
        ("PATCH", SECRET_PATH, "application/apply-patch+yaml", yaml.safe_dump(secret_body(data={"DB_PASSWORD": PLACEHOLDER_B64})).encode()),
        ("PUT", SECRET_PATH, "application/vnd.kubernetes.protobuf", b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12" + PLACEHOLDER.encode()),
        ("PUT", "/api/v1/namespaces/shop/configmaps/web", "application/json", {"kind": "ConfigMap", "data": {"app.properties": f"password={PLACEHOLDER}"}}),
        ("PATCH", "/apis/apps/v1/namespaces/shop/deployments/cart", "application/strategic-merge-patch+json",
         {"spec": {"template": {"spec": {"containers": [{"name": "cart", "env": [{"name": "DB_PASSWORD", "value": PLACEHOLDER}]}]}}}}),
    ],
)
def test_writes_holding_the_placeholder_are_refused(method, path, ctype, body):
    with pytest.raises(WriteRefused) as exc:
        write(method, path, body, ctype)
    assert exc.value.code == 422
    assert PLACEHOLDER in str(exc.value)


def test_refusal_says_what_and_where_and_nothing_else():
    body = secret_body(data={"DB_PASSWORD": PLACEHOLDER_B64, "DB_USER": b64(SECRET)})
    with pytest.raises(WriteRefused) as exc:
        write("PUT", SECRET_PATH, body)
    message = str(exc.value)
    assert 'Secret "shop-db"' in message and "data.DB_PASSWORD" in message
    assert SECRET not in message and b64(SECRET) not in message


@pytest.mark.parametrize(
    ("method", "path", "ctype", "body"),
    [
        ("POST", "/api/v1/namespaces/shop/secrets", "application/json", secret_body(data={"DB_PASSWORD": b64(SECRET)})),
        ("PATCH", SECRET_PATH, "application/merge-patch+json", {"stringData": {"DB_PASSWORD": "new-password"}}),
        ("PATCH", SECRET_PATH, "application/apply-patch+yaml", yaml.safe_dump(secret_body(string_data={"p": SECRET})).encode()),
        ("PUT", SECRET_PATH, "application/vnd.kubernetes.protobuf", b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12" + SECRET.encode()),
        ("GET", SECRET_PATH, "application/json", secret_body(data={"p": PLACEHOLDER_B64})),
        ("DELETE", SECRET_PATH, "application/json", {"kind": "DeleteOptions", "propagationPolicy": "Background"}),
        ("POST", "/api/v1/namespaces/shop/secrets", "application/json", b""),
    ],
)
def test_normal_writes_and_other_verbs_pass(method, path, ctype, body):
    write(method, path, body, ctype)


def test_get_secret_then_replace_is_refused():
    """``kubectl get secret -o yaml | kubectl replace -f -`` through the gateway."""
    stored = secret_body(data={"DB_PASSWORD": b64(SECRET)})
    stored["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(secret_body(string_data={"DB_PASSWORD": SECRET}))}
    masker = response_masker(parse("GET", SECRET_PATH, ""), 200, "application/json", mask_secrets=True, detectors=Detectors.default())
    shown = json.loads(masker.feed(json.dumps(stored).encode()) + masker.close())
    edited = yaml.safe_dump(shown).encode()
    with pytest.raises(WriteRefused):
        write("PUT", SECRET_PATH, yaml.safe_load(edited))
    with pytest.raises(WriteRefused):
        write("PATCH", SECRET_PATH, edited, "application/apply-patch+yaml")


def test_yaml_alias_bomb_is_checked_without_expanding():
    """2**40 leaves if expanded: only a walk that visits shared nodes once finishes."""
    bomb = "l0: &l0 [x, x]\n" + "".join(f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 40))
    with pytest.raises(WriteRefused):
        write("PATCH", SECRET_PATH, (bomb + f"data: {{p: {PLACEHOLDER_B64}}}\n").encode(), "application/apply-patch+yaml")
    write("PATCH", SECRET_PATH, bomb.encode(), "application/apply-patch+yaml")
    record = mask_request_body_for_record(parse("PATCH", SECRET_PATH, ""), "application/apply-patch+yaml", bomb.encode())
    assert record == PLACEHOLDER.encode()


# -- bodies for the audit trail ------------------------------------------------------------


def record(method, path, body, ctype="application/json") -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return mask_request_body_for_record(parse(method, path, ""), ctype, data)


def assert_clean(out: bytes):
    for form in (SECRET, b64(SECRET)):
        assert form.encode() not in out


def test_record_of_a_secret_create():
    body = secret_body(data={"DB_PASSWORD": b64(SECRET)}, string_data={"DB_USER": SECRET})
    body["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(secret_body(string_data={"DB_PASSWORD": SECRET})) + "\n"}
    out = record("POST", "/api/v1/namespaces/shop/secrets", body)
    assert_clean(out)
    doc = json.loads(out)
    assert doc["data"] == {"DB_PASSWORD": PLACEHOLDER_B64} and doc["stringData"] == {"DB_USER": PLACEHOLDER}
    assert doc["metadata"]["name"] == "shop-db"


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/merge-patch+json", {"data": {"DB_PASSWORD": b64(SECRET)}}),
        ("application/strategic-merge-patch+json", {"stringData": {"DB_PASSWORD": SECRET}, "metadata": {"annotations": {LAST_APPLIED: "not json " + SECRET}}}),
        ("application/json-patch+json", [{"op": "add", "path": "/data/DB_PASSWORD", "value": b64(SECRET)}, {"op": "replace", "path": "", "value": secret_body(string_data={"a": SECRET})}]),
        ("application/apply-patch+yaml", yaml.safe_dump(secret_body(string_data={"DB_PASSWORD": SECRET})).encode()),
        ("application/vnd.kubernetes.protobuf", b"k8s\x00\x12\x06Secret" + SECRET.encode()),
        ("application/json", b'{"truncated": "' + SECRET.encode()),
    ],
)
def test_record_of_secret_patches_and_unreadable_bodies(ctype, body):
    out = record("PATCH", SECRET_PATH, body, ctype)
    assert_clean(out)


def test_record_of_a_yaml_body_is_json():
    out = record("PATCH", SECRET_PATH, yaml.safe_dump(secret_body(string_data={"p": SECRET})).encode(), "application/apply-patch+yaml")
    assert json.loads(out)["stringData"] == {"p": PLACEHOLDER}


def test_record_of_other_resources_masks_detector_hits_everywhere():
    deployment = {
        "kind": "Deployment",
        "spec": {"template": {"spec": {"containers": [{"name": "c", "env": [{"name": "DB_PASSWORD", "value": SECRET}]}]}}},
    }
    assert_clean(record("POST", "/apis/apps/v1/namespaces/shop/deployments", deployment))
    widget = {"kind": "Widget", "apiVersion": "example.com/v1", "spec": {"connection": f"postgres://u:{SECRET}@db/x", "level": 3}}
    out = record("POST", "/apis/example.com/v1/namespaces/shop/widgets", widget)
    assert_clean(out)
    assert json.loads(out)["spec"]["level"] == 3
    patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/env/0", "value": {"name": "API_TOKEN", "value": SECRET}}]
    assert_clean(record("PATCH", "/apis/apps/v1/namespaces/shop/deployments/cart", patch, "application/json-patch+json"))
    raw = record("POST", "/apis/example.com/v1/namespaces/shop/widgets", b"\x00binary password=" + SECRET.encode(), "application/cbor")
    assert_clean(raw)
    assert raw.startswith(b"\x00binary password=")


def test_record_of_an_empty_body():
    assert record("POST", "/api/v1/namespaces/shop/secrets", b"") == b""
