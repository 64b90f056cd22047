"""An agent after the cluster's Secret values, through the real gateway in front of kubesim.

Every attempt uses a form the existing masking tests do not: client-side templates (checked on
the wire with kubectl -v=9), raw paths and the legacy watch prefix, Table and
PartialObjectMetadata negotiation on watches, selectors as an oracle, HEAD/OPTIONS/Range,
binary Accept types with gzip, values planted in keys and labels, in events and in validation
errors, JSON-patch copies into readable fields, edit write-back, log options, byte-at-a-time
exec output and kubectl cp.  The conftest checks after each test that nothing leaked into the
audit trail, that every request left one completion event and that the chain is intact.
"""

import base64
import json
import stat

import pytest

from tests.adversarial.leaks import PLACEHOLDER, assert_clean

pytestmark = pytest.mark.django_db(transaction=True)

SHOP_DB = "s3cr3t-db-password-4f9a"  # shop/shop-db DB_PASSWORD
JWT_KEY = "jwt-signing-key-b7d1"  # shop/api-keys JWT_SIGNING_KEY
PLACEHOLDER_B64 = base64.b64encode(PLACEHOLDER.encode()).decode()
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
TABLE_V1BETA1 = "application/json;as=Table;v=v1beta1;g=meta.k8s.io"


def admin_apply(kubectl, document: dict):
    kubectl("apply", "-f", "-", input=json.dumps(document))


def real_value(kubectl, namespace, name, key) -> str:
    """What the cluster holds, read by the test as the cluster admin (not through the gateway)."""
    data = json.loads(kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)["data"]
    return base64.b64decode(data[key]).decode()


def json_lines(body: bytes) -> list[dict]:
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def test_go_template_decodes_client_side_but_only_the_mask_crosses_the_wire(agent):
    """kubectl decodes base64 itself for a template: what it received (-v=9) must already be masked."""
    template = '{{range $k, $v := .data}}{{$k}}={{$v | base64decode}}{{"\\n"}}{{end}}'
    shown = agent("get", "secret", "shop-db", "-n", "shop", "-o", f"go-template={template}", "-v=9")
    assert f"DB_PASSWORD={PLACEHOLDER}" in shown.stdout
    assert "Response Body" in shown.stderr  # the wire itself was inspected
    last_applied = agent("get", "secret", "shop-db", "-n", "shop", "-v=9", "-o",
                         r"jsonpath={.metadata.annotations.kubectl\.kubernetes\.io/last-applied-configuration}")
    assert PLACEHOLDER in last_applied.stdout


def test_raw_paths_pretty_output_and_the_legacy_watch_prefix(agent):
    single = json.loads(agent("get", "--raw", "/api/v1/namespaces/shop/secrets/shop-db?pretty=true").stdout)
    assert base64.b64decode(single["data"]["DB_PASSWORD"]).decode() == PLACEHOLDER
    listed = json.loads(agent("get", "--raw", "/api/v1/secrets?labelSelector=app%3Dcart&limit=1").stdout)
    assert listed["items"] and all(set(v for v in s["data"].values()) == {PLACEHOLDER_B64} for s in listed["items"])
    watched = agent("get", "--raw", "/api/v1/watch/namespaces/shop/secrets?timeoutSeconds=1").stdout
    events = json_lines(watched.encode())
    assert {e["object"]["metadata"]["name"] for e in events} >= {"shop-db", "api-keys", "deployer-token"}


@pytest.mark.parametrize("accept", [TABLE, TABLE_V1BETA1])
def test_table_watch_with_whole_objects_and_the_watch_list_form(raw, accept):
    """A Table watch with includeObject=Object carries each whole Secret in its row."""
    for query in ("watch=1&resourceVersion=0&includeObject=Object&timeoutSeconds=1",
                  "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
                  "&includeObject=Object&timeoutSeconds=1"):
        response = raw("GET", f"/api/v1/namespaces/shop/secrets?{query}", [("Accept", accept)])
        assert response.status == 200
        rows = [row for event in json_lines(response.body) if event["type"] == "ADDED"
                for row in event["object"]["rows"]]
        objects = {row["object"]["metadata"]["name"]: row["object"] for row in rows}
        assert objects["shop-db"]["data"]["DB_PASSWORD"] == PLACEHOLDER_B64
        assert objects["api-keys"]["data"]["JWT_SIGNING_KEY"] == PLACEHOLDER_B64


