"""The tools' translation into Kubernetes API requests, and of the gateway's answers into tool results,
without sockets: a fake gateway client records each request and answers from a script."""

import json

import pytest

from mcpfront.inprocess import Answer, Call, ExecResult
from mcpfront.kubeapi import ToolInputError
from mcpfront.tools import Pending, ToolFailure, Tools, parse_manifest

CALL = Call(token="t", connection="prod", audit_id="7c9d0c55-8a51-4f39-9c4e-0d0b8b6c0b0f", tool="test")


def status(code, message, details=None, headers=None):
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": message}
    if details:
        body["details"] = details
    return Answer(code, headers or {"content-type": "application/json"}, json.dumps(body).encode())


def ok(document, code=200):
    return Answer(code, {"content-type": "application/json"}, json.dumps(document).encode())


class FakeGateway:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.sent = []

    async def request(self, call, method, path, query="", body=b"", content_type=None):
        self.sent.append((method, path, query, body, content_type))
        return self.answers.pop(0)

    async def exec(self, call, path, query, *, timeout, max_output):
        self.sent.append(("EXEC", path, query))
        return self.answers.pop(0)


HELD = status(403, 'airlock: review 42 is waiting for a reviewer (rule "review-deletes"): delete deployments "web" '
                   "in namespace \"shop\"; nothing was done. Once a reviewer approves it at "
                   "https://airlock.test/approvals/reviews/42/, run the same request again",
              {"group": "airlock.dev", "kind": "reviews", "name": "42"})


async def test_a_delete_is_one_exact_request_and_a_held_one_is_pending_with_its_review():
    gateway = FakeGateway(HELD, ok({"kind": "Status", "status": "Success"}))
    tools = Tools(gateway)
    with pytest.raises(Pending) as held:
        await tools.delete(CALL, "deploy", "web", "shop")
    assert held.value.review_id == 42 and "waiting for a reviewer" in held.value.message
    assert "deleted deployments.apps web" in await tools.delete(CALL, "deploy", "web", "shop")
    assert gateway.sent == [("DELETE", "/apis/apps/v1/namespaces/shop/deployments/web", "", b"", None)] * 2


async def test_refusals_become_tool_failures_with_the_status_words_and_the_retry_time():
    denied = status(403, 'airlock: denied by rule "no-exec" (connection prod)')
    throttled = status(429, "airlock: budget deletes: 10 per hour used; resets at 12:00:00Z",
                       headers={"content-type": "application/json", "retry-after": "120"})
    gone = status(503, "airlock: the gateway is shutting down")
    tools = Tools(FakeGateway(denied, throttled, gone))
    for code, words in ((403, 'denied by rule "no-exec"'), (429, "resets at 12:00:00Z (retry after 120 s)"),
                        (503, "shutting down")):
        with pytest.raises(ToolFailure) as refused:
            await tools.get(CALL, "pods", "p", "shop")
        assert refused.value.code == code and words in str(refused.value)


async def test_a_denied_review_is_a_failure_not_pending():
    denied = status(403, "airlock: denied by sam (review 42): not now",
                    {"group": "airlock.dev", "kind": "reviews", "name": "42"})
    with pytest.raises(ToolFailure, match="denied by sam"):
        await Tools(FakeGateway(denied)).delete(CALL, "pods", "p", "shop")


MANIFEST = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec: {replicas: 3}\n"


async def test_apply_runs_a_dry_run_and_shows_its_diff_before_any_change():
    live = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop",
            "resourceVersion": "5", "managedFields": [{"manager": "x"}]}, "spec": {"replicas": 2}}
    after = {**live, "metadata": {**live["metadata"], "resourceVersion": "6"}, "spec": {"replicas": 3}}
    gateway = FakeGateway(ok(live), ok(after))
    text = await Tools(gateway).apply(CALL, MANIFEST)
    assert "-  replicas: 2" in text and "+  replicas: 3" in text and "resourceVersion" not in text
    assert "managedFields" not in text and "confirm=true" in text
    (get, dry) = gateway.sent
    assert get[:2] == ("GET", "/apis/apps/v1/namespaces/shop/deployments/web")
    assert dry[:3] == ("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web", "fieldManager=airlock-mcp&dryRun=All")
    assert dry[4] == "application/apply-patch+yaml" and dry[3] == parse_manifest(MANIFEST).body


async def test_a_confirmed_apply_sends_the_same_body_for_real_and_a_held_one_keeps_the_diff():
    gateway = FakeGateway(status(404, "not found"), ok({"kind": "Deployment", "spec": {"replicas": 3}}), HELD)
    with pytest.raises(Pending) as held:
        await Tools(gateway).apply(CALL, MANIFEST, confirm=True)
    assert "+  replicas: 3" in held.value.done and "/dev/null" in held.value.done
    real = gateway.sent[2]
    assert real[0] == "PATCH" and real[2] == "fieldManager=airlock-mcp" and real[3] == gateway.sent[1][3]


