"""Hostile request bodies sent raw to the real gateway: every one gets a 4xx ``Status``, never a 500.

Deeply nested JSON and YAML used to reach recursive code (``json.loads``, PyYAML's composer, the
masking walk for the audit record) and answered a bare "Internal Server Error"; a 100,000-level
YAML body overflowed libyaml's C stack and killed the gateway process.
"""

import json
import ssl

import httpx
import pytest

from tests.gateway_harness import AGENT_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)

CONFIGMAP = "/api/v1/namespaces/shop/configmaps/web-config"
SECRET = "/api/v1/namespaces/shop/secrets/shop-db"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@pytest.fixture
def api(gateway):
    context = ssl.create_default_context(cafile=str(gateway.ca_file))
    with httpx.Client(base_url=gateway.server_url(), verify=context, timeout=60,
                      headers={"Authorization": f"Bearer {AGENT_TOKEN}"}) as client:
        yield client


def status_of(response: httpx.Response) -> dict:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:200])
    assert response.headers["content-type"] == "application/json"
    status = response.json()
    assert status["kind"] == "Status" and status["code"] == response.status_code
    return status


def nested_json(depth: int, opener: str = "[") -> str:
    closer = "]" if opener == "[" else "}"
    inner = '"x"'
    if opener == "{":
        return '{"a":' * depth + inner + closer * depth
    return opener * depth + inner + closer * depth


@pytest.mark.parametrize("depth", [600, 3000, 100_000])
@pytest.mark.parametrize("opener", ["[", "{"])
def test_deep_json_write_is_refused(api, depth, opener):
    body = '{"data":{"k":' + nested_json(depth, opener) + "}}"
    response = api.patch(CONFIGMAP, content=body, headers={"Content-Type": "application/merge-patch+json"})
    status = status_of(response)
    assert status["reason"] == "BadRequest"
    assert "nests deeper than 256 levels" in status["message"]


def test_deep_json_patch_of_a_secret_is_refused(api):
    """The JSON-patch masking walk of a Secret's values recursed too."""
    body = json.dumps([{"op": "add", "path": "/data/k", "value": "PLACEHOLDER"}]).replace(
        '"PLACEHOLDER"', nested_json(490))
    response = api.patch(SECRET, content=body, headers={"Content-Type": "application/json-patch+json"})
    assert "nests deeper than 256 levels" in status_of(response)["message"]


def test_deep_json_inside_the_last_applied_annotation_is_not_a_500(api):
    """A string is not nesting; the masker that decodes the annotation must not recurse into it."""
    body = json.dumps({"metadata": {"annotations": {LAST_APPLIED: nested_json(3000)}}})
    response = api.patch(CONFIGMAP, content=body, headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 200, response.text[:200]
    assert response.json()["metadata"]["name"] == "web-config"


@pytest.mark.parametrize("depth", [600, 2000])
def test_deep_block_yaml_apply_is_refused(api, depth):
    body = "".join(f"{' ' * i}k:\n" for i in range(depth)) + f"{' ' * depth}v\n"
    response = api.patch(CONFIGMAP, params={"fieldManager": "agent"}, content=body,
                         headers={"Content-Type": "application/apply-patch+yaml"})
    assert "nests deeper than 256 levels" in status_of(response)["message"]


@pytest.mark.parametrize("depth", [600, 3000, 100_000])
def test_deep_flow_yaml_apply_is_refused(api, depth):
    """100,000 levels used to overflow libyaml's composer and kill the process (SIGSEGV)."""
    body = "data: {k: " + "[" * depth + "]" * depth + "}\n"
    response = api.patch(CONFIGMAP, params={"fieldManager": "agent"}, content=body,
                         headers={"Content-Type": "application/apply-patch+yaml"})
    assert "nests deeper than 256 levels" in status_of(response)["message"]


def test_yaml_alias_bomb_is_refused(api):
    """2**40 nodes once expanded: counted, never expanded, and refused before anything walks it."""
    bomb = "l0: &l0 [x, x]\n" + "".join(f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 40))
    response = api.patch(CONFIGMAP, params={"fieldManager": "agent"}, content=bomb,
                         headers={"Content-Type": "application/apply-patch+yaml"})
    status = status_of(response)
    assert response.status_code == 413 and "aliases expanded" in status["message"]


def test_yaml_alias_nested_past_the_depth_limit_is_refused(api):
    """Each document level is shallow; the alias puts a 200-level tree 200 levels down."""
    deep = "[" * 200 + "]" * 200
    body = f"a: &deep {deep}\nb: {'[' * 200}*deep{']' * 200}\n"
    response = api.patch(CONFIGMAP, params={"fieldManager": "agent"}, content=body,
                         headers={"Content-Type": "application/apply-patch+yaml"})
    assert "nests deeper than 256 levels" in status_of(response)["message"]


def test_deep_unknown_protobuf_field_is_refused(api):
    """An unknown field holding messages nested 100,000 deep: refused, not walked recursively."""
    nested = bytes([2 << 3, 1])  # a non-zero varint at the bottom: the field carries data
    for _ in range(100_000):
        nested = bytes([1 << 3 | 2]) + _varint(len(nested)) + nested
    raw = bytes([9 << 3 | 2]) + _varint(len(nested)) + nested
    type_meta = bytes([1 << 3 | 2, 2]) + b"v1" + bytes([2 << 3 | 2, 6]) + b"Secret"
    body = b"k8s\x00" + bytes([1 << 3 | 2, len(type_meta)]) + type_meta + bytes([2 << 3 | 2]) + _varint(len(raw)) + raw
    response = api.post("/api/v1/namespaces/shop/secrets", content=body,
                        headers={"Content-Type": "application/vnd.kubernetes.protobuf"})
    assert response.status_code == 415 and "field 9 is not understood" in status_of(response)["message"]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_huge_flat_json_near_the_size_limit_is_forwarded(api, settings):
    """Wide is fine: a ConfigMap patch just under the body limit reaches the cluster."""
    count = (settings.AIRLOCK_MAX_REQUEST_BODY - 64 * 1024) // 1024
    body = json.dumps({"data": {f"key-{i}": "v" * 1000 for i in range(count)}})
    response = api.patch(CONFIGMAP, content=body, headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code != 500
    assert response.json()["kind"] in ("ConfigMap", "Status")


def test_huge_flat_json_array_near_the_size_limit(api, settings):
    body = "[" + ",".join(["[]"] * ((settings.AIRLOCK_MAX_REQUEST_BODY - 1024) // 3)) + "]"
    response = api.patch(CONFIGMAP, content=body, headers={"Content-Type": "application/json-patch+json"})
    status_of(response)  # the cluster refuses a patch that is not a list of operations


def test_huge_flat_yaml_near_the_size_limit_is_refused(api, settings):
    body = "data: [" + ",".join(["x"] * ((settings.AIRLOCK_MAX_REQUEST_BODY - 1024) // 2)) + "]\n"
    response = api.patch(CONFIGMAP, params={"fieldManager": "agent"}, content=body,
                         headers={"Content-Type": "application/apply-patch+yaml"})
    assert response.status_code == 413 and "YAML" in status_of(response)["message"]