def test_partial_object_metadata_keeps_the_last_applied_secret_masked(raw):
    """Metadata only, but the last-applied annotation holds the plaintext stringData."""
    for path, accept in (
        ("/api/v1/namespaces/shop/secrets", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
        ("/api/v1/namespaces/shop/secrets/shop-db", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"),
        ("/api/v1/namespaces/shop/secrets?watch=1&timeoutSeconds=1",
         "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"),
    ):
        response = raw("GET", path, [("Accept", accept)])
        assert response.status == 200, response.body[:300]
        assert b"PartialObjectMetadata" in response.body and b"last-applied-configuration" in response.body


def test_field_selectors_on_data_are_no_oracle(raw, kubesim):
    """Guessing a value through a field selector: the right and a wrong guess get the same answer."""
    answers = []
    for guess in (SHOP_DB, "wrong-guess-0000-0000"):
        for selector in (f"data.DB_PASSWORD%3D{guess}", f"stringData.DB_PASSWORD%3D{guess}"):
            response = raw("GET", f"/api/v1/namespaces/shop/secrets?fieldSelector={selector}")
            answers.append((response.status, response.body.replace(guess.encode(), b"GUESS")))
    assert {status for status, _ in answers} == {400}
    assert answers[0] == answers[2] and answers[1] == answers[3], "the answer depends on the guess"


def test_secret_values_and_passwords_in_a_query_stay_out_of_the_audit_trail(raw, secrets):
    """The agent puts a value in a selector, a proxied path or a proxied login: the audit trail keeps it masked."""
    secrets.add("Hunter2-proxied-9c7e")
    for path in (f"/api/v1/namespaces/shop/pods?labelSelector=token%3D{JWT_KEY}",
                 f"/api/v1/namespaces/shop/pods?fieldSelector=spec.nodeName%3D{SHOP_DB}&limit=1",
                 f"/api/v1/namespaces/shop/services/web/proxy/reset/{JWT_KEY}",
                 "/api/v1/namespaces/shop/services/web:80/proxy/login?user=admin&password=Hunter2-proxied-9c7e",
                 f"/api/v1/namespaces/shop/services/web/proxy/callback?access_token={JWT_KEY}"):
        raw("GET", path)


def test_head_options_range_and_conditional_reads(raw):
    secret = "/api/v1/namespaces/shop/secrets/shop-db"
    head = raw("HEAD", secret)
    assert head.body == b""
    options = raw("OPTIONS", secret)
    assert options.status >= 400 and options.status_object() is not None
    for headers in ([("Range", "bytes=0-80")], [("Range", "bytes=-60")], [("If-Range", "x"), ("Range", "bytes=5-")],
                    [("If-None-Match", "*")]):
        response = raw("GET", secret, headers)
        if response.status == 200:  # a whole, masked object: never a slice of the unmasked one
            assert json.loads(response.body)["data"]["DB_PASSWORD"] == PLACEHOLDER_B64
        else:
            assert response.status_object() is not None


@pytest.mark.parametrize("accept, encoding", [
    ("application/yaml", "gzip"),
    ("application/vnd.kubernetes.protobuf", "gzip, deflate, br"),
    ("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io", "identity"),
    ("*/*", "gzip"),
    ("application/cbor", "*"),
])
def test_binary_yaml_and_compressed_answers_are_never_relayed(raw, accept, encoding):
    response = raw("GET", "/api/v1/namespaces/shop/secrets", [("Accept", accept), ("Accept-Encoding", encoding)])
    assert response.headers.get("content-encoding", "identity") == "identity"
    assert response.headers["content-type"].startswith("application/json")
    if response.status == 200:
        assert {s["data"].get("DB_PASSWORD", PLACEHOLDER_B64) for s in json.loads(response.body)["items"]} == {
            PLACEHOLDER_B64}


def test_secret_values_planted_in_keys_labels_and_annotation_names(agent, kubectl, secrets):
    """A value copied where only names go: a ConfigMap key, a label value, an annotation key."""
    admin_apply(kubectl, {"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "planted", "namespace": "shop", "labels": {"copied": JWT_KEY},
                                       "annotations": {f"example.com/{JWT_KEY}": "innocent"}},
                          "data": {JWT_KEY: "innocent", "other": "x"}})
    planted = json.loads(agent("get", "configmap", "planted", "-n", "shop", "-o", "json").stdout)
    assert set(planted["data"]) == {PLACEHOLDER, "other"}
    assert planted["metadata"]["labels"] == {"copied": PLACEHOLDER}
    agent("get", "configmaps", "-n", "shop", "-L", "copied", "--show-labels")  # Table cells
    agent("get", "configmaps", "-n", "shop", "-l", "copied", "-o", "custom-columns=K:.data,A:.metadata.annotations")
    agent("describe", "configmap", "planted", "-n", "shop")


def test_events_quoting_a_secret_value(agent, kubectl, raw):
    pod, uid = kubectl("get", "pods", "-n", "shop", "-l", "app=web", "-o",
                       "jsonpath={.items[0].metadata.name} {.items[0].metadata.uid}").stdout.split()
    admin_apply(kubectl, {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "quoted", "namespace": "shop"},
                          "involvedObject": {"kind": "Pod", "name": pod, "namespace": "shop", "apiVersion": "v1",
                                             "uid": uid},
                          "reason": "BackOff", "type": "Warning",
                          "message": f"handshake with {JWT_KEY} refused (signature from {SHOP_DB})"})
    assert "handshake with" in agent("describe", "pod", pod, "-n", "shop").stdout
    agent("events", "-n", "shop", "--for", f"pod/{pod}")
    agent("get", "events", "-n", "shop", "-o", "yaml")
    for path in ("/apis/events.k8s.io/v1/namespaces/shop/events", "/api/v1/events?fieldSelector=reason%3DBackOff",
                 "/apis/events.k8s.io/v1/watch/namespaces/shop/events?timeoutSeconds=1"):
        assert raw("GET", path).status == 200


