"""Issue 7, done-when: a headless Chromium opens the session list and plays an exec recording.

The recording is made by real kubectl through the real gateway; an auditor signs in with a
Django account, filters the session list, opens the agent's session and starts the vendored
asciinema-player, whose terminal then shows what the command printed.
"""

import time

import pytest
from django.contrib.auth.models import Permission, User
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 30


def wait(driver, timeout=WAIT):
    return WebDriverWait(driver, timeout)


def recorded(timeout=15.0, **filters):
    """A completion event, once the recorder's background writer has committed it.

    (SQLite's shared in-memory test database answers "table is locked" while the writer's
    transaction is open: that read is retried.)
    """
    from django.db import OperationalError

    from audit.models import AuditEvent

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = AuditEvent.objects.filter(stage="ResponseComplete", **filters).first()
        except OperationalError:
            event = None
        if event is not None:
            return event
        time.sleep(0.05)
    raise AssertionError(f"no event {filters} within {timeout}s")


def auditor(username="ada", password="pw-ada-audit-7"):
    user = User.objects.create_user(username, password=password)
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent", content_type__app_label="audit"))
    return username, password


def session_rows(driver):
    return driver.find_elements(By.CSS_SELECTOR, "table.sessions tbody tr")


def test_auditor_filters_sessions_and_replays_an_exec(live_airlock, browser, kubectl):
    agent = live_airlock.kubeconfig()
    kubectl("apply", "-f", "-", kubeconfig=agent, input=(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: replayed, namespace: default}\n"
        "spec:\n  containers:\n  - {name: main, image: busybox}\n"))
    result = kubectl("exec", "-i", "replayed", "--", "sh", "-c", "cat; echo done-$((40+2))", kubeconfig=agent,
                     input="typed-into-the-pod\n")
    assert "done-42" in result.stdout
    # Another agent's session, refused by policy: the filters must leave it out.
    viewer = live_airlock.kubeconfig(token="viewer-token-2b9d", name="viewer")
    assert kubectl("get", "pods", kubeconfig=viewer, check=False).returncode != 0
    assert recorded(user_username="viewer-1").decision_effect == "deny"
    event = recorded(object_subresource="exec", object_name="replayed")
    assert event.recording.kind == "exec"

    username, password = auditor()
    browser.get(f"{live_airlock.url}/audit/")
    wait(browser).until(EC.presence_of_element_located((By.ID, "id_username"))).send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#password-login button[type=submit]").click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "filters")))
    assert browser.current_url.startswith(f"{live_airlock.url}/audit/")
    # Each kubectl run sends its own Kubectl-Session header: apply, exec and the viewer's get.
    assert len(session_rows(browser)) == 3 and "viewer-1" in browser.page_source

    browser.find_element(By.ID, "id_resource").send_keys("pods/exec")
    Select(browser.find_element(By.ID, "id_decision")).select_by_value("allow")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait(browser).until(EC.url_contains("resource=pods%2Fexec"))
    (row,) = session_rows(browser)
    assert "agent-1" in row.text and "kubesim" in row.text and "viewer-1" not in browser.page_source

    row.find_element(By.TAG_NAME, "a").click()
    entry = wait(browser).until(EC.presence_of_element_located((By.ID, f"event-{event.seq}")))
    assert "pods/exec/replayed" in entry.text and "agents-all" in entry.text
    assert "exit status 0" in entry.text
    player = entry.find_element(By.CSS_SELECTOR, ".player")
    wait(browser).until(lambda d: player.find_elements(By.CSS_SELECTOR, ".ap-player"))
    player.find_element(By.CSS_SELECTOR, ".ap-player").click()  # the player starts on a click
    terminal = player.find_element(By.CSS_SELECTOR, ".ap-term")
    wait(browser).until(lambda d: "done-42" in terminal.text)
    assert "typed-into-the-pod" in terminal.text
