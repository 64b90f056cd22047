"""A tool call's arguments as the audit trail keeps them: masked, or not kept."""

import json

from masking import PLACEHOLDER, PLACEHOLDER_B64, SecretValues
from mcpfront.records import mask_arguments

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