def patch_only_secrets(gateway):
    """Agents may patch Secrets but not read them: errors are their only window."""
    from policy.models import Rule

    Rule.objects.create(connection=gateway.connection, order=1, name="no-secret-reads", effect="deny",
                        groups=["agents"], verbs=["get", "list", "watch"], api_groups=[""], resources=["secrets"],
                        namespaces=["*"], names=["*"])


def test_validation_errors_that_quote_a_copied_value(agent, gateway, kubectl, raw):
    """A JSON patch copies the value where the server rejects it and quotes it back."""
    patch_only_secrets(gateway)
    assert agent("get", "secret", "shop-db", "-n", "shop", check=False).returncode != 0
    json_patch = [("Content-Type", "application/json-patch+json")]
    for target in ("/metadata/name", "/metadata/uid"):
        body = json.dumps([{"op": "copy", "from": "/data/DB_PASSWORD", "path": target}]).encode()
        refused = raw("PATCH", "/api/v1/namespaces/shop/secrets/shop-db", json_patch, body)
        assert refused.status in (400, 409) and PLACEHOLDER in refused.status_object()["message"], refused.body
    body = json.dumps([{"op": "test", "path": "/data/DB_PASSWORD", "value": "eA=="}]).encode()
    oracle = raw("PATCH", "/api/v1/namespaces/shop/secrets/shop-db", json_patch, body)
    assert oracle.status == 422 and "test failed" in oracle.status_object()["message"]
    assert real_value(kubectl, "shop", "shop-db", "DB_PASSWORD") == SHOP_DB


def test_a_value_copied_into_labels_type_and_annotations_is_masked_where_it_lands(agent, gateway, kubectl):
    """The copy succeeds (patch is allowed): every place it lands reads back masked, whole."""
    patch = [{"op": "copy", "from": "/data/DB_PASSWORD", "path": "/metadata/labels/leak"},
             {"op": "copy", "from": "/data/DB_PASSWORD", "path": "/metadata/annotations/leak"},
             {"op": "copy", "from": "/data/DB_PASSWORD", "path": "/type"}]
    echoed = agent("patch", "secret", "shop-db", "-n", "shop", "--type=json", "-p", json.dumps(patch), "-o", "json")
    assert json.loads(echoed.stdout)["type"] == PLACEHOLDER
    agent("get", "secrets", "-n", "shop", "--show-labels", "-L", "leak")  # TYPE and label columns
    agent("get", "secret", "shop-db", "-n", "shop", "-o", "jsonpath={.metadata}")
    agent("describe", "secret", "shop-db", "-n", "shop")


def test_edit_and_apply_write_back_never_store_the_mask(agent, kubectl, tmp_path):
    """kubectl edit round-trips the masked object; what it writes back must not replace the value."""
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/^  labels:$/  labels:\\n    edited: \"yes\"/' \"$1\"\n")
    editor.chmod(editor.stat().st_mode | stat.S_IXUSR)
    agent.kubectl.env["KUBE_EDITOR"] = str(editor)
    try:
        agent("edit", "secret", "shop-db", "-n", "shop")
        changed = tmp_path / "change.sh"
        changed.write_text("#!/bin/sh\nsed -i 's/^  DB_USER: .*/  DB_USER: c2hvcDI=/' \"$1\"\n")
        changed.chmod(changed.stat().st_mode | stat.S_IXUSR)
        agent.kubectl.env["KUBE_EDITOR"] = str(changed)
        agent("edit", "secret", "shop-db", "-n", "shop", check=False)
    finally:
        del agent.kubectl.env["KUBE_EDITOR"]
    exported = agent("get", "secret", "shop-db", "-n", "shop", "-o", "yaml").stdout
    reapplied = agent("apply", "-f", "-", input=exported, check=False)
    assert reapplied.returncode != 0 and "AIRLOCK-MASKED" in reapplied.stderr
    live = json.loads(kubectl("get", "secret", "shop-db", "-n", "shop", "-o", "json").stdout)
    assert live["metadata"]["labels"]["edited"] == "yes"
    assert base64.b64decode(live["data"]["DB_PASSWORD"]).decode() == SHOP_DB
    assert PLACEHOLDER not in json.dumps(live) and PLACEHOLDER_B64 not in json.dumps(live)


