"""Issue 17, done-when: an agent drives Airlock's MCP endpoint with the ``mcp`` SDK's own client.

Real OIDC tokens (tests/idp), the real application on TLS in front of kubesim, the SDK's Streamable
HTTP client: list pods, read a Secret (masked), logs (masked), apply with a dry-run diff first, a
delete that is held, approved by a reviewer in the dashboard (headless Chromium) and then completes,
a denied exec; the audit replay page shows each tool call with the API requests beneath it.
"""

import base64
import json
import re

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission, User
from django.test import Client as DjangoClient
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from approvals.tests.factories import reviewer
from tests.browser import steady
from tests.e2e_mcp.conftest import AGENT, OTHER_AUDIENCE_AGENT, http_client, mcp_client

pytestmark = pytest.mark.django_db(transaction=True)

DB_PASSWORD = "s3cr3t-db-password-4f9a"  # kubesim's seed: Secret shop/shop-db, and the cart pods' log
MASK = "**AIRLOCK-MASKED**"


def text(result) -> str:
    return "\n".join(part.text for part in result.content if getattr(part, "type", "") == "text")


def no_secret(words: str):
    assert DB_PASSWORD not in words
    assert base64.b64encode(DB_PASSWORD.encode()).decode() not in words


def sign_in(driver, url, username):
    driver.get(f"{url}/approvals/")
    WebDriverWait(driver, 30).until(EC.presence_of_element_located((By.ID, "id_username"))).send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys("pw-" + username)
    driver.find_element(By.CSS_SELECTOR, "#password-login button[type=submit]").click()
    WebDriverWait(driver, 30).until(EC.presence_of_element_located((By.ID, "pending")))