def test_a_manifest_is_one_named_object_and_the_same_manifest_is_the_same_bytes():
    assert parse_manifest(MANIFEST).body == parse_manifest(json.loads(json.dumps(
        {"spec": {"replicas": 3}, "metadata": {"namespace": "shop", "name": "web"}, "kind": "Deployment",
         "apiVersion": "apps/v1"}))).body
    for bad in ("a: 1\n---\nb: 2\n", "kind: Pod\n", "apiVersion: v1\nkind: Pod\nmetadata: {generateName: x-}\n",
                "[1, 2]", "a: [" * 300):
        with pytest.raises(ToolInputError):
            parse_manifest(bad)


async def test_names_cannot_reach_another_path_and_nothing_is_sent():
    gateway = FakeGateway()
    for name in ("../secrets/x", "a/b", ".."):
        with pytest.raises(ToolInputError):
            await Tools(gateway).get(CALL, "pods", name, "shop")
    with pytest.raises(ToolInputError, match="namespaced"):
        await Tools(gateway).get(CALL, "pods", "p")
    assert gateway.sent == []


async def test_selectors_and_limits_are_query_parameters_and_lists_are_trimmed_to_lines():
    items = [{"metadata": {"name": f"p{i}", "namespace": "shop", "creationTimestamp": "2026-01-01T00:00:00Z"},
              "spec": {"containers": [{}]}, "status": {"phase": "Running"}} for i in range(3)]
    gateway = FakeGateway(ok({"items": items, "metadata": {"continue": "abc"}}))
    text = await Tools(gateway).list(CALL, "po", "shop", label_selector="app=web,tier in (a,b)", limit=10_000)
    assert gateway.sent[0][:3] == ("GET", "/api/v1/namespaces/shop/pods",
                                   "labelSelector=app%3Dweb%2Ctier%20in%20%28a%2Cb%29&limit=500")
    assert text.splitlines()[0] == "3 pods:" and "shop/p2  Running ready 0/1" in text
    assert 'continue_token="abc"' in text


async def test_other_resources_are_found_by_discovery_through_the_gateway():
    groups = {"groups": [{"name": "example.com", "preferredVersion": {"version": "v1"}}]}
    core = {"resources": [{"name": "pods", "kind": "Pod", "namespaced": True}]}
    example = {"resources": [{"name": "widgets", "singularName": "widget", "shortNames": ["wg"], "kind": "Widget",
                              "namespaced": True}, {"name": "widgets/status", "kind": "Widget"}]}
    gateway = FakeGateway(ok(groups), ok(core), ok(example), ok({"metadata": {"name": "w"}}))
    text = await Tools(gateway).get(CALL, "wg", "w", "shop")
    assert [s[1] for s in gateway.sent] == ["/apis", "/api/v1", "/apis/example.com/v1",
                                            "/apis/example.com/v1/namespaces/shop/widgets/w"]
    assert "name: w" in text


async def test_a_held_rollout_restart_says_how_to_repeat_the_identical_request():
    gateway = FakeGateway(HELD, ok({}))
    tools = Tools(gateway)
    with pytest.raises(Pending) as held:
        await tools.rollout_restart(CALL, "deployments", "web", "shop")
    stamp = json.loads(gateway.sent[0][3])["spec"]["template"]["metadata"]["annotations"][
        "kubectl.kubernetes.io/restartedAt"]
    assert f'restarted_at="{stamp}"' in held.value.done
    await tools.rollout_restart(CALL, "deployments", "web", "shop", restarted_at=stamp)
    assert gateway.sent[0] == gateway.sent[1]


async def test_scale_patches_the_scale_subresource():
    gateway = FakeGateway(ok({}))
    assert "to 0 replicas" in await Tools(gateway).scale(CALL, "deploy", "web", "shop", 0)
    assert gateway.sent == [("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web/scale", "",
                             b'{"spec":{"replicas":0}}', "application/merge-patch+json")]


async def test_exec_sends_the_command_words_and_reads_the_exit_status():
    finished = ExecResult(stdout=bytearray(b"hello\n"), status={
        "kind": "Status", "status": "Failure", "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}})
    refused = ExecResult(refused=status(403, 'airlock: denied by rule "no-exec"'))
    gateway = FakeGateway(finished, refused)
    text = await Tools(gateway).exec(CALL, "p", "shop", ["sh", "-c", "echo hello; exit 3"])
    assert text.startswith("exit code: 3") and "hello" in text
    assert gateway.sent[0] == ("EXEC", "/api/v1/namespaces/shop/pods/p/exec",
                               "command=sh&command=-c&command=echo%20hello%3B%20exit%203&stdout=true&stderr=true")
    with pytest.raises(ToolFailure, match="no-exec"):
        await Tools(gateway).exec(CALL, "p", "shop", ["true"])
