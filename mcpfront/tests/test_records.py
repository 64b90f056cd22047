"""A tool call's arguments as the audit trail keeps them: masked, or not kept."""

import json

from masking import PLACEHOLDER, PLACEHOLDER_B64, SecretValues
from mcpfront.records import KEPT_MESSAGE, mask_arguments, mask_message

VALUE = "Vq7-copied-kx93Lm2"
VALUES = SecretValues.build([("shop", "app-creds", [VALUE.encode()])])


def test_a_secret_manifest_and_the_connections_secret_values_are_masked():
    manifest = (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: shop}}\n"
                f"stringData: {{password: hunter2-Zr5-m27}}\ndata: {{token: aHVudGVyMg==}}\n")
    kept = mask_arguments({"manifest": manifest, "confirm": True, "note": f"copied {VALUE} here"}, VALUES)
    assert b"hunter2" not in kept and b"aHVudGVyMg==" not in kept and VALUE.encode() not in kept
    document = json.loads(kept)
    assert document["manifest"]["stringData"]["password"] == PLACEHOLDER
    assert document["manifest"]["data"]["token"] == PLACEHOLDER_B64
    assert document["confirm"] is True and PLACEHOLDER in document["note"]


def test_a_manifest_without_a_kind_is_masked_as_a_secret_and_exec_words_by_value():
    kept = json.loads(mask_arguments({"manifest": {"metadata": {"name": "x"}, "stringData": {"k": "plain-words-1"}},
                                      "command": ["sh", "-c", f"echo {VALUE}"]}, VALUES))
    assert kept["manifest"]["stringData"]["k"] == PLACEHOLDER
    assert VALUE not in kept["command"][2] and PLACEHOLDER in kept["command"][2]


def test_a_protocol_message_is_kept_masked_like_tool_arguments_and_cut():
    manifest = "kind: Secret\nmetadata: {name: s}\nstringData: {password: hunter2-Zr5-m27}\n"
    refused = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "apply_manifest", "arguments": {"manifest": manifest, "note": VALUE}}}).encode()
    kept = json.loads(mask_message(refused, VALUES))
    assert kept["params"]["arguments"]["manifest"]["stringData"]["password"] == PLACEHOLDER
    assert kept["params"]["arguments"]["note"] == PLACEHOLDER and kept["method"] == "tools/call"
    not_json = f"{{oops {VALUE} ghp_{'a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8'}".encode()
    assert mask_message(not_json, VALUES) == f"{{oops {PLACEHOLDER} {PLACEHOLDER}".encode()
    long = mask_message(b"[" + b'"abc",' * 10_000 + f'"{VALUE}"]'.encode(), VALUES)
    assert len(long) < KEPT_MESSAGE + 64 and long.endswith(b"(cut: the rest is not kept)")