async def test_an_agent_works_through_the_mcp_endpoint_under_the_same_guardrails(airlock_mcp, idp, kubectl,
                                                                                  browser):
    from approvals.models import Review

    token = idp.get_token(AGENT["client_id"], AGENT["client_secret"])
    async with mcp_client(airlock_mcp, token) as client:
        listed = await client.call_tool("list_resources", {"resource": "pods", "namespace": "shop"})
        assert not listed.is_error, text(listed)
        cart_pod = re.search(r"shop/(cart-[a-z0-9-]+)", text(listed)).group(1)

        secret = await client.call_tool("get_resource", {"resource": "secrets", "name": "shop-db",
                                                          "namespace": "shop"})
        assert not secret.is_error and "DB_PASSWORD" in text(secret)
        assert base64.b64encode(MASK.encode()).decode() in text(secret)
        no_secret(text(secret))

        logs = await client.call_tool("pod_logs", {"pod": cart_pod, "namespace": "shop", "tail_lines": 50})
        assert not logs.is_error and "connecting to postgres://" in text(logs)
        assert MASK in text(logs)
        no_secret(text(logs))

        manifest = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mcp-settings, namespace: shop}\n"
                    "data: {mode: canary}\n")
        preview = await client.call_tool("apply_manifest", {"manifest": manifest})
        assert not preview.is_error, text(preview)
        assert "dry-run diff" in text(preview) and "+  mode: canary" in text(preview)
        assert "confirm=true" in text(preview)
        absent = kubectl("get", "configmap", "mcp-settings", "-n", "shop", check=False)
        assert absent.returncode != 0 and "NotFound" in absent.stderr  # the dry run changed nothing
        applied = await client.call_tool("apply_manifest", {"manifest": manifest, "confirm": True})
        assert not applied.is_error and "applied: ConfigMap mcp-settings" in text(applied)
        assert "canary" in kubectl("get", "configmap", "mcp-settings", "-n", "shop", "-o", "yaml").stdout

        exec_refused = await client.call_tool("exec_command", {"pod": cart_pod, "namespace": "shop",
                                                               "command": ["cat", "/etc/hostname"]})
        assert exec_refused.is_error
        assert "403" in text(exec_refused) and '"no-exec"' in text(exec_refused)

        delete = {"resource": "deployments", "name": "web", "namespace": "shop"}
        held = await client.call_tool("delete_resource", delete)
        assert not held.is_error, text(held)
        review = await sync_to_async(Review.objects.get)(state="pending")
        url = f"{airlock_mcp.url}/approvals/reviews/{review.pk}/"
        assert f"PENDING REVIEW {review.pk}" in text(held) and url in text(held)
        assert "wait_for_review" in text(held)
        # Answered at once although the rule holds open ("still pending" would be the hold's timeout).
        assert f"review {review.pk} is waiting for a reviewer" in text(held)
        assert review.origin == "mcp: delete_resource" and review.rule_name == "review-deletes"
        kubectl("get", "deployment", "web", "-n", "shop")  # nothing was done yet

        await sync_to_async(reviewer)("sam")
        sign_in(browser, airlock_mcp.url, "sam")
        # The queue and the review page re-render over their WebSocket: read and act on steady nodes.
        assert "via mcp: delete_resource" in steady(browser, lambda d: d.find_element(By.ID, f"review-{review.pk}").text)
        browser.get(url)
        WebDriverWait(browser, 30).until(EC.presence_of_element_located((By.ID, "review-origin")))
        WebDriverWait(browser, 30).until(EC.presence_of_element_located((By.ID, "preview-summary")))
        assert steady(browser, lambda d: d.find_element(By.ID, "preview-summary").text) == "would delete deployments/web"
        steady(browser, lambda d: d.find_element(By.ID, "id_reason").send_keys("agent asked nicely"))
        steady(browser, lambda d: d.find_element(By.ID, "approve").click())
        WebDriverWait(browser, 30).until(EC.text_to_be_present_in_element((By.ID, "review-state"), "APPROVED"))

        waited = await client.call_tool("wait_for_review", {"review_id": review.pk, "timeout_seconds": 10})
        assert not waited.is_error and "approved" in text(waited)
        done = await client.call_tool("delete_resource", delete)
        assert not done.is_error and "deleted deployments.apps web" in text(done), text(done)
    gone = kubectl("get", "deployment", "web", "-n", "shop", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr

    airlock_mcp.stop()  # the recorder writes what it queued
    await sync_to_async(check_the_record)(review.pk)


def check_the_record(review_id: int):
    from audit.chain import verify_chain
    from audit.models import AuditEvent

    # the Kubernetes API requests (the endpoint's own protocol requests, /mcp/..., are events too)
    requests = AuditEvent.objects.filter(stage="ResponseComplete", mcp_tool="").exclude(request_uri__startswith="/mcp/")
    assert requests.exists() and all(e.parent_id for e in requests)  # no request without its tool call
    for event in requests:
        parent = AuditEvent.objects.get(audit_id=event.parent_id, stage="ResponseComplete")
        assert parent.mcp_tool and parent.session_id == event.session_id
    exec_call = AuditEvent.objects.filter(mcp_tool="exec_command").get()
    exec_request = requests.get(parent_id=str(exec_call.audit_id))
    assert (exec_request.object_subresource, exec_request.decision_effect, exec_request.response_code) == (
        "exec", "deny", 403)
    assert exec_call.response_code == 403 and json.loads(exec_call.request_body)["command"] == ["cat", "/etc/hostname"]
    deletes = requests.filter(verb="delete", dry_run=False).order_by("seq")
    assert [e.response_code for e in deletes] == [403, 200] and deletes[1].review_id == str(review_id)
    delete_calls = AuditEvent.objects.filter(stage="ResponseComplete", mcp_tool="delete_resource").order_by("seq")
    assert [(e.response_code, e.review_id) for e in delete_calls] == [(202, str(review_id)), (200, None)]
    assert {e.parent_id for e in deletes} == {str(e.audit_id) for e in delete_calls}
    assert verify_chain().ok
    for event in AuditEvent.objects.all():
        no_secret(bytes(event.request_body).decode("utf-8", "replace") + bytes(event.response_body).decode(
            "utf-8", "replace"))

    auditor = User.objects.create_user("audrey", password="pw")
    auditor.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    page = DjangoClient()
    page.force_login(auditor)
    html = page.get(f"/audit/sessions/{exec_call.session.session_id}/").content.decode()
    assert "MCP tool exec_command" in html and "MCP tool delete_resource" in html
    call_row = html.index(f'id="event-{exec_call.seq}"')
    beneath = html.index('class="children"', call_row)
    assert html.index(f'id="event-{exec_request.seq}"', beneath) > beneath  # the request nested under its call


async def test_the_endpoint_is_an_oauth_protected_resource(airlock_mcp, idp, elsewhere_idp):
    async with http_client(airlock_mcp.ca_file) as http:
        refused = await http.post(airlock_mcp.mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert refused.status_code == 401
        challenge = refused.headers["www-authenticate"]
        metadata_url = re.search(r'resource_metadata="([^"]+)"', challenge).group(1)
        assert metadata_url == f"{airlock_mcp.url}/.well-known/oauth-protected-resource/mcp/kubesim/"
        metadata = (await http.get(metadata_url)).json()
        assert metadata["resource"] == airlock_mcp.mcp_url
        assert {u.rstrip("/") for u in metadata["authorization_servers"]} == {
            idp.issuer.rstrip("/"), elsewhere_idp.issuer.rstrip("/")}
        elsewhere = elsewhere_idp.get_token(OTHER_AUDIENCE_AGENT["client_id"], OTHER_AUDIENCE_AGENT["client_secret"])
        wrong_audience = await http.post(airlock_mcp.mcp_url, headers={"Authorization": f"Bearer {elsewhere}"},
                                         json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert wrong_audience.status_code == 401 and "audience" in wrong_audience.json()["error_description"]


async def test_an_allowed_exec_runs_and_a_session_groups_the_calls_with_their_requests(airlock_mcp, idp, kubectl):
    from tests.e2e_mcp.conftest import OPERATOR

    token = idp.get_token(OPERATOR["client_id"], OPERATOR["client_secret"])
    pods = kubectl("get", "pods", "-n", "shop", "-o", "name").stdout.split()
    cart_pod = next(p.split("/", 1)[1] for p in pods if p.startswith("pod/cart-"))
    async with mcp_client(airlock_mcp, token, mode="legacy") as client:  # the handshake era: an Mcp-Session-Id
        ran = await client.call_tool("exec_command", {"pod": cart_pod, "namespace": "shop",
                                                      "command": ["sh", "-c", "echo hello-from-mcp; exit 3"]})
        assert not ran.is_error, text(ran)
        assert text(ran).startswith("exit code: 3") and "hello-from-mcp" in text(ran)
        described = await client.call_tool("describe_resource", {"resource": "deploy", "name": "cart",
                                                                  "namespace": "shop"})
        assert "Deployment shop/cart" in text(described) and "state: ready" in text(described)
        policy = await client.call_tool("explain_policy", {})
        assert "operators-all (allowed)" in text(policy) and "no-exec" not in text(policy)
        assert text(await client.call_tool("can_i", {"verb": "delete", "resource": "deploy",
                                                     "namespace": "shop"})).startswith("yes")
        lease = await client.call_tool("request_lease", {"duration": "30m", "reason": "rotate the cart pods"})
        assert not lease.is_error and "requested" in text(lease), text(lease)
        mine = await client.call_tool("review_status", {"review_id": 1})
        assert mine.is_error and "you have no review 1" in text(mine)
    airlock_mcp.stop()
    await sync_to_async(check_one_session)()


def check_one_session():
    from audit.models import AuditEvent

    events = list(AuditEvent.objects.filter(stage="ResponseComplete"))
    assert {e.mcp_tool for e in events} >= {"exec_command", "describe_resource"}
    assert len({e.kubectl_session for e in events}) == 1 and events[0].kubectl_session.startswith("mcp-")
    assert len({e.session_id for e in events}) == 1
    from approvals.models import Lease

    lease = Lease.objects.get()
    assert (lease.subject, lease.duration_seconds, lease.state) == ("mcp-operator", 1800, "requested")
    exec_request = next(e for e in events if e.object_subresource == "exec")
    assert exec_request.recording.exit_code == 3 and "hello-from-mcp" in exec_request.recording.asciicast


async def test_wait_for_review_reports_progress_until_a_reviewer_denies(airlock_mcp, idp, kubectl):
    import asyncio

    from approvals import reviews
    from approvals.models import Review

    token = idp.get_token(AGENT["client_id"], AGENT["client_secret"])
    progress = []

    async def on_progress(done, total, message):
        progress.append((done, total, message))

    async with mcp_client(airlock_mcp, token, mode="legacy") as client:
        held = await client.call_tool("delete_resource", {"resource": "configmaps", "name": "web-config",
                                                          "namespace": "shop"})
        review = await sync_to_async(Review.objects.get)(state="pending")
        assert f"PENDING REVIEW {review.pk}" in text(held)
        waiting = asyncio.ensure_future(client.call_tool(
            "wait_for_review", {"review_id": review.pk, "timeout_seconds": 60}, progress_callback=on_progress))
        while not progress:
            await asyncio.sleep(0.1)
            assert not waiting.done(), text(waiting.result())
        decider = await sync_to_async(reviewer)("sam")
        await sync_to_async(reviews.decide)(review.pk, decider, approve=False, reason="not during the freeze")
        result = await asyncio.wait_for(waiting, 30)
        assert not result.is_error and "denied (reason: not during the freeze)" in text(result)
        assert "waiting for a reviewer to decide review" in progress[0][2] and progress[0][1] == 60
        again = await client.call_tool("delete_resource", {"resource": "configmaps", "name": "web-config",
                                                           "namespace": "shop"})
        assert "do not repeat it" in text(result)
        assert not again.is_error and f"PENDING REVIEW {review.pk + 1}" in text(again)  # a denial is final: a new review
    kubectl("get", "configmap", "web-config", "-n", "shop")