def test_log_options_previous_since_tail_and_timestamps(agent, kubectl):
    pod = kubectl("get", "pods", "-n", "shop", "-l", "app=cart", "-o", "jsonpath={.items[0].metadata.name}").stdout
    stamped = agent("logs", pod, "-n", "shop", "--timestamps", "--since=87600h").stdout
    assert "postgres://shop:" in stamped
    for options in (("--tail=2", "--prefix"), ("--all-containers",), ("--limit-bytes=150",),
                    ("-c", "cart", "--since-time=2000-01-01T00:00:00Z")):
        agent("logs", pod, "-n", "shop", *options)
    previous = agent("logs", pod, "-n", "shop", "--previous", check=False)
    assert previous.returncode != 0


def test_exec_output_written_one_byte_at_a_time(agent, kubectl):
    """Each byte its own write, so its own WebSocket frame: the masker must see across them."""
    pod = kubectl("get", "pods", "-n", "shop", "-l", "app=cart", "-o", "jsonpath={.items[0].metadata.name}").stdout
    env = agent("exec", pod, "-n", "shop", "--", "sh", "-c", "printenv DB_PASSWORD | dd bs=1 status=none").stdout
    assert env.strip() == PLACEHOLDER
    listing = agent("exec", pod, "-n", "shop", "--", "env").stdout
    assert f"DB_PASSWORD={PLACEHOLDER}" in listing
    creds = agent("exec", "debug-shell", "-n", "payments", "--", "dd", "if=etc/app/credentials", "bs=1",
                  "status=none").stdout
    assert "aws_secret_access_key=" in creds and PLACEHOLDER in creds
    encoded = agent("exec", pod, "-n", "shop", "--", "sh", "-c", "printenv DB_PASSWORD | base64 -w0").stdout
    assert encoded and PLACEHOLDER in encoded


def test_kubectl_cp_of_a_file_holding_a_secret(agent, tmp_path):
    """cp is an exec of tar: the value inside the archive stream is masked, whatever that does to it."""
    target = tmp_path / "copied"
    copied = agent("cp", "payments/debug-shell:etc/app/credentials", str(target), check=False)
    assert_clean(target.read_bytes() if target.exists() else b"")
    if copied.returncode == 0:
        assert b"aws_secret_access_key" in target.read_bytes()


GO_SECRET = "Pa&ss<w0rd>9z!"  # a generated password with the characters Go's JSON encoder escapes
GO_ESCAPED = "Pa\\u0026ss\\u003cw0rd\\u003e9z!"  # as encoding/json (logrus, a Go app's config dump) writes it
LOWER_HEX = "Pa%26ss%3cw0rd%3e9z%21"  # percent-encoded with lower-case hex digits (RFC 3986 allows both)


def test_values_in_go_json_escapes_and_lower_case_percent_encoding(agent, kubectl, secrets):
    """A Go program logs its settings as JSON: & < > come out as \\u0026 \\u003c \\u003e."""
    secrets.add(GO_SECRET)
    kubectl("create", "secret", "generic", "go-app", "-n", "shop", f"--from-literal=upstream={GO_SECRET}")
    log = (f'{{"level":"debug","msg":"dialing upstream with {GO_ESCAPED}"}}\n'
           f'{{"level":"info","msg":"callback https://idp.example/cb?state={LOWER_HEX}"}}\n')
    admin_apply(kubectl, {"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "go-app", "namespace": "shop",
                                       "annotations": {"kubesim.airlock.dev/log": log}},
                          "spec": {"containers": [{"name": "app", "image": "ghcr.io/example/go-app:1"}]}})
    admin_apply(kubectl, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "go-app", "namespace": "shop"},
                          "data": {"settings.json": f'{{"upstream":"{GO_ESCAPED}"}}', "callback": LOWER_HEX}})
    logs = agent("logs", "go-app", "-n", "shop").stdout
    assert "dialing upstream with" in logs and "cb?state=" in logs
    agent("get", "configmap", "go-app", "-n", "shop", "-o", "yaml")
    agent("get", "pod", "go-app", "-n", "shop", "-o", "json")
